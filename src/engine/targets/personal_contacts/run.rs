//! One run of a `personal_contacts` link ([`PhonesRunner`]): take the lease, read the source into the snapshot
//! (`prepare`), resolve the mailboxes (joins get the whole list, leaves lose their contacts per policy), apply the
//! safety net to people leaving the scope and to mailboxes leaving the selection, fan out to the mailboxes with a
//! global budget, then store the snapshot, the checkpoint (delta link only when everything applied) and the report.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use serde_json::json;
use tracing::Instrument as _;

use super::contact::fill_blank_properties;
use super::mailbox_sync::{Fanout, MailboxOutcome, SyncMode};
use super::mailboxes::select_mailboxes;
use super::photos::PhotoCache;
use super::prepare::{desired_contacts, read_source};
use super::records::{load_mailbox, load_snapshot, save_snapshot};
use super::spec::PhonesSpec;
use crate::engine::entry::anchor_prefix_for;
use crate::engine::lifecycle::{Ending, RunBody, RunError, RunScope, run_leased};
use crate::engine::ports::{RequestCounters, SourceDirectory};
use crate::engine::safety::SafetyLimits;
use crate::m365::GraphClient;
use crate::report::{
    Failure, PlanCounts, QuarantineInfo, RunMode, RunOptions, RunOutcome, RunReport,
};
use crate::state::{StateError, StateStore};

/// Checkpoint mark set while a run writes; a run that finds it reconciles every mailbox in full.
const OPEN_MARK: &str = "phones_run_open";

/// Failure kinds that are reported but do not fail the run.
const REPORTED_ONLY: &[&str] = &["mailbox_not_rest_enabled", "mailbox_unknown"];

/// What a phones run needs.
#[derive(Clone)]
pub struct PhonesRunner {
    pub store: Arc<dyn StateStore>,
    pub source: Arc<dyn SourceDirectory>,
    /// The source tenant's Graph (photos).
    pub source_graph: GraphClient,
    /// The target tenant's Graph (mailboxes, folders, contacts).
    pub target_graph: GraphClient,
    pub counters: Option<Arc<dyn RequestCounters>>,
    pub holder: String,
    pub lease_ttl: chrono::Duration,
}

impl PhonesRunner {
    /// What the run lifecycle needs of this runner for `link`.
    pub(crate) fn scope<'a>(&'a self, link: &'a str) -> RunScope<'a> {
        RunScope {
            store: &self.store,
            link,
            holder: &self.holder,
            lease_ttl: self.lease_ttl,
            counters: self.counters.as_ref(),
        }
    }

    /// Runs the link once. A concurrent run of the same link is refused with [`RunError::LeaseHeld`].
    pub async fn run(
        &self,
        link: &PhonesSpec,
        options: &RunOptions,
    ) -> Result<RunReport, RunError> {
        let ending = Ending::Sync {
            dry_run: options.dry_run,
        };
        run_leased(self.scope(&link.name), ending, |cancelled| async move {
            match self.steps(link, options, &cancelled).await {
                Ok(body) => body,
                Err(error) => {
                    tracing::warn!(link = %link.name, error = %error, "Phones run failed.");
                    RunBody::failure(RunMode::Incremental, "state_error", error.to_string())
                }
            }
        })
        .await
    }

