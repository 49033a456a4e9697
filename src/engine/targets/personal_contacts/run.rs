//! The `personal_contacts` target's phases ([`PersonalContacts`]): plan = merge the source stage's batch into the
//! link's snapshot (`prepare`, with photos), resolve the mailboxes (joins get the whole list, leaves lose their
//! contacts per policy), apply the safety net to people leaving the scope and to mailboxes leaving the selection;
//! apply = fan out to the mailboxes within the run's budget, then store the snapshot; purge = every recorded
//! contact deleted. The lease, checkpoint, source stage and report are the shared lifecycle's (`engine::lifecycle`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use serde_json::json;
use tracing::Instrument as _;

use super::PersonalContacts;
use super::contact::fill_blank_properties;
use super::mailbox_sync::{Fanout, MailboxOutcome, SyncMode};
use super::mailboxes::{Selection, select_mailboxes};
use super::photos::PhotoCache;
use super::prepare::{SourceSide, absorb, desired_contacts};
use super::records::{SnapshotEntry, load_mailbox, load_snapshot, save_snapshot};
use super::spec::OnPersonGone;
use crate::engine::diff::field_changes;
use crate::engine::entry::{Field, anchor_prefix_for};
use crate::engine::plan::{Create, MailboxFanOut, Plan, Removal, RemovalAction, Update};
use crate::engine::ports::PortError;
use crate::engine::safety;
use crate::engine::source_stage::SourceBatch;
use crate::engine::targets::{Applied, Planned, Purged, RunContext, Target, TargetError};
use crate::report::{Failure, PlanCounts};
use crate::state::LinkCheckpoint;

/// Checkpoint mark set while a run writes; a run that finds it reconciles every mailbox in full.
const OPEN_MARK: &str = "phones_run_open";

/// Failure kinds that are reported but do not fail the run.
const REPORTED_ONLY: &[&str] = &[
    "mailbox_not_rest_enabled",
    "mailbox_unknown",
    "source_photo",
];

/// What planning hands to applying.
pub struct PhonesWork {
    source: SourceSide,
    selection: Selection,
    /// Mailboxes leaving the selection.
    left: Vec<String>,
    /// People whose removal the safety net holds.
    held: BTreeSet<String>,
    /// Mailboxes leaving the selection are held by the safety net.
    held_mailboxes: bool,
    photos: Option<Arc<PhotoCache>>,
    anchor_prefix: String,
    mailbox_mode: SyncMode,
}

#[async_trait]
impl Target for PersonalContacts {
    type Work = PhonesWork;

