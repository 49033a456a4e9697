//! Run reports and status: the JSON that every front door prints (CLI `--json`, the `SyncHttp` and `Status`
//! HTTP responses) and that the state store keeps as run records. Field names are a public contract.

use std::collections::BTreeMap;

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
}

/// One link as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// `GET /api/status` and `galbridge status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub links: Vec<LinkStatus>,
}
