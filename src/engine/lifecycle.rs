//! The lifecycle every run shares, whatever the link's target and whether it syncs or purges: take the link's
//! lease (renewed while the run lasts), count the requests it spends, run its steps, release the lease, then turn
//! what the steps determined ([`RunBody`]) into the run report, store the run record and log the summary.
//! A second run of the same link is refused with [`RunError::LeaseHeld`], naming the holder and until when.
//!
//! [`LinkRunner::sync`] is one sync run of any link: the lease, the checkpoint, the shared source stage, then the
//! link's [`Target`] plans and (unless a dry run) applies; the outcome decides whether the checkpoint moves.
//! [`LinkRunner::purge`] is the uninstall of any link.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::lease::HeldLease;
use super::plan::Plan;
use super::ports::{CounterSnapshot, PortError, RequestMeter, SourceDirectory};
use super::source_stage::{SourceRules, read_source};
use super::spec::LinkSpec;
use super::targets::{Planned, Purged, RunContext, Target, TargetError};
use crate::report::{
    Failure, PlanCounts, QuarantineInfo, RunMode, RunOptions, RunOutcome, RunReport,
};
use crate::state::{StateError, StateStore};

/// Why a run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("link {link:?} is already running (lease held by {holder} until {until})")]
    LeaseHeld {
        link: String,
        holder: String,
        until: DateTime<Utc>,
    },
    #[error("state store: {0}")]
    State(#[from] StateError),
}

/// The parts of a report the run itself determines.
pub(crate) struct RunBody {
    pub(crate) mode: RunMode,
    pub(crate) outcome: RunOutcome,
    pub(crate) source_read: u64,
    pub(crate) source_changes: u64,
    pub(crate) planned: PlanCounts,
    pub(crate) applied: PlanCounts,
    pub(crate) failures: Vec<Failure>,
    pub(crate) quarantine: Option<QuarantineInfo>,
    pub(crate) plan: Option<serde_json::Value>,
    /// Warnings every report of this link repeats (e.g. `hidden = "graph"`), appended to the summary.
    pub(crate) warnings: Vec<String>,
}

impl RunBody {
    /// A run that stopped before applying anything, with one failure of `kind`.
    pub(crate) fn failure(mode: RunMode, kind: &str, reason: String) -> RunBody {
        RunBody {
            mode,
            outcome: RunOutcome::Failed,
            source_read: 0,
            source_changes: 0,
            planned: PlanCounts::default(),
            applied: PlanCounts::default(),
            failures: vec![Failure {
                anchor: None,
                mailbox: None,
                kind: kind.into(),
                reason,
            }],
            quarantine: None,
            plan: None,
            warnings: Vec::new(),
        }
    }
}

/// When and how a run started, for its report.
pub(crate) struct RunStart {
    pub(crate) run_id: String,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) clock: Instant,
}

/// Turns a finished run into its report, stores the run record (`keep_record`: not for a dry run or a purge) and
/// logs the summary: the same ending for every kind of link.
pub(crate) async fn record_run(
    store: &dyn StateStore,
    link: &str,
    start: RunStart,
    spent: CounterSnapshot,
    body: RunBody,
    summary: String,
    keep_record: bool,
) -> RunReport {
    let mut summary = summary;
    for warning in &body.warnings {
        tracing::warn!(link = %link, "{warning}");
        summary.push_str(&format!("; warning: {warning}"));
    }
    let report = RunReport {
        link: link.to_owned(),
        run_id: start.run_id,
        mode: body.mode,
        outcome: body.outcome,
        started_at: start.started_at,
        duration_ms: start.clock.elapsed().as_millis() as u64,
        source_read: body.source_read,
        source_changes: body.source_changes,
        summary,
        planned: body.planned,
        applied: body.applied,
        failures: body.failures,
        throttled_retries: spent.throttled_retries,
        requests: spent.requests,
        quarantine: body.quarantine,
        plan: body.plan,
    };
    if keep_record && let Err(error) = store.put_run_record(&report).await {
        tracing::warn!(link = %link, error = %error, "Storing the run record failed.");
    }
    tracing::info!(link = %link, outcome = ?report.outcome, "{}", report.summary);
    report
}