    fn kind(&self) -> &'static str {
        "personal_contacts"
    }

    async fn plan(
        &self,
        run: &RunContext<'_>,
        checkpoint: &LinkCheckpoint,
        batch: &mut SourceBatch,
    ) -> Result<Planned<PhonesWork>, TargetError> {
        let link = run.link;
        let unfinished = checkpoint.extra.get(OPEN_MARK).and_then(|v| v.as_bool()) == Some(true);
        let snapshot = load_snapshot(run.store.as_ref(), &link.name).await?;
        // A source that keeps its objects' photos (a mailbox folder's contacts) is asked for them instead of Graph.
        let photos = self.options.photos.then(|| {
            Arc::new(PhotoCache::new(self.source_graph.clone()).with_source(run.source.clone()))
        });
        let source = absorb(batch, &snapshot, photos.as_deref()).await;
        let selection = select_mailboxes(&self.target_graph, &self.options)
            .await
            .map_err(|error| {
                TargetError::Unreadable(PortError::Failed {
                    service: "graph".into(),
                    message: error.to_string(),
                })
            })?;
        let known: BTreeSet<String> = run
            .store
            .list_scopes(&link.name)
            .await?
            .into_iter()
            .collect();
        let joined: Vec<String> = selection
            .mailboxes
            .keys()
            .filter(|id| !known.contains(*id))
            .cloned()
            .collect();
        let left: Vec<String> = known
            .iter()
            .filter(|id| !selection.mailboxes.contains_key(*id))
            .cloned()
            .collect();

        // Safety: people leaving the scope, and mailboxes leaving the selection, each against the thresholds.
        let people_trip = safety::trip(
            link.safety,
            source.removed.len() as u64,
            snapshot.len() as u64,
            source.full && source.next.is_empty(),
        );
        let mailbox_trip = safety::trip(link.safety, left.len() as u64, known.len() as u64, false);
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut held_mailboxes = false;
        let mut reasons = Vec::new();
        if !run.options.allow_deletes {
            if let Some(trip) = people_trip {
                held = source.removed.clone();
                reasons.push(format!("people leaving the scope: {}", trip.describe()));
            }
            if self.options.remove_on_leave
                && let Some(trip) = mailbox_trip
            {
                held_mailboxes = true;
                reasons.push(format!(
                    "mailboxes leaving the selection: {}",
                    trip.describe()
                ));
            }
        }
        let quarantine = (!reasons.is_empty()).then(|| {
            safety::quarantine(
                &link.name,
                checkpoint.quarantine.as_ref(),
                run.started,
                (held.len() + if held_mailboxes { left.len() } else { 0 }) as u64,
                reasons.join("; "),
                held.iter().map(|anchor| {
                    let name = snapshot
                        .get(anchor)
                        .map(|s| s.entry.get(Field::DisplayName))
                        .unwrap_or("");
                    (anchor.as_str(), name)
                }),
            )
        });
        let mut failures: Vec<Failure> = source
            .photo_failures
            .iter()
            .map(|(anchor, reason)| Failure {
                anchor: Some(anchor.clone()),
                mailbox: None,
                kind: "source_photo".into(),
                reason: reason.clone(),
            })
            .collect();
        failures.extend(selection.unknown.iter().map(|name| Failure {
            anchor: None,
            mailbox: Some(name.clone()),
            kind: "mailbox_unknown".into(),
            reason: format!("no user {name:?} in the target tenant"),
        }));
        let planned = PlanCounts {
            creates: (source.changed.len() * selection.mailboxes.len()) as u64,
            deletes: (source.removed.len() - held.len()) as u64,
            ..PlanCounts::default()
        };
        // The per-person plan is built for a dry run only: a run that writes does not need it.
        let plan = if run.options.dry_run {
            person_plan(
                &source,
                &snapshot,
                &held,
                self.options.on_delete,
                MailboxFanOut {
                    selected: selection.mailboxes.len() as u64,
                    joining: joined,
                    leaving: left.clone(),
                    recorded: BTreeMap::new(),
                },
            )
        } else {
            Plan::default()
        };
        // A crash or failure may have left contacts without records: list every folder. Otherwise the periodic
        // repair reads each folder's delta, and an incremental run reads no mailbox at all.
        let mailbox_mode = if unfinished || run.options.full {
            SyncMode::Thorough
        } else if source.full {
            SyncMode::Reconcile
        } else {
            SyncMode::Incremental
        };
        Ok(Planned {
            plan,
            planned,
            source_changes: source.changed.len() as u64,
            quarantine,
            failures,
            work: PhonesWork {
                anchor_prefix: anchor_prefix_for(&batch.tenant_id),
                source,
                selection,
                left,
                held,
                held_mailboxes,
                photos,
                mailbox_mode,
            },
        })
    }

    fn mark_writing(&self, checkpoint: &mut LinkCheckpoint) -> bool {
        checkpoint.extra.insert(OPEN_MARK.into(), json!(true));
        true
    }

    async fn apply(&self, run: &RunContext<'_>, _plan: &Plan, work: PhonesWork) -> Applied {
        let link = run.link;
        let PhonesWork {
            source,
            selection,
            left,
            held,
            held_mailboxes,
            photos,
            anchor_prefix,
            mailbox_mode,
        } = work;
        let desired = desired_contacts(&source.next, &self.options.categories, self.options.photos);
        let fill_blank = fill_blank_properties(&self.options.fill_blank);
        // Incremental mailboxes look at the people who changed and the people who left.
        let touched: BTreeSet<String> = source.changed.union(&source.removed).cloned().collect();
        let fanout = Arc::new(Fanout {
            link: link.name.clone(),
            graph: self.target_graph.clone(),
            store: run.store.clone(),
            target: self.options.clone(),
            fill_blank,
            desired,
            changed: touched,
            held: held.clone(),
            anchor_prefix,
            photos,
        });
        // One task per mailbox, at most `max_concurrency` at once; the JoinSet aborts them if this run is dropped.
        let mut pending = selection.mailboxes.values();
        let mut running = tokio::task::JoinSet::new();
        let mut applied = PlanCounts::default();
        let mut failures = Vec::new();
        let mut not_started = 0u64;
        loop {
            while running.len() < link.max_concurrency.max(1)
                && let Some(mailbox) = pending.next()
            {
                let (fanout, mailbox, cancelled) =
                    (fanout.clone(), mailbox.clone(), run.cancelled.clone());
                // Task-locals do not cross `spawn`: each mailbox task works within the run's budget too.
                let deadline = crate::m365::budget::deadline();
                running.spawn(
                    async move {
                        let spent = deadline.is_some_and(|end| std::time::Instant::now() >= end);
                        if cancelled.load(Ordering::SeqCst) || spent {
                            return None;
                        }
                        let sync = fanout.sync(&mailbox, mailbox_mode);
                        Some(match deadline {
                            Some(deadline) => crate::m365::budget::within(deadline, sync).await,
                            None => sync.await,
                        })
                    }
                    .in_current_span(),
                );
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined {
                Ok(Some(outcome)) => add(&mut applied, &mut failures, outcome),
                // Not started: the lease was lost, or the run's budget spent.
                Ok(None) => not_started += 1,
                Err(error) => failures.push(Failure {
                    anchor: None,
                    mailbox: None,
                    kind: "internal_error".into(),
                    reason: format!("a mailbox task ended abnormally: {error}"),
                }),
            }
        }
        if !held_mailboxes {
            for mailbox in &left {
                let outcome = leave(run, &fanout, mailbox, self.options.remove_on_leave).await;
                add(&mut applied, &mut failures, outcome);
            }
        }
        let lost = run.cancelled.load(Ordering::SeqCst);
        if lost || not_started > 0 {
            // The snapshot and checkpoint stay where they were: the next run writes the mailboxes left out.
            failures.push(if lost {
                Failure {
                    anchor: None,
                    mailbox: None,
                    kind: "lease_lost".into(),
                    reason: "the link's lease was lost during the run; the remaining mailboxes were not written".into(),
                }
            } else {
                Failure {
                    anchor: None,
                    mailbox: None,
                    kind: "budget_spent".into(),
                    reason: format!(
                        "the run's time budget (service.run_budget) was spent with {not_started} mailbox(es) not written; the next run carries on"
                    ),
                }
            });
            return Applied {
                applied,
                failures,
                unfinished: true,
            };
        }
        // The snapshot moves on (people held by the quarantine stay in it, so they are seen leaving again).
        let put: Vec<_> = source
            .next
            .iter()
            .filter(|(a, _)| source.changed.contains(*a))
            .collect();
        let removed: Vec<String> = source.removed.difference(&held).cloned().collect();
        if let Err(error) = save_snapshot(run.store.as_ref(), &link.name, &put, &removed).await {
            failures.push(Failure {
                anchor: None,
                mailbox: None,
                kind: "state_error".into(),
                reason: format!("saving the source snapshot failed: {error}"),
            });
        }
        Applied {
            applied,
            failures,
            unfinished: false,
        }
    }

    fn is_hard(&self, failure: &Failure) -> bool {
        !REPORTED_ONLY.contains(&failure.kind.as_str())
    }

    fn settle(&self, checkpoint: &mut LinkCheckpoint, clean: bool) {
        if clean {
            checkpoint.extra.remove(OPEN_MARK);
        }
    }

    async fn purge(&self, run: &RunContext<'_>, execute: bool) -> Result<Purged, String> {
        Ok(super::purge::purge(self, run, execute).await)
    }
}

