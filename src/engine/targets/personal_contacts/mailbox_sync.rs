//! One mailbox of a `personal_contacts` run.
//!
//! - **Full** (first time, periodic reconcile, after an unfinished run): find the folder (by stored id even if the
//!   owner renamed it, else by name, else create it), list its contacts with the anchor property expanded, and bring
//!   them to the desired list: missing managed contacts are created again, changed ones patched, duplicates of one
//!   anchor and contacts of people no longer in scope deleted; unanchored contacts are never touched except when the
//!   link opts in to adopting one with the same address. Anchored contacts of other sources are left alone.
//! - **Incremental**: only the people that changed in this run; each costs one write per mailbox (create, patch or
//!   delete) computed from the mailbox's records, with no read of the mailbox, and only those people's records are
//!   read from the state store (see [`PARTIAL_LOAD_MAX_ANCHORS`]).
//!
//! Writes go through `$batch` (20 per batch, one batch in flight per mailbox, so Outlook's 4 concurrent requests per
//! mailbox hold; the m365 batch executor retries throttled inner requests after their Retry-After). Photos follow
//! in a second pass: a new contact's id is only known once its create answered (a `$batch` request cannot use
//! another's result).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::mailboxes::MailboxRef;
use super::photos::PhotoCache;
use super::records::{
    ContactRecord, MailboxChanges, MailboxState, load_mailbox, load_mailbox_anchors, save_mailbox,
};
use super::spec::PhonesTarget;
use crate::m365::{GraphClient, GraphError};
use crate::report::{Failure, PlanCounts};
use crate::state::{StateError, StateStore};

/// What one person should look like in every mailbox (computed once per run).
#[derive(Debug, Clone)]
pub struct Desired {
    pub props: BTreeMap<String, Value>,
    /// Lowercase primary address (adoption).
    pub email: Option<String>,
    /// Source photo hash (photos on and the person has one).
    pub photo: Option<String>,
    pub hash: String,
}

/// Above this many changed and departed people, an incremental run reads each mailbox's whole record map (one
/// partition query) rather than per-anchor lookups (Table Storage: one point GET per anchor).
pub const PARTIAL_LOAD_MAX_ANCHORS: usize = 200;

/// Contact records saved together while a mailbox is written (one Table Storage entity group transaction).
pub const RECORDS_PER_FLUSH: usize = 100;

/// What a run fans out to every mailbox. Owned (and shared through an `Arc`) so that each mailbox runs as a task
/// of its own, on every core: polled from one task, the JSON work of all mailboxes shared one core.
pub struct Fanout {
    pub link: String,
    pub graph: GraphClient,
    pub store: Arc<dyn StateStore>,
    pub target: PhonesTarget,
    pub fill_blank: BTreeSet<&'static str>,
    pub desired: BTreeMap<String, Desired>,
    /// Whether `desired` holds every person of the snapshot. An incremental shard loads only the people who changed
    /// (its memory follows the changes, not the directory); such a fanout may only run [`SyncMode::Incremental`],
    /// which looks at the changed people alone.
    pub desired_complete: bool,
    /// People whose entry or photo changed in this run, and people who left the scope (incremental mailboxes look
    /// at these only).
    pub changed: BTreeSet<String>,
    /// People gone from the source whose contacts must stay for now (quarantine).
    pub held: BTreeSet<String>,
    /// `galbridge:{sourceTenantId}:`: anchored contacts with it belong to this link's source.
    pub anchor_prefix: String,
    pub photos: Option<Arc<PhotoCache>>,
}

/// What happened in one mailbox.
#[derive(Debug, Default)]
pub struct MailboxOutcome {
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    /// Not REST-enabled: skipped and reported.
    pub skipped: bool,
    pub full: bool,
    /// The mailbox's UPN (or id), for reports.
    pub mailbox: Option<String>,
}

impl MailboxOutcome {
    /// The mailbox's failures as a run reports them: a mailbox skipped for not being REST-enabled is one more.
    pub fn into_failures(self) -> Vec<Failure> {
        let mut failures = self.failures;
        if self.skipped {
            failures.push(Failure {
                anchor: None,
                mailbox: self.mailbox,
                kind: "mailbox_not_rest_enabled".into(),
                reason:
                    "the mailbox is not enabled for the REST API (MailboxNotEnabledForRESTAPI); skipped"
                        .into(),
            });
        }
        failures
    }
}

