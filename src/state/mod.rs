//! Sync state: everything galbridge must remember between runs, behind one trait with two real stores
//! (Azure Table Storage for the Functions deployment, a local file store as the embedded default).
//!
//! Per link: a lease (one run at a time), a checkpoint (delta link, full-reconcile time, quarantine), the map from
//! each anchor to the object galbridge manages for it (with a content hash), and run records.
//! Object maps are kept per *scope*: [`LINK_SCOPE`] for link-wide maps (mail contacts, the source snapshot), or a
//! mailbox id for personal-contact targets, so that one mailbox's map can be read and written on its own.
//!
//! Writes of object records happen as changes land, so a crash loses at most the batch in flight, and the
//! delta link is only stored once the whole plan applied (the engine's job; the store just persists atomically).
//!
//! The stores:
//! - [`FileStore`] ([`file`]): a directory on local disk, the embedded default of the CLI.
//! - [`TableStore`] ([`table`]): Azure Table Storage through a small REST client of our own, for the Functions app.
//! - [`MemoryStore`] ([`memory`]): in-process, for fast engine tests.
//!
//! Besides the links, the store keeps request budgets shared by every process of a deployment ([`budget`]: Graph's
//! per-app limit across Functions instances).
//!
//! All three pass the same conformance suite (`tests/state_conformance.rs`).

pub mod budget;
pub mod file;
mod holder;
pub mod memory;
pub mod table;

pub use budget::{BudgetCounts, BudgetGrant, BudgetRule};
pub use file::FileStore;
pub use holder::{holder_is_gone, local_holder};
pub use memory::MemoryStore;
pub use table::{RetryPolicy, TableAuth, TableStore, TableStoreConfig};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::report::{QuarantineInfo, RunReport};

/// The scope of link-wide object maps (as opposed to one mailbox's).
pub const LINK_SCOPE: &str = "";

/// How many run records every store keeps per link (older ones are dropped as new ones arrive): the history
/// behind `status` (its recent runs, failing objects, last success) and the status page's chart.
pub const RUN_RECORDS_KEPT: usize = 100;

/// A held lease on a link. Renew it while running; release it when done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub link: String,
    /// Who holds it: `{hostname}:{pid}:{run id}` or the Functions invocation id.
    pub holder: String,
    pub until: DateTime<Utc>,
    /// Store-specific concurrency token (ETag for Table Storage, a generation counter for files).
    pub etag: String,
}

/// What a link remembers between runs (besides its object maps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkCheckpoint {
    /// The source's `@odata.deltaLink`, committed only after a plan fully applied.
    pub delta_link: Option<String>,
    /// When the last full read/reconcile completed.
    pub last_full_sync: Option<DateTime<Utc>>,
    /// When the last run (of any kind) completed.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Set while deletes are held back by the safety threshold.
    pub quarantine: Option<QuarantineInfo>,
    /// Free-form engine data that needs no schema of its own (e.g. folder ids per mailbox); keep it small.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One object galbridge manages (or one source entry it remembers), keyed by anchor within a (link, scope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// `galbridge:{sourceTenantId}:{sourceObjectId}`.
    pub anchor: String,
    /// The id in the target (mail contact `ExternalDirectoryObjectId`/Guid, personal contact id); empty for source records.
    pub target_id: String,
    /// Hash of what was last written (or read), to detect change without a field-by-field compare.
    pub hash: String,
    /// Optional snapshot (e.g. the entry last written), used for field-level diffs. Keep it under ~30 KB.
    pub data: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another holder has the lease and it has not expired.
    #[error("lease on link {link:?} is held by {holder} until {until}")]
    LeaseHeld {
        link: String,
        holder: String,
        until: DateTime<Utc>,
    },
    /// The lease was lost (expired and taken by someone else, or released).
    #[error("lease on link {link:?} was lost")]
    LeaseLost { link: String },
    /// A compare-and-swap failed for another reason (concurrent writer).
    #[error("concurrent update of {what}")]
    Conflict { what: String },
    #[error("state store I/O error: {0}")]
    Io(String),
    /// Stored data that cannot be read back (a damaged file, a foreign entity). Never silently reset: the operator
    /// decides (restore, or delete the named file/entity and let the next full run rebuild it).
    #[error("state store data is corrupt at {what}: {reason}")]
    Corrupt { what: String, reason: String },
    /// A record too large for the store (Table Storage: 1 MiB per entity); refused before anything is written.
    #[error("{what} is too large for the state store: {size} bytes, limit {limit}")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    /// The store refused the request (authentication, permissions, bad request) after retries.
    #[error("state store refused {operation}: HTTP {status} {code}: {message}")]
    Service {
        operation: String,
        status: u16,
        code: String,
        message: String,
    },
}