/// The dry run's plan: one change per person (each applies to every selected mailbox).
fn person_plan(
    source: &SourceSide,
    snapshot: &BTreeMap<String, SnapshotEntry>,
    held: &BTreeSet<String>,
    on_delete: OnPersonGone,
    mailboxes: MailboxFanOut,
) -> Plan {
    let mut plan = Plan {
        mailboxes: Some(mailboxes),
        unchanged: (source.next.len() - source.changed.len()) as u64,
        ..Plan::default()
    };
    for anchor in &source.changed {
        let Some(next) = source.next.get(anchor) else {
            continue;
        };
        let name = next.entry.get(Field::DisplayName).to_owned();
        match snapshot.get(anchor) {
            None => plan.creates.push(Create {
                anchor: anchor.clone(),
                name,
                entry: next.entry.clone(),
            }),
            Some(before) => plan.updates.push(Update {
                anchor: anchor.clone(),
                target_id: String::new(),
                rename: None,
                changes: field_changes(&before.entry.fields, &next.entry),
                unhide: false,
                entry: next.entry.clone(),
                name,
            }),
        }
    }
    for anchor in &source.removed {
        let display_name = snapshot
            .get(anchor)
            .map(|s| s.entry.get(Field::DisplayName).to_owned())
            .unwrap_or_default();
        let removal = Removal {
            anchor: anchor.clone(),
            target_id: String::new(),
            display_name,
            action: RemovalAction::Delete,
            reason: "removed".into(),
        };
        if held.contains(anchor) {
            plan.held.push(removal);
        } else if on_delete == OnPersonGone::Keep {
            plan.forget.push(removal.anchor);
        } else {
            plan.removals.push(removal);
        }
    }
    plan
}

