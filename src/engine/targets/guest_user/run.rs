//! The `guest_user` target's phases ([`GuestUsers`], the [`Target`] of `engine::targets`): plan = the managed
//! records, the target's guests on a full run (and its guests and mail contacts when anyone is to be invited),
//! the guest plan (`plan`) and the safety net; apply = `apply`; purge = every anchored guest of this link deleted.
//! The lease, checkpoint, source stage and report are the shared lifecycle's (`engine::lifecycle`).
//!
//! The records of a link that was a `mail_contact` link before are mail contacts, not guests: the first guest run
//! forgets them and makes the next run read in full (the contacts keep their anchors, so a migration or a conflict
//! finds them), unless it read in full itself.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::GuestUsers;
use super::plan::{check_creates, diff_guests};
use crate::engine::diff::{ManagedObject, SourceView};
use crate::engine::entry::anchor_prefix_for;
use crate::engine::plan::{Plan, Removal};
use crate::engine::records::{Recorder, load_managed};
use crate::engine::safety;
use crate::engine::source_stage::SourceBatch;
use crate::engine::targets::{Applied, Planned, Purged, RunContext, Target, TargetError};
use crate::report::Failure;
use crate::state::LinkCheckpoint;

/// The checkpoint's `extra` key saying which target kind the link's records belong to.
const KIND_KEY: &str = "target_kind";
const KIND: &str = "guest_user";

/// What planning hands to applying.
pub struct GuestWork {
    managed: BTreeMap<String, ManagedObject>,
}

#[async_trait]
impl Target for GuestUsers {
    type Work = GuestWork;

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn plan(
        &self,
        run: &RunContext<'_>,
        checkpoint: &LinkCheckpoint,
        batch: &mut SourceBatch,
    ) -> Result<Planned<GuestWork>, TargetError> {
        let link = run.link;
        let full = batch.full;
        let mut managed = load_managed(run.store.as_ref(), &link.name).await?;
        let foreign = checkpoint.extra.get(KIND_KEY).and_then(|v| v.as_str()) != Some(KIND);
        let mut source = SourceView {
            complete: full,
            desired: std::mem::take(&mut batch.desired),
            gone: std::mem::take(&mut batch.gone),
        };
        // A group (`include_groups`) cannot be a B2B user: guests carry people only. Groups read are left out of
        // the view (never created, and a guest is never removed for one), and the plan says so.
        let groups_left_out = source.desired.len();
        source.desired.retain(|anchor, _| !batch.is_group(anchor));
        let groups_left_out = groups_left_out - source.desired.len();
        source.gone.retain(|anchor, _| !batch.is_group(anchor));
        if foreign && !managed.is_empty() {
            tracing::info!(link = %link.name, records = managed.len(), full,
                "The link's records belong to another target kind: forgotten.");
            if !run.options.dry_run {
                let mut recorder = Recorder::new(run.store.as_ref(), &link.name);
                for anchor in managed.keys() {
                    recorder.forget(anchor).await;
                }
                recorder.flush().await;
                if let Some(error) = recorder.errors.into_iter().next() {
                    return Err(error.into());
                }
            }
            managed = BTreeMap::new();
            if !full {
                // An incremental read without the records cannot tell who is new: plan nothing, read in full next.
                self.needs_full.store(true, Ordering::SeqCst);
                source = SourceView::default();
            }
        }
        let attribute = self.options.anchor_attribute;
        let mut guests = if full {
            Some(
                self.port
                    .list_guests(attribute)
                    .await
                    .map_err(TargetError::Unreadable)?,
            )
        } else {
            None
        };
        let anchor_prefix = anchor_prefix_for(&batch.tenant_id);
        let mut plan = diff_guests(
            &source,
            &managed,
            guests.as_deref(),
            &anchor_prefix,
            &self.options,
        );
        plan.link = link.name.clone();
        if groups_left_out > 0 {
            plan.notes.push(format!(
                "{groups_left_out} group(s) left out: a guest_user target carries people only (groups need a mail_contact or personal_contacts link)"
            ));
        }
        let mut contact_removals: Vec<Removal> = Vec::new();
        if !plan.creates.is_empty() {
            // Who already holds the addresses about to be invited: read once per run that invites anyone.
            if guests.is_none() {
                guests = Some(
                    self.port
                        .list_guests(attribute)
                        .await
                        .map_err(TargetError::Unreadable)?,
                );
            }
            let contacts = self
                .port
                .list_mail_contacts(attribute)
                .await
                .map_err(TargetError::Unreadable)?;
            contact_removals = check_creates(
                &mut plan,
                &managed,
                guests.as_deref().unwrap_or_default(),
                &contacts,
                &self.options,
            );
        }
        let managed_count = managed.values().filter(|m| !m.pending).count() as u64;
        let quarantine = safety::enforce(
            &mut plan,
            link.safety,
            managed_count,
            full.then_some(source.desired.len() as u64),
            run.options.allow_deletes,
            checkpoint.quarantine.as_ref(),
            run.started,
        );
        // The contacts a migration removes are listed with the removals (after the safety net: each is replaced by
        // a guest in the same run, nobody leaves the GAL for good).
        plan.removals.extend(contact_removals);
        Ok(Planned {
            planned: plan.counts(),
            plan,
            source_changes: batch.read,
            quarantine,
            failures: Vec::new(),
            work: GuestWork { managed },
        })
    }

    async fn apply(&self, run: &RunContext<'_>, plan: &Plan, work: GuestWork) -> Applied {
        let result = self
            .applier(run, &self.options, &work.managed)
            .apply(plan)
            .await;
        Applied {
            applied: result.applied,
            failures: result.failures,
            unfinished: result.unfinished,
        }
    }

    /// The kind marker is saved before the first write: records written by a run that dies before its end (create
    /// intents) must never be taken for another kind's.
    fn mark_writing(&self, checkpoint: &mut LinkCheckpoint, _work: &Self::Work) -> bool {
        let marked = checkpoint.extra.get(KIND_KEY).and_then(|v| v.as_str()) == Some(KIND);
        if !marked {
            checkpoint.extra.insert(KIND_KEY.into(), KIND.into());
        }
        !marked
    }

    fn is_hard(&self, failure: &Failure) -> bool {
        !failure.kind.starts_with("conflict")
    }

    fn settle(&self, checkpoint: &mut LinkCheckpoint, _clean: bool) {
        checkpoint.extra.insert(KIND_KEY.into(), KIND.into());
        if self.needs_full.load(Ordering::SeqCst) {
            checkpoint.delta_link = None;
        }
    }

    async fn purge(&self, run: &RunContext<'_>, execute: bool) -> Result<Purged, String> {
        super::purge::purge(self, run, execute).await
    }
}
