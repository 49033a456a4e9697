//! Run reports and status: the JSON that every front door prints (CLI `--json`, the `SyncHttp` and `Status`
//! HTTP responses) and that the state store keeps as run records. Field names are a public contract.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an operator asked for: which links, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Stop after planning and return the plan; write nothing to any tenant.
    pub dry_run: bool,
    /// Ignore the stored delta link and reconcile the whole source against the target.
    pub full: bool,
    /// Release a quarantine once: apply the deletes that exceeded the threshold.
    pub allow_deletes: bool,
}

/// How a run read its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Incremental,
    Full,
    DryRun,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Everything planned was applied (conflicts may still be reported).
    Succeeded,
    /// Some changes failed; the delta link did not advance, the next run retries them.
    PartiallyFailed,
    /// Deletes exceeded the threshold: the rest applied, deletes are held until released.
    Quarantined,
    /// Nothing could be done (credentials, source unreachable, ...).
    Failed,
    /// A dry run: the plan is in the report, nothing was written.
    Planned,
}

/// Counts of a plan, by kind of change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCounts {
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub hides: u64,
    pub adoptions: u64,
    pub conflicts: u64,
    pub unchanged: u64,
}

/// One change that could not be applied, or one conflict that needs a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The galbridge anchor of the entry (`galbridge:{sourceTenantId}:{objectId}`), when known.
    pub anchor: Option<String>,
    /// The mailbox concerned, for personal-contact targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// Short machine-readable kind: `conflict_address`, `conflict_name`, `throttled`, `exchange_error`, ...
    pub kind: String,
    /// Human-readable reason, never containing a secret.
    pub reason: String,
}

/// The report of one run of one link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub link: String,
    pub run_id: String,
    pub mode: RunMode,
    pub outcome: RunOutcome,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Source objects read in this run, and how many of them were changes (delta) or all (full).
    pub source_read: u64,
    pub source_changes: u64,
    pub planned: PlanCounts,
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    /// Requests that were retried after 429/503/504 or a transient Exchange error.
    pub throttled_retries: u64,
    /// Requests sent, per service (`graph`, `exchange`, `login`, `key_vault`, `table`).
    pub requests: BTreeMap<String, u64>,
    pub quarantine: Option<QuarantineInfo>,
    /// For dry runs: every intended change with its field-level diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
    /// One-line human summary (also sent to the Functions host's `Logs`).
    pub summary: String,
}

/// Why a link is quarantined and how to release it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineInfo {
    pub since: DateTime<Utc>,
    pub held_deletes: u64,
    pub threshold: String,
    pub release_hint: String,
    /// What the held deletes would remove: the first [`HELD_SHOWN`] of them (the count is `held_deletes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldDelete>,
}

/// How many held deletes a quarantine names (it counts them all).
pub const HELD_SHOWN: usize = 50;

/// One object a quarantine holds back from deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDelete {
    pub anchor: String,
    /// The name it has in the target, when known (a directory value: user-controlled).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
}

impl HeldDelete {
    /// The first [`HELD_SHOWN`] of `(anchor, display name)` pairs.
    pub fn sample<'a>(held: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<HeldDelete> {
        held.into_iter()
            .take(HELD_SHOWN)
            .map(|(anchor, display_name)| HeldDelete {
                anchor: anchor.to_owned(),
                display_name: display_name.to_owned(),
            })
            .collect()
    }
}

/// A link's health at a glance (`status`, the status page).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The last run succeeded and no object keeps failing.
    Ok,
    /// The last run failed or partially failed, or an object has failed several runs in a row.
    Failing,
    /// Deletes are held back until released.
    Quarantined,
    /// No run is recorded.
    #[default]
    NeverRun,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Failing => "failing",
            Health::Quarantined => "quarantined",
            Health::NeverRun => "never run",
        }
    }
}

/// How many runs `status` shows per link (the status page's chart).
pub const RECENT_RUNS_SHOWN: usize = 30;
/// An object is listed as failing once it failed in this many consecutive runs.
pub const FAILING_OBJECT_MIN_RUNS: u32 = 2;
/// How many failing objects `status` lists per link (it counts them all in `failing_objects_total`).
pub const FAILING_OBJECTS_SHOWN: usize = 50;