/// Adds one mailbox's (or shard's) applied counts to a run's.
pub fn add_counts(total: &mut PlanCounts, counts: &PlanCounts) {
    total.creates += counts.creates;
    total.updates += counts.updates;
    total.deletes += counts.deletes;
    total.adoptions += counts.adoptions;
    total.unchanged += counts.unchanged;
}

pub(super) enum Op {
    /// The body is built when its batch is sent (a mailbox's first fill plans hundreds of creates at once).
    Create {
        anchor: String,
    },
    Patch {
        anchor: String,
        contact_id: String,
        body: Value,
        adopt: bool,
        photo: bool,
    },
    Photo {
        anchor: String,
        contact_id: String,
    },
    Delete {
        anchor: String,
        contact_id: String,
        /// Forget the record when it landed (false for a duplicate: the record names the keeper).
        forget: bool,
    },
}

impl Op {
    pub(super) fn anchor(&self) -> &str {
        match self {
            Op::Create { anchor, .. }
            | Op::Patch { anchor, .. }
            | Op::Photo { anchor, .. }
            | Op::Delete { anchor, .. } => anchor,
        }
    }
}

pub(super) struct MailboxRun<'f> {
    pub(super) fanout: &'f Fanout,
    pub(super) mailbox: &'f MailboxRef,
    pub(super) state: MailboxState,
    pub(super) changes: MailboxChanges,
    pub(super) outcome: MailboxOutcome,
    pub(super) photo_queue: Vec<(String, String)>,
}

/// How much of a mailbox a run looks at (in a shard record: `incremental`, `reconcile`, `thorough`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// The changed and departed people only, from the records (no mailbox read).
    Incremental,
    /// The periodic drift repair: the changed people, plus what changed in the folder since the stored delta link
    /// (contacts the owner deleted or edited). Falls back to `Thorough` without a delta link.
    Reconcile,
    /// List the whole folder with anchors (first time, after an unfinished run, on request).
    Thorough,
}

impl Fanout {
    /// Syncs one mailbox.
    pub async fn sync(&self, mailbox: &MailboxRef, mode: SyncMode) -> MailboxOutcome {
        let state = match self.load_state(mailbox, mode).await {
            Ok(state) => state,
            Err(error) => {
                let mut outcome = MailboxOutcome::default();
                outcome
                    .failures
                    .push(failure(mailbox, None, "state_error", error.to_string()));
                return outcome;
            }
        };
        let mode = match mode {
            _ if state.folder_id.is_none() => SyncMode::Thorough,
            // Delta is per folder: the default Contacts folder is listed instead (quirk: no folder id to ask).
            SyncMode::Reconcile
                if state.delta_link.is_none()
                    || state.folder_id.as_deref().is_some_and(str::is_empty) =>
            {
                SyncMode::Thorough
            }
            mode => mode,
        };
        let full = mode != SyncMode::Incremental;
        let mut run = MailboxRun {
            fanout: self,
            mailbox,
            state,
            changes: MailboxChanges::default(),
            outcome: MailboxOutcome {
                full,
                mailbox: Some(mailbox.upn.clone()),
                ..MailboxOutcome::default()
            },
            photo_queue: Vec::new(),
        };
        let planned = match mode {
            SyncMode::Thorough => run.plan_full().await,
            SyncMode::Reconcile => match run.plan_delta().await {
                // Quirk (docs/microsoft-facts.md §2, delta tokens expire): start over with a listing.
                Err(GraphError::DeltaExpired { .. }) => run.plan_full().await,
                planned => planned,
            },
            SyncMode::Incremental => Ok(run.plan_incremental()),
        };
        let mut result = match planned {
            Ok(ops) => run.execute(ops).await,
            Err(error) => Err(error),
        };
        // After listing a folder: where the next periodic repair starts reading the folder's changes from.
        if result.is_ok()
            && mode == SyncMode::Thorough
            && let Some(folder) = run.folder().map(str::to_owned)
        {
            match run.latest_delta_link(&folder).await {
                Ok(link) => {
                    run.changes.folder_id = Some(folder);
                    run.changes.delta_link = link;
                }
                Err(error) => result = Err(error),
            }
        }
        match result {
            Ok(()) => {}
            Err(GraphError::MailboxNotEnabledForRest { .. }) => {
                tracing::info!(link = %self.link, mailbox = %mailbox.upn, "Mailbox is not enabled for REST; skipped.");
                run.outcome.skipped = true;
            }
            Err(error) => {
                tracing::warn!(link = %self.link, mailbox = %mailbox.upn, error = %error, "Mailbox sync failed.");
                run.outcome
                    .failures
                    .push(failure(mailbox, None, "graph_error", error.to_string()));
            }
        }
        if !run.changes.is_empty()
            && let Err(error) =
                save_mailbox(self.store.as_ref(), &self.link, &mailbox.id, &run.changes).await
        {
            run.outcome.failures.push(failure(
                mailbox,
                None,
                "state_write",
                format!("landed changes were not recorded: {error}"),
            ));
        }
        run.outcome
    }
}