    async fn steps(
        &self,
        link: &PhonesSpec,
        options: &RunOptions,
        cancelled: &Arc<AtomicBool>,
    ) -> Result<RunBody, StateError> {
        let now = Utc::now();
        let mut checkpoint = self.store.load_checkpoint(&link.name).await?;
        let unfinished = checkpoint.extra.get(OPEN_MARK).and_then(|v| v.as_bool()) == Some(true);
        let snapshot = load_snapshot(self.store.as_ref(), &link.name).await?;
        let tenant_id = match self.source.tenant_id().await {
            Ok(id) => id,
            Err(error) => {
                return Ok(RunBody::failure(
                    RunMode::Incremental,
                    "source_unreadable",
                    error.to_string(),
                ));
            }
        };
        let photos = link.target.photos.then(|| {
            Arc::new(PhotoCache::new(self.source_graph.clone()).with_source(self.source.clone()))
        });
        let source = match read_source(
            link,
            self.source.as_ref(),
            &checkpoint,
            &snapshot,
            options.full,
            photos.as_deref(),
        )
        .await
        {
            Ok(source) => source,
            Err(error) => {
                return Ok(RunBody::failure(
                    RunMode::Incremental,
                    "source_unreadable",
                    error.to_string(),
                ));
            }
        };
        let selection = match select_mailboxes(&self.target_graph, &link.target).await {
            Ok(selection) => selection,
            Err(error) => {
                return Ok(RunBody::failure(
                    RunMode::Incremental,
                    "target_unreadable",
                    error.to_string(),
                ));
            }
        };
        let known: BTreeSet<String> = self
            .store
            .list_scopes(&link.name)
            .await?
            .into_iter()
            .collect();
        let joined: Vec<&String> = selection
            .mailboxes
            .keys()
            .filter(|id| !known.contains(*id))
            .collect();
        let left: Vec<String> = known
            .iter()
            .filter(|id| !selection.mailboxes.contains_key(*id))
            .cloned()
            .collect();

        // Safety: people leaving the scope, and mailboxes leaving the selection, each against the thresholds.
        let people_trip = trips(
            link.safety,
            source.removed.len(),
            snapshot.len(),
            source.full && source.next.is_empty(),
        );
        let mailbox_trip = trips(link.safety, left.len(), known.len(), false);
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut held_mailboxes = false;
        let mut quarantine = None;
        let mut reasons = Vec::new();
        if !options.allow_deletes {
            if let Some(reason) = people_trip {
                held = source.removed.clone();
                reasons.push(format!("people leaving the scope: {reason}"));
            }
            if link.target.remove_on_leave
                && let Some(reason) = mailbox_trip
            {
                held_mailboxes = true;
                reasons.push(format!("mailboxes leaving the selection: {reason}"));
            }
        }
        if !reasons.is_empty() {
            quarantine = Some(QuarantineInfo {
                since: checkpoint
                    .quarantine
                    .as_ref()
                    .map(|q| q.since)
                    .unwrap_or(now),
                held_deletes: (held.len() + if held_mailboxes { left.len() } else { 0 }) as u64,
                threshold: reasons.join("; "),
                release_hint: format!(
                    "review with `galbridge plan --link {link}`, then release once with `galbridge sync --link {link} --allow-deletes`",
                    link = link.name
                ),
                held: crate::report::HeldDelete::sample(held.iter().map(|a| (a.as_str(), ""))),
            });
        }
        let mode = if options.dry_run {
            RunMode::DryRun
        } else if source.full {
            RunMode::Full
        } else {
            RunMode::Incremental
        };
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
        if options.dry_run {
            return Ok(RunBody {
                mode,
                outcome: RunOutcome::Planned,
                source_read: source.read,
                source_changes: source.changed.len() as u64,
                planned,
                applied: PlanCounts::default(),
                failures,
                quarantine,
                plan: Some(json!({
                    "link": link.name,
                    "target_kind": "personal_contacts",
                    "full": source.full,
                    "people": source.next.len(),
                    "people_changed": source.changed,
                    "people_removed": source.removed,
                    "held": held,
                    "mailboxes": selection.mailboxes.len(),
                    "mailboxes_joining": joined,
                    "mailboxes_leaving": left,
                })),
                warnings: source.batch.warnings(),
            });
        }

        // Everything from here writes: mark the run open until it succeeds.
        checkpoint.extra.insert(OPEN_MARK.into(), json!(true));
        self.store.save_checkpoint(&link.name, &checkpoint).await?;

        let desired = desired_contacts(&source.next, &link.target.categories, link.target.photos);
        let fill_blank = fill_blank_properties(&link.target.fill_blank);
        let anchor_prefix = anchor_prefix_for(&tenant_id);
        // Incremental mailboxes look at the people who changed and the people who left.
        let touched: BTreeSet<String> = source.changed.union(&source.removed).cloned().collect();
        let fanout = Arc::new(Fanout {
            link: link.name.clone(),
            graph: self.target_graph.clone(),
            store: self.store.clone(),
            target: link.target.clone(),
            fill_blank,
            desired,
            changed: touched,
            held: held.clone(),
            anchor_prefix,
            photos,
        });
        // A crash or failure may have left contacts without records: list every folder. Otherwise the periodic
        // repair reads each folder's delta, and an incremental run reads no mailbox at all.
        let mailbox_mode = if unfinished || options.full {
            SyncMode::Thorough
        } else if source.full {
            SyncMode::Reconcile
        } else {
            SyncMode::Incremental
        };
        // One task per mailbox, at most `max_concurrency` at once; the JoinSet aborts them if this run is dropped.
        let mut pending = selection.mailboxes.values();
        let mut running = tokio::task::JoinSet::new();
        let mut applied = PlanCounts::default();
        let mut not_started = 0u64;
        loop {
            while running.len() < link.max_concurrency.max(1)
                && let Some(mailbox) = pending.next()
            {
                let (fanout, mailbox, cancelled) =
                    (fanout.clone(), mailbox.clone(), cancelled.clone());
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
                let outcome = self
                    .leave(&fanout, mailbox, link.target.remove_on_leave)
                    .await;
                add(&mut applied, &mut failures, outcome);
            }
        }
        let lost = cancelled.load(Ordering::SeqCst);
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
            return Ok(RunBody {
                mode,
                outcome: RunOutcome::PartiallyFailed,
                source_read: source.read,
                source_changes: source.changed.len() as u64,
                planned,
                applied,
                failures,
                quarantine,
                plan: None,
                warnings: source.batch.warnings(),
            });
        }
        let hard = failures
            .iter()
            .any(|f| !REPORTED_ONLY.contains(&f.kind.as_str()) && f.kind != "source_photo");
        let outcome = if hard {
            RunOutcome::PartiallyFailed
        } else if quarantine.is_some() {
            RunOutcome::Quarantined
        } else {
            RunOutcome::Succeeded
        };