/// What a run needs to take its link and account for itself.
pub(crate) struct RunScope<'a> {
    pub(crate) store: &'a Arc<dyn StateStore>,
    pub(crate) link: &'a str,
    /// The process's holder (`{host}:{pid}`); the run id (and `:purge`) are appended.
    pub(crate) holder: &'a str,
    pub(crate) lease_ttl: chrono::Duration,
    pub(crate) counters: Option<&'a Arc<dyn RequestMeter>>,
}

/// What the lifecycle does with a finished run.
pub(crate) enum Ending {
    /// A sync: the summary of [`summary`]; the run record is stored unless it was a dry run.
    Sync { dry_run: bool },
    /// A purge: [`purge_summary`], no run record (the link's state goes with it).
    Purge,
}

/// Runs `steps` holding the link's lease (see the module docs). `steps` gets the flag the lease renewal raises when
/// the lease is lost: it must stop starting changes then.
pub(crate) async fn run_leased<F, Fut>(
    scope: RunScope<'_>,
    ending: Ending,
    steps: F,
) -> Result<RunReport, RunError>
where
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = RunBody>,
{
    let snapshot = || {
        scope
            .counters
            .map(|counters| counters.snapshot())
            .unwrap_or_default()
    };
    let start = RunStart {
        run_id: uuid::Uuid::new_v4().to_string(),
        started_at: Utc::now(),
        clock: Instant::now(),
    };
    let before = snapshot();
    let holder = match ending {
        Ending::Sync { .. } => format!("{}:{}", scope.holder, start.run_id),
        Ending::Purge => format!("{}:{}:purge", scope.holder, start.run_id),
    };
    let HeldLease {
        lease,
        cancelled,
        renewal,
    } = match HeldLease::acquire(scope.store, scope.link, &holder, scope.lease_ttl).await {
        Ok(held) => held,
        Err(StateError::LeaseHeld {
            link,
            holder,
            until,
        }) => {
            return Err(RunError::LeaseHeld {
                link,
                holder,
                until,
            });
        }
        Err(error) => return Err(RunError::State(error)),
    };
    let body = steps(cancelled).await;
    renewal.finish().await;
    let held = lease.lock().await.clone();
    if let Err(error) = scope.store.release_lease(&held).await {
        tracing::warn!(link = %scope.link, error = %error, "Releasing the lease failed; it will expire.");
    }
    let spent = snapshot().since(&before);
    let (text, keep_record) = match ending {
        Ending::Sync { dry_run } => (summary(scope.link, &body), !dry_run),
        Ending::Purge => (purge_summary(scope.link, &body), false),
    };
    Ok(record_run(
        scope.store.as_ref(),
        scope.link,
        start,
        spent,
        body,
        text,
        keep_record,
    )
    .await)
}

/// Why a sync run that started could not complete (it becomes a `Failed` report).
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("reading the source failed: {0}")]
    Source(PortError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("state store: {0}")]
    State(#[from] StateError),
}

impl StepError {
    fn failure_kind(&self) -> &'static str {
        match self {
            StepError::Source(_) => "source_unreadable",
            StepError::Target(error) => error.failure_kind(),
            StepError::State(_) => "state_error",
        }
    }
}

/// Runs links over ports the caller brings: the source directory, the state store, the request counters. The
/// engine's service builds one per run; tests and tools can too.
#[derive(Clone)]
pub struct LinkRunner {
    pub store: Arc<dyn StateStore>,
    pub source: Arc<dyn SourceDirectory>,
    pub counters: Option<Arc<dyn RequestMeter>>,
    /// Who runs (`{host}:{pid}`); the run id is appended.
    pub holder: String,
    pub lease_ttl: chrono::Duration,
}