/// A mailbox left the selection: remove the contacts galbridge put there (policy `remove`) or just stop managing
/// them (`keep`); either way its records go.
async fn leave(
    run: &RunContext<'_>,
    fanout: &Fanout,
    mailbox: &str,
    remove: bool,
) -> MailboxOutcome {
    let mut outcome = MailboxOutcome::default();
    let state = match load_mailbox(run.store.as_ref(), &fanout.link, mailbox).await {
        Ok(state) => state,
        Err(error) => {
            outcome.failures.push(Failure {
                anchor: None,
                mailbox: Some(mailbox.to_owned()),
                kind: "state_error".into(),
                reason: error.to_string(),
            });
            return outcome;
        }
    };
    if remove && !state.contacts.is_empty() {
        match fanout.remove_all(mailbox, &state).await {
            Ok(removed) => outcome.applied.deletes += removed,
            Err(failure) => {
                outcome.failures.push(failure);
                return outcome;
            }
        }
    }
    if let Err(error) =
        super::records::forget_mailbox(run.store.as_ref(), &fanout.link, mailbox, &state).await
    {
        outcome.failures.push(Failure {
            anchor: None,
            mailbox: Some(mailbox.to_owned()),
            kind: "state_write".into(),
            reason: error.to_string(),
        });
    }
    outcome
}

fn add(applied: &mut PlanCounts, failures: &mut Vec<Failure>, outcome: MailboxOutcome) {
    applied.creates += outcome.applied.creates;
    applied.updates += outcome.applied.updates;
    applied.deletes += outcome.applied.deletes;
    applied.adoptions += outcome.applied.adoptions;
    applied.unchanged += outcome.applied.unchanged;
    failures.extend(outcome.failures);
    if outcome.skipped {
        failures.push(Failure {
            anchor: None,
            mailbox: outcome.mailbox,
            kind: "mailbox_not_rest_enabled".into(),
            reason:
                "the mailbox is not enabled for the REST API (MailboxNotEnabledForRESTAPI); skipped"
                    .into(),
        });
    }
}
