//! The target kinds, one folder each, behind one [`Target`] trait (docs/architecture.md, "Adding a target").
//!
//! Every run of every link goes through the same lifecycle (`engine::lifecycle`: lease, checkpoint, the shared
//! source stage, dry run, outcome, checkpoint commit, report, run record); the target supplies the steps that
//! differ, in phases: [`Target::plan`] reads what the target owns (its records, and the target itself when it must)
//! and turns the source stage's batch into a [`Plan`] (the same type for every kind: it is the dry run's output);
//! [`Target::apply`] writes it; [`Target::purge`] removes everything the link made.
//!
//! - `mail_contact`: Exchange mail contacts in another tenant's GAL.
//! - `personal_contacts`: contacts in the mailboxes of another tenant (GAL to phones).
//! - `guest_user`: B2B guest users in another tenant, shown in its GAL.
//!
//! A new target kind is a new folder here, a variant of `engine::spec::TargetSpec`, and one arm where the service
//! picks the target (`engine::service`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::plan::Plan;
use super::ports::{PortError, SourceDirectory};
use super::source_stage::SourceBatch;
use super::spec::LinkSpec;
use crate::report::{Failure, PlanCounts, QuarantineInfo, RunOptions};
use crate::state::{LinkCheckpoint, StateError, StateStore};

pub mod guest_user;
pub mod mail_contact;
pub mod personal_contacts;

/// What every step of a run can see.
pub struct RunContext<'a> {
    pub link: &'a LinkSpec,
    /// The run's options (a purge runs with the defaults).
    pub options: &'a RunOptions,
    pub store: &'a Arc<dyn StateStore>,
    /// The link's source (its tenant id makes the anchors this link owns).
    pub source: &'a Arc<dyn SourceDirectory>,
    /// Raised when the link's lease is lost: start no more changes.
    pub cancelled: &'a Arc<AtomicBool>,
    pub started: DateTime<Utc>,
}

impl RunContext<'_> {
    /// What a purge starts from, for targets whose objects carry the anchor: the anchor prefix this link owns (its
    /// source tenant's) and the link's managed records. `Err` names what could not be read.
    pub async fn owned(
        &self,
    ) -> Result<
        (
            String,
            std::collections::BTreeMap<String, super::diff::ManagedObject>,
        ),
        String,
    > {
        let tenant_id = self
            .source
            .tenant_id()
            .await
            .map_err(|e| format!("source tenant: {e}"))?;
        let managed = super::records::load_managed(self.store.as_ref(), &self.link.name)
            .await
            .map_err(|e| e.to_string())?;
        Ok((super::entry::anchor_prefix_for(&tenant_id), managed))
    }
}

/// What [`Target::plan`] decided.
pub struct Planned<W> {
    /// Every intended change (the lifecycle fills in the link, kind and checkpoints).
    pub plan: Plan,
    /// The counts the report shows as planned (for personal contacts: per mailbox).
    pub planned: PlanCounts,
    /// Source objects that changed in this run.
    pub source_changes: u64,
    /// Set when the safety net held removals back (`engine::safety`).
    pub quarantine: Option<QuarantineInfo>,
    /// Failures known before anything is written (an interrupted create that cannot be looked up, a photo that
    /// cannot be read, a mailbox that does not exist).
    pub failures: Vec<Failure>,
    /// What the target carries from planning to applying.
    pub work: W,
}

/// What [`Target::apply`] did.
pub struct Applied {
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    /// Work was left undone because the lease was lost or the run's budget was spent (a failure says which): the
    /// checkpoint does not move, and [`Target::settle`] is not called.
    pub unfinished: bool,
}

/// What [`Target::purge`] found and did.
pub struct Purged {
    /// What goes (a dry run's output).
    pub plan: Plan,
    pub planned: PlanCounts,
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    /// Everything went and the link's state is forgotten.
    pub complete: bool,
}

/// Why a target could not plan.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("reading the target failed: {0}")]
    Unreadable(PortError),
    #[error("state store: {0}")]
    State(#[from] StateError),
}

impl TargetError {
    /// The `Failure::kind` of the run report.
    pub fn failure_kind(&self) -> &'static str {
        match self {
            TargetError::Unreadable(_) => "target_unreadable",
            TargetError::State(_) => "state_error",
        }
    }
}

/// One kind of target (see the module docs). Implementations hold their ports and their options from
/// `engine::spec::TargetSpec`.
#[async_trait]
pub trait Target: Send + Sync {
    /// What the target carries from [`Target::plan`] to [`Target::apply`].
    type Work: Send;

    /// The kind's name, as in the configuration (`mail_contact`, ...).
    fn kind(&self) -> &'static str;

    /// Reads what the target owns and plans the run from the source stage's batch, with the safety net applied.
    /// May take what it needs out of the batch; the batch's checkpoint state stays for the lifecycle to commit.
    async fn plan(
        &self,
        run: &RunContext<'_>,
        checkpoint: &LinkCheckpoint,
        batch: &mut SourceBatch,
    ) -> Result<Planned<Self::Work>, TargetError>;

    /// Before the first write of a run that is not a dry run: returns `true` when it marked the checkpoint (which
    /// the lifecycle then saves before writing), e.g. "a run is writing". `work` says what the run will do (a run
    /// that will write nothing need not mark).
    fn mark_writing(&self, _checkpoint: &mut LinkCheckpoint, _work: &Self::Work) -> bool {
        false
    }

    /// Applies the plan. One object's failure is that object's: it is reported, never a reason to stop.
    async fn apply(&self, run: &RunContext<'_>, plan: &Plan, work: Self::Work) -> Applied;

    /// Whether a failure means the run did not fully apply (so the checkpoint must not move). Conflicts, for
    /// instance, need a human and do not replay.
    fn is_hard(&self, failure: &Failure) -> bool;

    /// After an apply that ran to its end, before the checkpoint is saved; `clean`: no hard failure.
    fn settle(&self, _checkpoint: &mut LinkCheckpoint, _clean: bool) {}

    /// Lists (`execute = false`) or removes everything the link manages in the target, then forgets the link's
    /// state. Only objects carrying this link's anchors (or its records) are touched. `Err` is the reason the
    /// purge could not start.
    async fn purge(&self, run: &RunContext<'_>, execute: bool) -> Result<Purged, String>;
}
