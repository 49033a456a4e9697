//! Uninstalling a guest link (`galbridge purge --link NAME`): every guest carrying this link's anchors is deleted
//! (restorable for 30 days), whatever `on_delete` says, then the link's state is forgotten. A dry run lists them.

use super::GuestUsers;
use crate::config::GuestOnDelete;
use crate::engine::diff::purge_plan;
use crate::engine::targets::{Purged, RunContext};
use crate::report::PlanCounts;

pub(super) async fn purge(
    target: &GuestUsers,
    run: &RunContext<'_>,
    execute: bool,
) -> Result<Purged, String> {
    let link = run.link;
    let (prefix, managed) = run.owned().await?;
    let guests = target
        .port
        .list_guests(target.options.anchor_attribute)
        .await
        .map_err(|e| format!("target: {e}"))?;
    let plan = purge_plan(&guests, &prefix, &managed);
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
    let mut options = target.options.clone();
    options.on_delete = GuestOnDelete::Delete;
    options.show_in_gal = false;
    let result = target.applier(run, &options, &managed).apply(&plan).await;
    let complete = result.failures.is_empty() && !result.unfinished;
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
