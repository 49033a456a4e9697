//! Uninstalling a `mail_contact` link (`galbridge purge --link NAME`): every contact carrying this link's anchors is
//! removed from the target (whatever its `on_delete` policy), then the link's state is forgotten. A dry run lists
//! what would go. Interrupted creates are claimed first, so a contact they left without its anchor goes too.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::MailContacts;
use crate::engine::diff::OnDelete;
use crate::engine::entry::{Field, anchor_prefix_for};
use crate::engine::plan::{Plan, Removal, RemovalAction};
use crate::engine::records::load_managed;
use crate::engine::targets::{Purged, RunContext};
use crate::report::PlanCounts;

/// See the module docs. `Err`: the purge could not start (source or target unreadable, state store).
pub(super) async fn purge(
    target: &MailContacts,
    run: &RunContext<'_>,
    execute: bool,
) -> Result<Purged, String> {
    let link = run.link;
    let tenant_id = run
        .source
        .tenant_id()
        .await
        .map_err(|e| format!("source tenant: {e}"))?;
    let prefix = anchor_prefix_for(&tenant_id);
    let mut managed = load_managed(run.store.as_ref(), &link.name)
        .await
        .map_err(|e| e.to_string())?;
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
    let mut plan = Plan::default();
    for contact in &contacts {
        let Some(anchor) = contact.anchor.as_deref() else {
            continue;
        };
        if !anchor.starts_with(&prefix) {
            continue;
        }
        plan.removals.push(Removal {
            anchor: anchor.to_owned(),
            target_id: contact.id.clone(),
            display_name: contact
                .fields
                .get(&Field::DisplayName)
                .cloned()
                .unwrap_or_else(|| contact.name.clone()),
            action: RemovalAction::Delete,
            reason: "purge".into(),
        });
    }
    let in_target: HashSet<&str> = plan.removals.iter().map(|r| r.anchor.as_str()).collect();
    plan.forget = managed
        .keys()
        .filter(|anchor| !in_target.contains(anchor.as_str()))
        .cloned()
        .collect();
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