/// One past run, as the status chart draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPoint {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub mode: RunMode,
    pub outcome: RunOutcome,
    /// Changes applied: creates, updates, deletes, hides and adoptions.
    pub changes: u64,
    /// Failures reported (objects and conflicts).
    pub failures: u64,
}

impl RunPoint {
    pub fn of(report: &RunReport) -> RunPoint {
        let applied = &report.applied;
        RunPoint {
            run_id: report.run_id.clone(),
            started_at: report.started_at,
            duration_ms: report.duration_ms,
            mode: report.mode,
            outcome: report.outcome,
            changes: applied.creates
                + applied.updates
                + applied.deletes
                + applied.hides
                + applied.adoptions,
            failures: report.failures.len() as u64,
        }
    }
}

/// An object that failed in the last `runs` consecutive runs of its link (while the others kept syncing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingObject {
    pub anchor: String,
    /// The mailbox concerned, for personal-contact targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// Consecutive runs (newest back) whose failures name it; at least [`FAILING_OBJECT_MIN_RUNS`].
    pub runs: u32,
    /// The reason of its newest failure.
    pub last_error: String,
    /// The kind of its newest failure (`conflict_address`, `exchange_error`, ...).
    pub kind: String,
}

/// The objects failing in each of the last N ≥ [`FAILING_OBJECT_MIN_RUNS`] runs, from run records newest first,
/// most persistent first. Runs that failed as a whole (nothing read or applied) tried no object: they neither
/// count nor break a streak.
pub fn failing_objects(runs: &[RunReport]) -> Vec<FailingObject> {
    let attempted: Vec<&RunReport> = runs
        .iter()
        .filter(|run| !matches!(run.outcome, RunOutcome::Failed | RunOutcome::Planned))
        .collect();
    let Some(newest) = attempted.first() else {
        return Vec::new();
    };
    let keys = |run: &&RunReport| -> HashSet<(String, Option<String>)> {
        run.failures
            .iter()
            .filter_map(|failure| Some((failure.anchor.clone()?, failure.mailbox.clone())))
            .collect()
    };
    let earlier: Vec<HashSet<(String, Option<String>)>> =
        attempted.iter().skip(1).map(keys).collect();
    let mut seen = HashSet::new();
    let mut failing = Vec::new();
    for failure in &newest.failures {
        let Some(anchor) = &failure.anchor else {
            continue;
        };
        let key = (anchor.clone(), failure.mailbox.clone());
        if !seen.insert(key.clone()) {
            continue;
        }
        let runs = 1 + earlier.iter().take_while(|set| set.contains(&key)).count();
        let runs = u32::try_from(runs).unwrap_or(u32::MAX);
        if runs >= FAILING_OBJECT_MIN_RUNS {
            failing.push(FailingObject {
                anchor: anchor.clone(),
                mailbox: failure.mailbox.clone(),
                runs,
                last_error: failure.reason.clone(),
                kind: failure.kind.clone(),
            });
        }
    }
    failing.sort_by(|a, b| {
        b.runs
            .cmp(&a.runs)
            .then_with(|| a.anchor.cmp(&b.anchor))
            .then_with(|| a.mailbox.cmp(&b.mailbox))
    });
    failing
}

/// One link as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkStatus {
    pub link: String,
    pub source_tenant: String,
    pub target_tenant: String,
    pub target_kind: String,
    pub last_run: Option<RunReport>,
    pub next_due: Option<DateTime<Utc>>,
    pub managed_objects: u64,
    pub quarantine: Option<QuarantineInfo>,
    /// Who holds the link's lease right now, if a run is in progress.
    pub running: Option<String>,
    /// Until when that lease holds unless renewed (a crashed holder's lease lapses then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_until: Option<DateTime<Utc>>,
    /// The mesh the link belongs to, if any.
    pub mesh: Option<String>,
    /// ok / failing / quarantined / never_run.
    pub health: Health,
    /// When the newest run that succeeded ended.
    pub last_success: Option<DateTime<Utc>>,
    /// The last [`RECENT_RUNS_SHOWN`] runs, newest first.
    pub recent_runs: Vec<RunPoint>,
    /// Objects failing in each of the last N ≥ 2 runs, most persistent first (at most [`FAILING_OBJECTS_SHOWN`]).
    pub failing_objects: Vec<FailingObject>,
    /// How many objects are failing, listed or not.
    pub failing_objects_total: u64,
    /// A `personal_contacts` link: its latest run's shards (absent before the first sharded run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardSetStatus>,
}

