//! The `personal_contacts` target's phases ([`PersonalContacts`]): plan = merge the source stage's batch into the
//! link's snapshot (`prepare`, with photos), resolve the mailboxes (joins get the whole list, leaves lose their
//! contacts per policy), apply the safety net to people leaving the scope and to mailboxes leaving the selection;
//! apply = record the run's shards (`shards`), store the snapshot they read, then send them to the shard queue or
//! run them here, one after another; purge = every recorded contact deleted. A run that finds a queued shard set
//! still in flight writes nothing and is unfinished. The lease, checkpoint, source stage and report are the shared lifecycle's (`engine::lifecycle`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt as _;

use async_trait::async_trait;
use serde_json::json;

use super::PersonalContacts;
use super::contact::fill_blank_properties;
use super::mailbox_sync::{Fanout, MailboxOutcome, PARTIAL_LOAD_MAX_ANCHORS, SyncMode, add_counts};
use super::mailboxes::{Selection, select_mailboxes};
use super::photos::PhotoCache;
use super::prepare::{SourceSide, absorb, desired_contacts};
use super::records::{SnapshotEntry, load_mailbox, load_snapshot, load_snapshot_of, save_snapshot};
use super::shards::{
    Generation, NewGeneration, POISON_PEEK, ShardEnd, ShardMailbox, ShardMessage, ShardRun,
    ShardRunner, in_flight, is_mailbox_scope, load_anchor_set, load_generation, load_shard,
    load_shards, mark_dispatched, partition, poisoned_shards, record_generation, send_shards,
    unfinished_mailboxes,
};
use super::spec::OnPersonGone;
use crate::engine::diff::field_changes;
use crate::engine::entry::{Field, anchor_prefix_for};
use crate::engine::plan::{Create, MailboxFanOut, Plan, Removal, RemovalAction, Update};
use crate::engine::ports::PortError;
use crate::engine::safety;
use crate::engine::source_stage::SourceBatch;
use crate::engine::targets::{Applied, Planned, Purged, RunContext, Target, TargetError};
use crate::queue::PoisonMessage;
use crate::report::{Failure, PlanCounts};
use crate::state::LinkCheckpoint;

/// Checkpoint mark set while a run writes; a run that finds it reconciles every mailbox in full.
const OPEN_MARK: &str = "phones_run_open";

/// Failure kinds that are reported but do not fail the run.
const REPORTED_ONLY: &[&str] = &[
    "mailbox_not_rest_enabled",
    "mailbox_unknown",
    "source_photo",
    "shards_in_flight",
    "shard_unfinished",
];

/// Whether a failure leaves its mailbox (and the run) not done.
pub fn is_hard_failure(failure: &Failure) -> bool {
    !REPORTED_ONLY.contains(&failure.kind.as_str())
}

/// What planning hands to applying.
pub enum PhonesWork {
    /// The shards of an earlier run are still in flight on the queue: this run writes nothing.
    Waiting {
        generation: String,
        in_flight: Vec<u32>,
    },
    Write(Box<WriteWork>),
}

