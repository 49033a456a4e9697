//! Target kind `personal_contacts` (issue 5, "GAL to phones"): the link's people as personal contacts in every chosen
//! mailbox of the target tenant, in a named folder (or the default Contacts folder), with categories, an anchor in a
//! single-value extended property, optional photos, per-field write policy.
//!
//! Rooms:
//! - [`spec`]: the target's options ([`PhonesTarget`]), compiled from the resolved configuration.
//! - [`contact`]: entry → Graph contact properties, write policies, comparisons, hashes.
//! - [`mailboxes`]: which mailboxes the link fills (all / groups / list / filter, minus exclusions).
//! - [`photos`]: source photos read once per run; [`prepare`]: the source side of a run (read, scope, map,
//!   snapshot, photos, who changed).
//! - [`records`]: what the state store remembers per (link, mailbox) and the link's source snapshot.
//! - [`mailbox_sync`]: one mailbox: folder, full reconcile or incremental fan-out, `$batch` writes, records
//!   ([`mailbox_plan`] plans the writes, [`mailbox_write`] sends them and books the answers).
//! - [`shards`]: a run's mailboxes in shards, each run by [`shards::ShardRunner`] (in this process, or as a queue
//!   message on any instance), with its own checkpoint and lease.
//! - [`purge`]: uninstalling the link (every recorded contact deleted, state forgotten).
//! - [`PersonalContacts`] (here): the target; [`run`]: its `Target` phases behind the shared lifecycle
//!   (`engine::lifecycle`): the source batch into the snapshot, photos, mailbox joins and leaves, safety, fan-out
//!   over mailboxes.
//!
//! Crash safety: contacts are created with their anchor in the same request, so a contact galbridge made always
//! carries the anchor. A run marks the checkpoint "open" before writing and clears the mark only when it succeeds;
//! a run that finds the mark (a crash, a failure) reconciles every mailbox in full: it lists the folder, takes
//! anchored contacts it has no record of back into its records and deletes duplicates of one anchor. So a killed
//! run followed by another run never leaves duplicates.

pub mod contact;
pub mod mailbox_plan;
pub mod mailbox_sync;
pub mod mailbox_write;
pub mod mailboxes;
pub mod photos;
pub mod prepare;
pub mod purge;
pub mod records;
pub mod run;
pub mod shards;
pub mod spec;

pub use spec::{OnPersonGone, PhonesTarget, phones_target};

use std::sync::Arc;

use crate::m365::GraphClient;
use crate::queue::ShardQueue;

/// The `personal_contacts` target of one link: the Graph of both tenants, the link's target options, and where
/// its shards go.
#[derive(Clone)]
pub struct PersonalContacts {
    /// The source tenant's Graph (photos).
    pub source_graph: GraphClient,
    /// The target tenant's Graph (mailboxes, folders, contacts).
    pub target_graph: GraphClient,
    pub options: PhonesTarget,
    /// Where a run's shards are sent; `None`: the run runs them itself ([`shards`]).
    pub queue: Option<Arc<dyn ShardQueue>>,
    /// Who takes the shard leases (`{host}:{pid}`; a try's id is appended), and for how long.
    pub holder: String,
    pub lease_ttl: chrono::Duration,
}