/// The shards of a phones link's latest run (`personal_contacts::shards`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardSetStatus {
    /// The id of the run's shard set (a generation).
    pub generation: String,
    pub created_at: DateTime<Utc>,
    /// The queue the shards went to; absent: they ran in the process that ran the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    pub shards: u64,
    pub done: u64,
    pub pending: u64,
    /// Gave up (their last try failed): the next run reconciles their mailboxes in full.
    pub failed: u64,
    /// Pending shards the next run waits for (not poisoned, not stale).
    pub in_flight: u64,
    pub mailboxes: u64,
    pub mailboxes_done: u64,
    /// Messages of this generation in the poison queue whose shard is not done.
    pub poisoned: Vec<PoisonedShard>,
    pub failed_shards: Vec<FailedShard>,
}

/// A shard's message the host moved to the poison queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoisonedShard {
    pub shard: u32,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A shard that gave up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedShard {
    pub shard: u32,
    pub mailboxes_left: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What one `PhonesShard` invocation did with its shard (the handler's answer body and log line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReport {
    pub link: String,
    pub generation: String,
    pub shard: u32,
    /// `done`, `incomplete` (retried), `failed` (the last try), `busy` (another try holds it; retried),
    /// `superseded` (an older run's shard: nothing to do).
    pub end: String,
    pub dequeue_count: u32,
    pub mailboxes: u64,
    pub mailboxes_done: u64,
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    pub summary: String,
}

impl LinkStatus {
    /// Fills in what status derives from the link's run records (newest first): the last run, the last success,
    /// the recent runs, the failing objects and the health (set `quarantine` first).
    pub fn with_history(mut self, runs: &[RunReport]) -> LinkStatus {
        self.last_run = runs.first().cloned();
        self.last_success = runs
            .iter()
            .find(|run| run.outcome == RunOutcome::Succeeded)
            .map(|run| {
                run.started_at
                    + chrono::Duration::milliseconds(
                        i64::try_from(run.duration_ms).unwrap_or(i64::MAX / 2),
                    )
            });
        self.recent_runs = runs
            .iter()
            .take(RECENT_RUNS_SHOWN)
            .map(RunPoint::of)
            .collect();
        let mut failing = failing_objects(runs);
        self.failing_objects_total = failing.len() as u64;
        failing.truncate(FAILING_OBJECTS_SHOWN);
        self.failing_objects = failing;
        self.health = if self.quarantine.is_some() {
            Health::Quarantined
        } else {
            match &self.last_run {
                None => Health::NeverRun,
                Some(run)
                    if matches!(
                        run.outcome,
                        RunOutcome::Failed | RunOutcome::PartiallyFailed
                    ) || !self.failing_objects.is_empty() =>
                {
                    Health::Failing
                }
                Some(_) => Health::Ok,
            }
        };
        self
    }
}

/// `GET /api/status` and `galbridge status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub links: Vec<LinkStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(minute: u32, outcome: RunOutcome, failing: &[(&str, &str)]) -> RunReport {
        RunReport {
            link: "l".into(),
            run_id: format!("r{minute}"),
            mode: RunMode::Incremental,
            outcome,
            started_at: DateTime::parse_from_rfc3339(&format!("2026-12-01T10:{minute:02}:00Z"))
                .unwrap()
                .with_timezone(&Utc),
            duration_ms: 1500,
            source_read: 0,
            source_changes: 0,
            planned: PlanCounts::default(),
            applied: PlanCounts {
                creates: 2,
                updates: 1,
                ..PlanCounts::default()
            },
            failures: failing
                .iter()
                .map(|(anchor, reason)| Failure {
                    anchor: (!anchor.is_empty()).then(|| (*anchor).to_owned()),
                    mailbox: None,
                    kind: "exchange_error".into(),
                    reason: (*reason).to_owned(),
                })
                .collect(),
            throttled_retries: 0,
            requests: BTreeMap::new(),
            quarantine: None,
            plan: None,
            summary: String::new(),
        }
    }

    #[test]
    fn objects_failing_in_consecutive_runs_are_listed_with_their_newest_error() {
        use RunOutcome::*;
        // Newest first.
        let runs = vec![
            run(
                5,
                PartiallyFailed,
                &[("a", "a-5"), ("b", "b-5"), ("", "run-level")],
            ),
            run(4, Failed, &[("", "source unreadable")]),
            run(
                3,
                PartiallyFailed,
                &[("a", "a-3"), ("b", "b-3"), ("c", "c-3")],
            ),
            run(2, PartiallyFailed, &[("a", "a-2"), ("c", "c-2")]),
            run(1, PartiallyFailed, &[("a", "a-1")]),
            run(0, Succeeded, &[]),
        ];

        let failing = failing_objects(&runs);

        let shown: Vec<(&str, u32, &str)> = failing
            .iter()
            .map(|f| (f.anchor.as_str(), f.runs, f.last_error.as_str()))
            .collect();
        // a: runs 5, 3, 2, 1 (the failed run 4 tried nothing); b: 5 and 3; c failed before but not in the newest.
        assert_eq!(shown, vec![("a", 4, "a-5"), ("b", 2, "b-5")]);
        assert_eq!(failing[0].kind, "exchange_error");
    }

    #[test]
    fn one_failed_run_is_not_a_failing_object_and_a_success_breaks_the_streak() {
        use RunOutcome::*;
        assert!(failing_objects(&[run(1, PartiallyFailed, &[("a", "x")])]).is_empty());
        assert!(
            failing_objects(&[
                run(2, PartiallyFailed, &[("a", "x")]),
                run(1, Succeeded, &[]),
                run(0, PartiallyFailed, &[("a", "x")]),
            ])
            .is_empty()
        );
        assert!(failing_objects(&[]).is_empty());
    }

    #[test]
    fn health_and_freshness_come_from_the_history() {
        use RunOutcome::*;
        let never = LinkStatus::default().with_history(&[]);
        assert_eq!((never.health, never.last_success), (Health::NeverRun, None));

        let runs = vec![
            run(3, PartiallyFailed, &[("a", "x")]),
            run(2, PartiallyFailed, &[("a", "x")]),
            run(1, Succeeded, &[]),
        ];
        let status = LinkStatus::default().with_history(&runs);
        assert_eq!(status.health, Health::Failing);
        assert_eq!(status.failing_objects_total, 1);
        assert_eq!(status.recent_runs.len(), 3);
        assert_eq!(status.recent_runs[0].changes, 3);
        assert_eq!(
            status.last_success.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-12-01T10:01:01.500+00:00"),
            "when the last successful run ended"
        );
        assert_eq!(
            status.last_run.as_ref().map(|r| r.run_id.as_str()),
            Some("r3")
        );

        let ok = LinkStatus::default().with_history(&runs[2..]);
        assert_eq!(ok.health, Health::Ok);
        let quarantined = LinkStatus {
            quarantine: Some(QuarantineInfo {
                since: runs[0].started_at,
                held_deletes: 3,
                threshold: "t".into(),
                release_hint: "h".into(),
                held: Vec::new(),
            }),
            ..LinkStatus::default()
        }
        .with_history(&runs);
        assert_eq!(quarantined.health, Health::Quarantined);

        let many: Vec<RunReport> = (0..40).map(|m| run(m % 60, Succeeded, &[])).collect();
        assert_eq!(
            LinkStatus::default().with_history(&many).recent_runs.len(),
            RECENT_RUNS_SHOWN
        );
    }
}