impl LinkRunner {
    fn scope<'a>(&'a self, link: &'a str) -> RunScope<'a> {
        RunScope {
            store: &self.store,
            link,
            holder: &self.holder,
            lease_ttl: self.lease_ttl,
            counters: self.counters.as_ref(),
        }
    }

    /// One sync run of `link` into `target` (docs/architecture.md, "One sync run"). A second concurrent run of the
    /// same link is refused with [`RunError::LeaseHeld`].
    pub async fn sync<T: Target>(
        &self,
        target: &T,
        link: &LinkSpec,
        options: &RunOptions,
    ) -> Result<RunReport, RunError> {
        let ending = Ending::Sync {
            dry_run: options.dry_run,
        };
        run_leased(self.scope(&link.name), ending, |cancelled| async move {
            let run = RunContext {
                link,
                options,
                store: &self.store,
                source: &self.source,
                cancelled: &cancelled,
                started: Utc::now(),
            };
            match sync_steps(target, &run).await {
                Ok(body) => body,
                Err(error) => {
                    tracing::warn!(link = %link.name, error = %error, "Run failed.");
                    let mode = if options.dry_run {
                        RunMode::DryRun
                    } else {
                        RunMode::Incremental
                    };
                    RunBody::failure(mode, error.failure_kind(), error.to_string())
                }
            }
        })
        .await
    }

    /// `galbridge purge --link NAME` for any link: lists (`execute = false`) or removes everything the link
    /// manages, holding the lease; no run record is kept (the link's state goes with it).
    pub async fn purge<T: Target>(
        &self,
        target: &T,
        link: &LinkSpec,
        execute: bool,
    ) -> Result<RunReport, RunError> {
        run_leased(
            self.scope(&link.name),
            Ending::Purge,
            |cancelled| async move {
                let options = RunOptions::default();
                let run = RunContext {
                    link,
                    options: &options,
                    store: &self.store,
                    source: &self.source,
                    cancelled: &cancelled,
                    started: Utc::now(),
                };
                purge_steps(target, &run, execute).await
            },
        )
        .await
    }
}

async fn sync_steps<T: Target>(target: &T, run: &RunContext<'_>) -> Result<RunBody, StepError> {
    let (link, options) = (run.link, run.options);
    let mut checkpoint = run.store.load_checkpoint(&link.name).await?;
    let mut batch = read_source(
        &SourceRules::of(link),
        run.source.as_ref(),
        &checkpoint,
        options.full,
        run.started,
    )
    .await
    .map_err(StepError::Source)?;
    let mode = if options.dry_run {
        RunMode::DryRun
    } else if batch.full {
        RunMode::Full
    } else {
        RunMode::Incremental
    };
    let warnings = batch.warnings();
    let source_read = batch.read;

    let Planned {
        mut plan,
        planned,
        source_changes,
        quarantine,
        mut failures,
        work,
    } = target.plan(run, &checkpoint, &mut batch).await?;
    plan.link = link.name.clone();
    plan.target_kind = target.kind().into();
    plan.full = batch.full;
    plan.from_checkpoint = batch.from_checkpoint.clone();
    plan.to_checkpoint = Some(batch.delta_link.clone());

    if options.dry_run {
        return Ok(RunBody {
            mode,
            outcome: RunOutcome::Planned,
            source_read,
            source_changes,
            planned,
            applied: PlanCounts::default(),
            failures,
            quarantine,
            plan: Some(plan.to_json()),
            warnings,
        });
    }

    if target.mark_writing(&mut checkpoint, &work) {
        run.store.save_checkpoint(&link.name, &checkpoint).await?;
    }
    let applied = target.apply(run, &plan, work).await;
    failures.extend(applied.failures);
    let lost = run.cancelled.load(std::sync::atomic::Ordering::SeqCst);
    let hard = failures.iter().any(|failure| target.is_hard(failure));
    let outcome = if hard || lost || applied.unfinished {
        RunOutcome::PartiallyFailed
    } else if quarantine.is_some() {
        RunOutcome::Quarantined
    } else {
        RunOutcome::Succeeded
    };

    checkpoint.last_run_at = Some(Utc::now());
    checkpoint.quarantine = quarantine.clone();
    if outcome == RunOutcome::Succeeded {
        // Only a plan that fully applied moves the checkpoint (a held removal or a failure replays next time).
        batch.commit(&mut checkpoint, run.started);
    }
    if !applied.unfinished {
        target.settle(&mut checkpoint, !hard);
    }
    // A run that lost its lease leaves the checkpoint to the run that took the lease over.
    if !lost {
        run.store.save_checkpoint(&link.name, &checkpoint).await?;
    }
    Ok(RunBody {
        mode,
        outcome,
        source_read,
        source_changes,
        planned,
        applied: applied.applied,
        failures,
        quarantine,
        plan: None,
        warnings,
    })
}