/// What a run that writes carries from planning to applying.
pub struct WriteWork {
    source: SourceSide,
    selection: Selection,
    /// Mailboxes joining the selection (no records yet).
    joined: BTreeSet<String>,
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
        if !run.options.dry_run
            && let Some(work) = self.waiting(run).await?
        {
            return Ok(Planned {
                plan: Plan::default(),
                planned: PlanCounts::default(),
                source_changes: 0,
                quarantine: checkpoint.quarantine.clone(),
                failures: Vec::new(),
                work,
            });
        }
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
            .filter(|scope| is_mailbox_scope(scope))
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
                    joining: joined.clone(),
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
            work: PhonesWork::Write(Box::new(WriteWork {
                anchor_prefix: anchor_prefix_for(&batch.tenant_id),
                source,
                selection,
                joined: joined.into_iter().collect(),
                left,
                held,
                held_mailboxes,
                photos,
                mailbox_mode,
            })),
        })
    }

    fn mark_writing(&self, checkpoint: &mut LinkCheckpoint, work: &PhonesWork) -> bool {
        if matches!(work, PhonesWork::Waiting { .. }) {
            return false;
        }
        checkpoint.extra.insert(OPEN_MARK.into(), json!(true));
        true
    }

    async fn apply(&self, run: &RunContext<'_>, _plan: &Plan, work: PhonesWork) -> Applied {
        match work {
            PhonesWork::Waiting {
                generation,
                in_flight,
            } => Applied {
                applied: PlanCounts::default(),
                failures: vec![Failure {
                    anchor: None,
                    mailbox: None,
                    kind: "shards_in_flight".into(),
                    reason: format!(
                        "{} shard(s) of the previous run ({generation}) are still on the queue; this run wrote nothing and the next one carries on",
                        in_flight.len()
                    ),
                }],
                unfinished: true,
            },
            PhonesWork::Write(work) => self.dispatch(run, *work).await,
        }
    }

    fn is_hard(&self, failure: &Failure) -> bool {
        is_hard_failure(failure)
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

impl PersonalContacts {
    /// The fan-out every mailbox of a shard is synced with.
    #[allow(clippy::too_many_arguments)]
    fn fanout(
        &self,
        store: &Arc<dyn crate::state::StateStore>,
        link: &str,
        desired: BTreeMap<String, super::mailbox_sync::Desired>,
        changed: BTreeSet<String>,
        held: BTreeSet<String>,
        anchor_prefix: String,
        photos: Option<Arc<PhotoCache>>,
    ) -> Fanout {
        Fanout {
            link: link.to_owned(),
            graph: self.target_graph.clone(),
            store: store.clone(),
            target: self.options.clone(),
            fill_blank: fill_blank_properties(&self.options.fill_blank),
            desired,
            desired_complete: true,
            changed,
            held,
            anchor_prefix,
            photos,
        }
    }

    /// Who runs shards in this process.
    fn shard_runner<'a>(
        &'a self,
        store: &'a Arc<dyn crate::state::StateStore>,
        holder: &'a str,
        max_concurrency: usize,
        cancelled: Option<&'a Arc<std::sync::atomic::AtomicBool>>,
    ) -> ShardRunner<'a> {
        ShardRunner {
            store,
            holder,
            lease_ttl: self.lease_ttl,
            max_concurrency,
            cancelled,
            is_hard: &is_hard_failure,
            permits: None,
        }
    }

    /// `Some` when the link's latest shard set went to the queue and still has shards in flight.
    async fn waiting(&self, run: &RunContext<'_>) -> Result<Option<PhonesWork>, TargetError> {
        let store = run.store.as_ref();
        let link = &run.link.name;
        let Some(generation) = load_generation(store, link).await? else {
            return Ok(None);
        };
        if generation.queue.is_none() || !generation.dispatched {
            return Ok(None);
        }
        let shards = load_shards(store, link).await?;
        let poison = self.poisoned().await;
        let mapped = poisoned_shards(link, &poison);
        let flying = in_flight(&generation, &shards, &mapped, chrono::Utc::now());
        Ok((!flying.is_empty()).then(|| PhonesWork::Waiting {
            generation: generation.id.clone(),
            in_flight: flying,
        }))
    }

    /// The shard queue's poison messages (none without a queue; a queue that cannot be read is logged and taken
    /// as none: its shards then wait until they are stale).
    pub async fn poisoned(&self) -> Vec<PoisonMessage> {
        let Some(queue) = &self.queue else {
            return Vec::new();
        };
        match queue.poisoned(POISON_PEEK).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(queue = %queue.name(), error = %error, "Reading the poison queue failed.");
                Vec::new()
            }
        }
    }

    /// A run that writes: mailboxes leaving are handled here; the others are split into shards, which are recorded
    /// (with the snapshot they read) and then sent to the queue or run here.
    async fn dispatch(&self, run: &RunContext<'_>, work: WriteWork) -> Applied {
        let link = run.link;
        let WriteWork {
            source,
            selection,
            joined,
            left,
            held,
            held_mailboxes,
            photos,
            anchor_prefix,
            mailbox_mode,
        } = work;
        let mut applied = PlanCounts::default();
        let mut failures = Vec::new();
        let state_failure = |what: &str, error: &dyn std::fmt::Display| Failure {
            anchor: None,
            mailbox: None,
            kind: "state_error".into(),
            reason: format!("{what}: {error}"),
        };

        // Mailboxes leaving the selection: here, before the shards (they are few and need no snapshot).
        if !held_mailboxes && !left.is_empty() {
            let fanout = self.fanout(
                run.store,
                &link.name,
                BTreeMap::new(),
                BTreeSet::new(),
                held.clone(),
                anchor_prefix.clone(),
                None,
            );
            for mailbox in &left {
                let outcome = leave(run, &fanout, mailbox, self.options.remove_on_leave).await;
                add(&mut applied, &mut failures, outcome);
            }
        }

        // The previous shard set's unfinished mailboxes list their folders this time.
        let store = run.store.as_ref();
        let previous = match load_generation(store, &link.name).await {
            Ok(previous) => previous,
            Err(error) => {
                failures.push(state_failure(
                    "reading the previous shard set failed",
                    &error,
                ));
                return Applied {
                    applied,
                    failures,
                    unfinished: false,
                };
            }
        };
        let unfinished = match load_shards(store, &link.name).await {
            Ok(shards) => {
                // What the previous shard set left undone is reported here (its shards report only to the host).
                failures.extend(previous_shard_failures(previous.as_ref(), &shards));
                unfinished_mailboxes(previous.as_ref(), &shards)
            }
            Err(error) => {
                failures.push(state_failure("reading the previous shards failed", &error));
                return Applied {
                    applied,
                    failures,
                    unfinished: false,
                };
            }
        };
        // Incremental mailboxes look at the people who changed and the people who left; with nobody to look at,
        // only the mailboxes that must list their folder (joining, unfinished) get a shard.
        let touched: BTreeSet<String> = source.changed.union(&source.removed).cloned().collect();
        let everyone = mailbox_mode != SyncMode::Incremental || !touched.is_empty();
        let mailboxes: Vec<ShardMailbox> = selection
            .mailboxes
            .values()
            .filter(|m| everyone || joined.contains(&m.id) || unfinished.contains(&m.id))
            .map(|m| ShardMailbox {
                id: m.id.clone(),
                upn: m.upn.clone(),
                thorough: unfinished.contains(&m.id),
            })
            .collect();

        let mut generation = NewGeneration {
            generation: Generation {
                id: uuid::Uuid::new_v4().to_string(),
                created_at: chrono::Utc::now(),
                mode: mailbox_mode,
                shards: 0,
                changed_records: 0,
                held_records: 0,
                anchor_prefix: anchor_prefix.clone(),
                queue: self.queue.as_ref().map(|queue| queue.name().to_owned()),
                dispatched: false,
            },
            shards: partition(&mailboxes, self.options.mailboxes_per_shard),
            changed: touched,
            held,
        };
        if !mailboxes.is_empty()
            && let Err(error) = record_generation(store, &link.name, &mut generation).await
        {
            failures.push(state_failure("recording the run's shards failed", &error));
            return Applied {
                applied,
                failures,
                unfinished: false,
            };
        }
        // The snapshot moves on before the shards run: they read it. People held by the quarantine stay in it, so
        // they are seen leaving again. (Until the run settles, the checkpoint's open mark makes the next run list
        // every folder, so a run that ends here early loses nothing.)
        let put: Vec<_> = source
            .next
            .iter()
            .filter(|(a, _)| source.changed.contains(*a))
            .collect();
        let removed: Vec<String> = source
            .removed
            .difference(&generation.held)
            .cloned()
            .collect();
        if let Err(error) = save_snapshot(store, &link.name, &put, &removed).await {
            failures.push(state_failure("saving the source snapshot failed", &error));
            return Applied {
                applied,
                failures,
                unfinished: false,
            };
        }
        if mailboxes.is_empty() {
            return Applied {
                applied,
                failures,
                unfinished: false,
            };
        }
        let NewGeneration {
            mut generation,
            changed,
            held,
            ..
        } = generation;

        if let Some(queue) = &self.queue {
            if let Err(error) = send_shards(queue.as_ref(), &link.name, &generation).await {
                failures.push(Failure {
                    anchor: None,
                    mailbox: None,
                    kind: "queue_error".into(),
                    reason: format!(
                        "sending the run's shards to queue {} failed: {error}",
                        queue.name()
                    ),
                });
                return Applied {
                    applied,
                    failures,
                    unfinished: false,
                };
            }
            if let Err(error) = mark_dispatched(store, &link.name, &mut generation).await {
                failures.push(state_failure("recording the shards as sent failed", &error));
            }
            tracing::info!(link = %link.name, generation = %generation.id, shards = generation.shards, queue = %queue.name(), "Shards sent.");
            return Applied {
                applied,
                failures,
                unfinished: false,
            };
        }

        // No queue: this process runs the shards, each as the queue would (last try: a shard that does not complete
        // is failed, and the next run lists its mailboxes' folders).
        let desired = desired_contacts(&source.next, &self.options.categories, self.options.photos);
        drop(source);
        let fanout = Arc::new(self.fanout(
            run.store,
            &link.name,
            desired,
            changed,
            held,
            anchor_prefix,
            photos,
        ));
        let holder = format!("{}:{}", self.holder, generation.id);
        // Shards run side by side, enough of them to keep `max_concurrency` mailboxes in flight across their
        // boundaries (one shard's last mailboxes overlap the next one's first); the permits bound the total.
        let mut runner = self.shard_runner(
            run.store,
            &holder,
            link.max_concurrency,
            Some(run.cancelled),
        );
        runner.permits = Some(Arc::new(tokio::sync::Semaphore::new(
            link.max_concurrency.max(1),
        )));
        let side_by_side = link
            .max_concurrency
            .div_ceil(self.options.mailboxes_per_shard)
            .max(1)
            + 1;
        let mut not_started = 0u64;
        {
            let mut results = std::pin::pin!(
                futures::stream::iter(0..generation.shards)
                    .map(|index| {
                        let (runner, fanout, generation) = (&runner, &fanout, &generation);
                        async move { (index, runner.run(fanout, generation, index, true).await) }
                    })
                    .buffer_unordered(side_by_side)
            );
            while let Some((index, result)) = results.next().await {
                match result {
                    Ok(shard) => {
                        add_counts(&mut applied, &shard.applied);
                        failures.extend(shard.failures);
                        not_started += shard.not_started;
                        if shard.end == ShardEnd::Busy {
                            failures.push(Failure {
                            anchor: None,
                            mailbox: None,
                            kind: "shard_busy".into(),
                            reason: format!("shard {index} is being run by another process; the next run carries on"),
                        });
                        }
                    }
                    Err(error) => {
                        failures.push(state_failure(&format!("shard {index}"), &error));
                    }
                }
            }
        }
        if let Err(error) = mark_dispatched(store, &link.name, &mut generation).await {
            failures.push(state_failure("recording the shards as run failed", &error));
        }
        let lost = run.cancelled.load(Ordering::SeqCst);
        if lost || not_started > 0 {
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
        Applied {
            applied,
            failures,
            unfinished: false,
        }
    }

    /// One delivery of a queued shard (`PhonesShard`): the generation, the snapshot and the anchor sets from the
    /// state store, then the shard as [`ShardRunner`] runs it. `last_try`: the host moves the message to the poison
    /// queue if this try fails.
    pub async fn run_queued_shard(
        &self,
        store: &Arc<dyn crate::state::StateStore>,
        source: Arc<dyn crate::engine::ports::SourceDirectory>,
        link: &crate::engine::spec::LinkSpec,
        message: &ShardMessage,
        last_try: bool,
    ) -> Result<ShardRun, crate::state::StateError> {
        let name = &link.name;
        let generation = match load_generation(store.as_ref(), name).await? {
            Some(generation) if generation.id == message.generation => generation,
            _ => {
                return Ok(ShardRun {
                    end: ShardEnd::Superseded,
                    applied: PlanCounts::default(),
                    failures: Vec::new(),
                    mailboxes: 0,
                    mailboxes_done: 0,
                    not_started: 0,
                });
            }
        };
        let changed =
            load_anchor_set(store.as_ref(), name, "changed", generation.changed_records).await?;
        let held = load_anchor_set(store.as_ref(), name, "held", generation.held_records).await?;
        // A first try of an incremental shard writes the changed people only: it loads just their snapshot entries,
        // so an invocation's memory follows the changes, not the directory (docs/architecture.md, "Personal
        // contacts"). Anything that compares whole folders loads everyone.
        let partial = changed.len() <= PARTIAL_LOAD_MAX_ANCHORS
            && load_shard(store.as_ref(), name, message.shard)
                .await?
                .is_some_and(|shard| {
                    shard.generation == generation.id && !shard.needs_every_person(&generation)
                });
        let mut snapshot = if partial {
            let wanted: Vec<String> = changed.iter().cloned().collect();
            load_snapshot_of(store.as_ref(), name, &wanted).await?
        } else {
            load_snapshot(store.as_ref(), name).await?
        };
        // People the safety net holds stay in the snapshot (so they are seen leaving again) but are not desired.
        snapshot.retain(|anchor, _| !held.contains(anchor));
        let desired = desired_contacts(&snapshot, &self.options.categories, self.options.photos);
        drop(snapshot);
        let photos = self
            .options
            .photos
            .then(|| Arc::new(PhotoCache::new(self.source_graph.clone()).with_source(source)));
        let mut fanout = self.fanout(
            store,
            name,
            desired,
            changed,
            held,
            generation.anchor_prefix.clone(),
            photos,
        );
        fanout.desired_complete = !partial;
        let fanout = Arc::new(fanout);
        let holder = format!("{}:{}", self.holder, uuid::Uuid::new_v4());
        self.shard_runner(store, &holder, link.max_concurrency, None)
            .run(&fanout, &generation, message.shard, last_try)
            .await
    }
}

/// One reported failure per shard of the previous set that ended with mailboxes not done (failed, poisoned or
/// stale): this run reconciles those mailboxes in full.
fn previous_shard_failures(
    previous: Option<&Generation>,
    shards: &BTreeMap<u32, super::shards::ShardRecord>,
) -> Vec<Failure> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    shards
        .iter()
        .filter(|(_, shard)| shard.generation == previous.id)
        .filter(|(_, shard)| shard.state != super::shards::ShardState::Done)
        .filter_map(|(index, shard)| {
            let left = shard.mailboxes.len().saturating_sub(shard.done.len());
            (left > 0).then(|| Failure {
                anchor: None,
                mailbox: None,
                kind: "shard_unfinished".into(),
                reason: format!(
                    "shard {index} of the previous run ({}) ended with {left} mailbox(es) not done{}; this run lists their folders",
                    previous.id,
                    shard
                        .last_error
                        .as_deref()
                        .map(|error| format!(" ({error})"))
                        .unwrap_or_default()
                ),
            })
        })
        .collect()
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
    add_counts(applied, &outcome.applied);
    failures.extend(outcome.into_failures());
}