/// The sync state of every link. Implementations must be safe to share between concurrent runs of different links.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Takes the link's lease for `ttl`, or fails with [`StateError::LeaseHeld`] while someone else holds it.
    /// An expired lease can be taken over. Compare-and-swap: two callers racing get one winner.
    async fn acquire_lease(
        &self,
        link: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<Lease, StateError>;
    /// Extends a held lease; [`StateError::LeaseLost`] if it is no longer ours.
    async fn renew_lease(&self, lease: &Lease, ttl: chrono::Duration) -> Result<Lease, StateError>;
    /// Gives the lease up (idempotent).
    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError>;
    /// Who holds the lease now (None if free or expired).
    async fn current_lease(&self, link: &str) -> Result<Option<Lease>, StateError>;

    async fn load_checkpoint(&self, link: &str) -> Result<LinkCheckpoint, StateError>;
    async fn save_checkpoint(
        &self,
        link: &str,
        checkpoint: &LinkCheckpoint,
    ) -> Result<(), StateError>;

    /// Every record of a (link, scope), sorted by anchor.
    async fn list_objects(&self, link: &str, scope: &str) -> Result<Vec<ObjectRecord>, StateError>;
    /// The records of a (link, scope) among `anchors`, sorted by anchor, each at most once; anchors without a record
    /// are simply absent. Costs O(`anchors`), not O(map): an incremental run reads only what changed.
    async fn get_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<Vec<ObjectRecord>, StateError>;
    /// Hands every record of a (link, scope) to `visit`, one at a time, in no particular order: a store that can
    /// stream (the file store reads its map record by record) never holds the whole map, so a caller that keeps a
    /// digest of each record needs memory for the digests only. The default lists them all first.
    async fn scan_objects(
        &self,
        link: &str,
        scope: &str,
        visit: &mut (dyn FnMut(ObjectRecord) + Send),
    ) -> Result<(), StateError> {
        for record in self.list_objects(link, scope).await? {
            visit(record);
        }
        Ok(())
    }
    /// Inserts or replaces records (by anchor), atomically per call where the store allows (batches of ≤100).
    async fn put_objects(
        &self,
        link: &str,
        scope: &str,
        records: &[ObjectRecord],
    ) -> Result<(), StateError>;
    /// Removes records by anchor (missing ones are ignored).
    async fn delete_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<(), StateError>;
    /// The scopes that hold records for a link (e.g. every mailbox served), excluding [`LINK_SCOPE`].
    async fn list_scopes(&self, link: &str) -> Result<Vec<String>, StateError>;

    /// Stores a finished run's report; keeps the last [`RUN_RECORDS_KEPT`] per link (newest by `started_at`).
    /// Storing a report with the same `run_id` again replaces it.
    async fn put_run_record(&self, report: &RunReport) -> Result<(), StateError>;
    /// The newest `limit` run records of a link, newest first.
    async fn list_run_records(
        &self,
        link: &str,
        limit: usize,
    ) -> Result<Vec<RunReport>, StateError>;

    /// Forgets everything about a link (after `purge`).
    async fn delete_link(&self, link: &str) -> Result<(), StateError>;

    /// Claims up to `want` tokens of the shared budget `key` at `now` under `rule` (nothing unless `at_least`
    /// fit): a compare-and-swap of the budget's row ([`BudgetCounts::claim`]), correct across processes. Budgets
    /// live apart from links (`delete_link` leaves them). A grant is void after [`BudgetGrant::spend_by`].
    async fn take_budget(
        &self,
        key: &str,
        want: u32,
        at_least: u32,
        rule: &BudgetRule,
        now: DateTime<Utc>,
    ) -> Result<BudgetGrant, StateError>;
}