async fn purge_steps<T: Target>(target: &T, run: &RunContext<'_>, execute: bool) -> RunBody {
    let (purged, outcome) = match target.purge(run, execute).await {
        Ok(purged) => {
            let outcome = match (execute, purged.complete) {
                (false, _) => RunOutcome::Planned,
                (true, true) => RunOutcome::Succeeded,
                (true, false) => RunOutcome::PartiallyFailed,
            };
            (purged, outcome)
        }
        Err(reason) => (
            Purged {
                plan: Plan::default(),
                planned: PlanCounts::default(),
                applied: PlanCounts::default(),
                failures: vec![Failure {
                    anchor: None,
                    mailbox: None,
                    kind: "purge_failed".into(),
                    reason,
                }],
                complete: false,
            },
            RunOutcome::Failed,
        ),
    };
    let mut plan = purged.plan;
    plan.link = run.link.name.clone();
    plan.target_kind = target.kind().into();
    plan.full = true;
    RunBody {
        mode: if execute {
            RunMode::Full
        } else {
            RunMode::DryRun
        },
        outcome,
        source_read: 0,
        source_changes: 0,
        planned: purged.planned,
        applied: purged.applied,
        failures: purged.failures,
        quarantine: None,
        plan: (!execute).then(|| plan.to_json()),
        warnings: Vec::new(),
    }
}

/// The one-line summary of a purge of any kind of link: a dry run (`planned`) or what it removed.
pub(crate) fn purge_summary(link: &str, body: &RunBody) -> String {
    if body.mode == RunMode::DryRun {
        format!(
            "{link}: purge planned: {} managed objects would be removed",
            body.planned.deletes
        )
    } else {
        format!(
            "{link}: purge ran: {} managed objects removed ({} removed, {} failed)",
            body.planned.deletes,
            body.applied.deletes,
            body.failures.len()
        )
    }
}

/// The one-line summary of a run of any kind of link (logs, tables, the report's `summary`).
pub(crate) fn summary(link: &str, body: &RunBody) -> String {
    let counts = if body.outcome == RunOutcome::Planned {
        &body.planned
    } else {
        &body.applied
    };
    let mut text = format!(
        "{link}: {} run {}: read {}, created {}, updated {}, deleted {}, hidden {}, adopted {}, conflicts {}, unchanged {}",
        label(&body.mode),
        label(&body.outcome),
        body.source_read,
        counts.creates,
        counts.updates,
        counts.deletes,
        counts.hides,
        counts.adoptions,
        counts.conflicts,
        counts.unchanged
    );
    let hard = body
        .failures
        .iter()
        .filter(|f| !f.kind.starts_with("conflict"))
        .count();
    if hard > 0 {
        text.push_str(&format!(", {hard} failed"));
    }
    if let Some(quarantine) = &body.quarantine {
        text.push_str(&format!(
            ", QUARANTINED: {} deletes held ({})",
            quarantine.held_deletes, quarantine.threshold
        ));
    }
    text
}

/// The snake_case name of a report enum.
fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