        // The snapshot moves on (people held by the quarantine stay in it, so they are seen leaving again).
        let put: Vec<_> = source
            .next
            .iter()
            .filter(|(a, _)| source.changed.contains(*a))
            .collect();
        let removed: Vec<String> = source.removed.difference(&held).cloned().collect();
        save_snapshot(self.store.as_ref(), &link.name, &put, &removed).await?;
        checkpoint.last_run_at = Some(Utc::now());
        checkpoint.quarantine = quarantine.clone();
        if outcome == RunOutcome::Succeeded {
            source.batch.commit(&mut checkpoint, now);
        }
        if !hard {
            checkpoint.extra.remove(OPEN_MARK);
        }
        self.store.save_checkpoint(&link.name, &checkpoint).await?;
        Ok(RunBody {
            mode,
            outcome,
            source_read: source.read,
            source_changes: source.changed.len() as u64,
            planned,
            applied,
            failures,
            quarantine,
            plan: None,
            warnings: source.batch.warnings(),
        })
    }

    /// A mailbox left the selection: remove the contacts galbridge put there (policy `remove`) or just stop managing
    /// them (`keep`); either way its records go.
    async fn leave(&self, fanout: &Fanout, mailbox: &str, remove: bool) -> MailboxOutcome {
        let mut outcome = MailboxOutcome::default();
        let state = match load_mailbox(self.store.as_ref(), &fanout.link, mailbox).await {
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
            super::records::forget_mailbox(self.store.as_ref(), &fanout.link, mailbox, &state).await
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

/// Whether `removals` out of `managed` trips the limits (a source that returns nobody always does).
fn trips(
    limits: SafetyLimits,
    removals: usize,
    managed: usize,
    empty_source: bool,
) -> Option<String> {
    let (removals, managed) = (removals as u64, managed as u64);
    if removals == 0 {
        return None;
    }
    if empty_source && managed > 0 {
        return Some(format!(
            "the source returned nobody in scope while {managed} are managed"
        ));
    }
    if removals > limits.max_deletes {
        return Some(format!("{removals} > max_deletes {}", limits.max_deletes));
    }
    if managed > 0 && removals * 100 > u64::from(limits.max_delete_percent) * managed {
        return Some(format!(
            "{removals} of {managed} > max_delete_percent {}%",
            limits.max_delete_percent
        ));
    }
    None
}
