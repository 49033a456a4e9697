//! The `mail_contact` target's phases ([`MailContacts`], docs/architecture.md, "One sync run"): plan = resolve the
//! create intents an interrupted run left, read the target's anchored contacts on a full run, diff the source batch
//! against the managed records (and the target), apply the safety net; apply = the [`MailContactApplier`]; purge =
//! every anchored contact of this link removed. The lease, checkpoint, source stage and report are the shared
//! lifecycle's (`engine::lifecycle`).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use super::MailContacts;
use super::apply::{IntentResolution, MailContactApplier};
use crate::engine::diff::{DiffInput, ManagedObject, SourceView, diff_lean};
use crate::engine::entry::anchor_prefix_for;
use crate::engine::entry::{Entry, Field};
use crate::engine::plan::Plan;
use crate::engine::records::{load_managed, load_touched};
use crate::engine::safety;
use crate::engine::source_stage::SourceBatch;
use crate::engine::spec::MailContactOptions;
use crate::engine::targets::{Applied, Planned, Purged, RunContext, Target, TargetError};
use crate::report::Failure;
use crate::state::LinkCheckpoint;

/// What planning hands to applying: the managed records and what intent resolution found.
pub struct MailContactWork {
    managed: BTreeMap<String, ManagedObject>,
    /// Anchors whose earlier create intent found no contact (see `MailContactApplier::prior_intents`).
    prior_intents: BTreeSet<String>,
}

impl MailContacts {
    /// The applier over this target for one run (`options`: the link's, or a purge's that deletes everything).
    pub(super) fn applier<'a>(
        &'a self,
        run: &'a RunContext<'_>,
        options: &'a MailContactOptions,
        managed: &'a BTreeMap<String, ManagedObject>,
        prior_intents: &'a BTreeSet<String>,
    ) -> MailContactApplier<'a> {
        MailContactApplier {
            link: &run.link.name,
            target: self.port.as_ref(),
            store: run.store.as_ref(),
            options,
            managed,
            max_concurrency: run.link.max_concurrency,
            cancelled: run.cancelled.as_ref(),
            prior_intents,
        }
    }
}

#[async_trait]
impl Target for MailContacts {
    type Work = MailContactWork;

    fn kind(&self) -> &'static str {
        "mail_contact"
    }

    async fn plan(
        &self,
        run: &RunContext<'_>,
        checkpoint: &LinkCheckpoint,
        batch: &mut SourceBatch,
    ) -> Result<Planned<MailContactWork>, TargetError> {
        let link = run.link;
        let full = batch.full;
        // A full run compares against every managed object; an incremental one loads only those it touches (see
        // `load_touched`), so its memory follows the changes, not the directory.
        // Managed objects not loaded (an incremental run): counted for the safety net, named for the name book.
        let (mut managed, not_loaded, names) = if full {
            (load_managed(run.store.as_ref(), &link.name).await?, 0, None)
        } else {
            let touched: Vec<String> = batch
                .desired
                .keys()
                .chain(batch.gone.keys())
                .cloned()
                .collect();
            let loaded = load_touched(run.store.as_ref(), &link.name, &touched, |objects| {
                must_choose_a_name(&batch.desired, objects)
            })
            .await?;
            let loaded_count = loaded.objects.values().filter(|m| !m.pending).count() as u64;
            (
                loaded.objects,
                loaded.managed_count.saturating_sub(loaded_count),
                loaded.names,
            )
        };
        let intents = if !run.options.dry_run && managed.values().any(|m| m.pending) {
            let (none, no_intents) = (BTreeMap::new(), BTreeSet::new());
            let resolution = self
                .applier(run, &self.options, &none, &no_intents)
                .resolve_intents(&mut managed)
                .await;
            tracing::info!(link = %link.name, claimed = resolution.claimed, not_found = resolution.not_found.len(),
                held_back = resolution.held_back.len(), "Resolved the create intents of an interrupted run.");
            resolution
        } else {
            IntentResolution::default()
        };

        let mut source_view = SourceView {
            complete: full,
            desired: std::mem::take(&mut batch.desired),
            gone: std::mem::take(&mut batch.gone),
        };
        let target_objects = if full {
            Some(
                self.port
                    .list_contacts(self.options.anchor_attribute)
                    .await
                    .map_err(TargetError::Unreadable)?,
            )
        } else {
            None
        };
        let anchor_prefix = anchor_prefix_for(&batch.tenant_id);
        let mut plan = diff_lean(&DiffInput {
            source: &source_view,
            managed: &managed,
            target: target_objects.as_deref(),
            anchor_prefix: &anchor_prefix,
            policy: &self.options.policy,
            names: names.as_ref(),
        });
        drop(target_objects);
        let in_scope = full.then_some(source_view.desired.len() as u64);
        plan.take_entries(&mut source_view.desired);
        drop(source_view);
        plan.link = link.name.clone();
        // A person whose interrupted create could not be looked up waits for the next run (creating now could
        // duplicate a contact that exists).
        plan.creates
            .retain(|create| !intents.held_back.contains(&create.anchor));

        let managed_count = not_loaded + managed.values().filter(|m| !m.pending).count() as u64;
        let quarantine = safety::enforce(
            &mut plan,
            link.safety,
            managed_count,
            in_scope,
            run.options.allow_deletes,
            checkpoint.quarantine.as_ref(),
            run.started,
        );
        Ok(Planned {
            planned: plan.counts(),
            plan,
            source_changes: batch.read,
            quarantine,
            failures: intents.failures,
            work: MailContactWork {
                managed,
                prior_intents: intents.not_found,
            },
        })
    }

    async fn apply(&self, run: &RunContext<'_>, plan: &Plan, work: MailContactWork) -> Applied {
        let result = self
            .applier(run, &self.options, &work.managed, &work.prior_intents)
            .apply(plan)
            .await;
        Applied {
            applied: result.applied,
            failures: result.failures,
            // Changes the lease or the budget stopped are failures of their objects (`lease_lost`,
            // `budget_spent`), which keep the checkpoint where it was.
            unfinished: false,
        }
    }

    fn is_hard(&self, failure: &Failure) -> bool {
        !failure.kind.starts_with("conflict")
    }

    async fn purge(&self, run: &RunContext<'_>, execute: bool) -> Result<Purged, String> {
        super::purge::purge(self, run, execute).await
    }
}

/// Whether an incremental diff of `desired` against the touched `objects` may give someone a new name (a person
/// new to the link, a pending create, a changed display name): only then does it need every name in use.
fn must_choose_a_name(
    desired: &BTreeMap<String, Entry>,
    objects: &BTreeMap<String, ManagedObject>,
) -> bool {
    desired.iter().any(|(anchor, entry)| {
        match objects.get(anchor).filter(|object| !object.pending) {
            None => true,
            Some(object) => {
                object.name.is_empty()
                    || object.entry.get(Field::DisplayName) != entry.get(Field::DisplayName)
            }
        }
    })
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