impl Fanout {
    /// The records a mailbox's sync needs. An incremental run touching at most [`PARTIAL_LOAD_MAX_ANCHORS`] people
    /// reads only their records and the folder record (`plan_incremental` and the writes look up those anchors
    /// only); every other mode, and a mailbox without a folder record (joining: it goes thorough), reads the map.
    async fn load_state(
        &self,
        mailbox: &MailboxRef,
        mode: SyncMode,
    ) -> Result<MailboxState, StateError> {
        if mode == SyncMode::Incremental && self.changed.len() <= PARTIAL_LOAD_MAX_ANCHORS {
            let state =
                load_mailbox_anchors(self.store.as_ref(), &self.link, &mailbox.id, &self.changed)
                    .await?;
            if state.folder_id.is_some() {
                return Ok(state);
            }
        }
        load_mailbox(self.store.as_ref(), &self.link, &mailbox.id).await
    }
}

impl MailboxRun<'_> {
    pub(super) fn categories(&self) -> &[String] {
        &self.fanout.target.categories
    }

    /// The folder's id (`""`: the default Contacts folder), created if missing.
    pub(super) fn folder(&self) -> Option<&str> {
        self.state.folder_id.as_deref().filter(|id| !id.is_empty())
    }

    /// Saves the records of written contacts once [`RECORDS_PER_FLUSH`] have gathered, so a mailbox in flight
    /// holds at most that many and a crash loses at most that many (the next run's thorough pass finds them again
    /// by anchor). A failed save keeps them for the final save of the mailbox.
    pub(super) async fn flush_records(&mut self) {
        if self.changes.put.len() < RECORDS_PER_FLUSH {
            return;
        }
        let batch = MailboxChanges {
            put: std::mem::take(&mut self.changes.put),
            ..MailboxChanges::default()
        };
        let fanout = self.fanout;
        if let Err(error) = save_mailbox(
            fanout.store.as_ref(),
            &fanout.link,
            &self.mailbox.id,
            &batch,
        )
        .await
        {
            tracing::warn!(link = %fanout.link, mailbox = %self.mailbox.upn, error = %error, "Saving contact records failed; retried when the mailbox is done.");
            self.changes.put.extend(batch.put);
        }
    }

    /// Records a contact as holding the desired properties (the photo as given).
    pub(super) fn remember(&mut self, anchor: &str, contact_id: &str, photo: Option<String>) {
        let Some(want) = self.fanout.desired.get(anchor) else {
            return;
        };
        self.changes.put.insert(
            anchor.to_owned(),
            ContactRecord {
                contact_id: contact_id.to_owned(),
                written: want.props.clone(),
                photo,
                hash: want.hash.clone(),
            },
        );
    }

    pub(super) fn uploaded_photo(&self, anchor: &str) -> Option<String> {
        self.state
            .contacts
            .get(anchor)
            .and_then(|r| r.photo.clone())
    }
}

pub(super) fn id_of(value: &Value) -> Option<&str> {
    value.get("id").and_then(Value::as_str)
}

pub(super) fn failure(
    mailbox: &MailboxRef,
    anchor: Option<&str>,
    kind: &str,
    reason: String,
) -> Failure {
    Failure {
        anchor: anchor.map(str::to_owned),
        mailbox: Some(mailbox.upn.clone()),
        kind: kind.into(),
        reason,
    }
}
