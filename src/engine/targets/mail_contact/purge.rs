//! Uninstalling a `mail_contact` link (`galbridge purge --link NAME`): every contact carrying this link's anchors is
//! removed from the target (whatever its `on_delete` policy), then the link's state is forgotten. A dry run lists
//! what would go. Interrupted creates are claimed first, so a contact they left without its anchor goes too.

use std::collections::{BTreeMap, BTreeSet};

use super::MailContacts;
use crate::engine::diff::{OnDelete, purge_plan};
use crate::engine::targets::{Purged, RunContext};
use crate::report::PlanCounts;

/// See the module docs. `Err`: the purge could not start (source or target unreadable, state store).
pub(super) async fn purge(
    target: &MailContacts,
    run: &RunContext<'_>,
    execute: bool,
) -> Result<Purged, String> {
    let link = run.link;
    let (prefix, mut managed) = run.owned().await?;
    let mut options = target.options.clone();
    options.policy.on_delete = OnDelete::Delete;
    let (none, no_intents) = (BTreeMap::new(), BTreeSet::new());
    let mut intent_failures = Vec::new();
    if execute && managed.values().any(|m| m.pending) {
        intent_failures = target
            .applier(run, &options, &none, &no_intents)
            .resolve_intents(&mut managed)
            .await
            .failures;
    }
    let contacts = target
        .port
        .list_contacts(options.anchor_attribute)
        .await
        .map_err(|e| format!("target: {e}"))?;
    let plan = purge_plan(&contacts, &prefix, &managed);
    let planned = plan.counts();
    if !execute {
        return Ok(Purged {
            plan,
            planned,
            applied: PlanCounts::default(),
            failures: Vec::new(),
            complete: false,
        });
    }
    let mut result = target
        .applier(run, &options, &managed, &no_intents)
        .apply(&plan)
        .await;
    result.failures.extend(intent_failures);
    let complete = result.hard_failures() == 0;
    if complete {
        run.store
            .delete_link(&link.name)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Purged {
        plan,
        planned,
        applied: result.applied,
        failures: result.failures,
        complete,
    })
}
