//! Applying a guest plan: galbridge's own mail contacts of migrating people removed first, then removals (block
//! sign-in and hide, or delete), updates, adoptions, and invitations in chunks (each chunk's intents recorded
//! before its invitations), with at most `max_concurrency` writes at once. Each landed change is recorded as it
//! lands (`engine::records`). Last comes the GAL step: every guest waiting to be shown is shown with `Set-MailUser`
//! if Exchange knows it by now, else it waits for a later run (docs/microsoft-facts.md §5); this step never fails
//! a run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use futures::StreamExt;

use super::GuestUsers;
use crate::config::GuestUserOptions;
use crate::engine::diff::ManagedObject;
use crate::engine::entry::{Entry, Field};
use crate::engine::plan::{FieldChange, Plan, Removal, RemovalAction};
use crate::engine::ports::{GuestPatch, GuestUserTarget, PortError};
use crate::engine::records::Recorder;
use crate::engine::targets::RunContext;
use crate::report::{Failure, PlanCounts};
use crate::state::{LINK_SCOPE, ObjectRecord, StateStore};

/// The state scope holding the guests still to be shown in the GAL (target id per anchor).
pub const GAL_PENDING_SCOPE: &str = "guest-gal-pending";

/// The `reason` of a removal that is a mail contact replaced by a guest (`migrate_from_mail_contact`).
pub const MIGRATED: &str = "migrated_to_guest_user";

/// Whether a removal of the plan is a mail contact a migration removes (not a guest).
pub fn is_migration(removal: &Removal) -> bool {
    removal.reason == MIGRATED
}

impl GuestUsers {
    /// The applier over this target for one run (`options`: the link's, or a purge's that deletes everything).
    pub(super) fn applier<'a>(
        &'a self,
        run: &'a RunContext<'_>,
        options: &'a GuestUserOptions,
        managed: &'a BTreeMap<String, ManagedObject>,
    ) -> GuestApplier<'a> {
        GuestApplier {
            link: &run.link.name,
            target: self.port.as_ref(),
            store: run.store.as_ref(),
            options,
            managed,
            max_concurrency: run.link.max_concurrency,
            cancelled: run.cancelled.as_ref(),
        }
    }
}

/// Invitations per chunk (intents of a chunk are written in one batch before its invitations).
const CREATE_CHUNK: usize = 50;

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct GuestApplied {
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    /// Guests shown in the GAL by this run's GAL step, and those still waiting for Exchange.
    pub shown: u64,
    pub waiting: u64,
    /// The lease was lost or the budget spent before everything was written.
    pub unfinished: bool,
}

/// Applies guest plans to one target tenant.
pub struct GuestApplier<'a> {
    pub link: &'a str,
    pub target: &'a dyn GuestUserTarget,
    pub store: &'a dyn StateStore,
    pub options: &'a GuestUserOptions,
    pub managed: &'a BTreeMap<String, ManagedObject>,
    pub max_concurrency: usize,
    pub cancelled: &'a AtomicBool,
}

fn failure(anchor: &str, error: &PortError) -> Failure {
    Failure {
        anchor: Some(anchor.to_owned()),
        mailbox: None,
        kind: error.failure_kind().into(),
        reason: error.to_string(),
    }
}

fn managed(anchor: &str, target_id: &str, entry: &Entry, hidden: bool) -> ManagedObject {
    ManagedObject {
        anchor: anchor.to_owned(),
        target_id: target_id.to_owned(),
        name: entry.get(Field::DisplayName).to_owned(),
        hidden,
        pending: false,
        entry: entry.clone(),
    }
}

/// The PATCH of changed fields (`""` clears a field; the address is the invitation's and never patched).
fn fields_of(changes: &[FieldChange]) -> BTreeMap<Field, String> {
    changes
        .iter()
        .filter(|c| super::fields::graph_property(c.field).is_some())
        .map(|c| (c.field, c.new.clone()))
        .collect()
}

/// Runs `changes` with at most `n` in flight.
async fn bounded<F: std::future::Future>(changes: Vec<F>, n: usize) -> Vec<F::Output> {
    futures::stream::iter(changes)
        .buffer_unordered(n.max(1))
        .collect()
        .await
}

impl GuestApplier<'_> {
    fn stopped(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || crate::m365::budget::exhausted()
    }

    /// How many changes of a phase may start: none once the lease is lost or the run's budget spent.
    fn room(&self) -> usize {
        if self.stopped() { 0 } else { usize::MAX }
    }

    fn anchor_patch(&self, anchor: &str) -> Option<(u8, String)> {
        Some((self.options.anchor_attribute, anchor.to_owned()))
    }

    async fn remember_gal(&self, pending: &[(String, String)]) {
        if !self.options.show_in_gal || pending.is_empty() {
            return;
        }
        let records: Vec<ObjectRecord> = pending
            .iter()
            .map(|(anchor, id)| ObjectRecord {
                anchor: anchor.clone(),
                target_id: id.clone(),
                hash: String::new(),
                data: None,
                updated_at: Utc::now(),
            })
            .collect();
        for chunk in records.chunks(100) {
            if let Err(error) = self
                .store
                .put_objects(self.link, GAL_PENDING_SCOPE, chunk)
                .await
            {
                tracing::warn!(link = %self.link, %error, "Could not remember guests to show in the GAL.");
            }
        }
    }

    async fn forget_gal(&self, anchors: &[String]) {
        if anchors.is_empty() {
            return;
        }
        if let Err(error) = self
            .store
            .delete_objects(self.link, GAL_PENDING_SCOPE, anchors)
            .await
        {
            tracing::warn!(link = %self.link, %error, "Could not forget guests shown in the GAL.");
        }
    }

    /// Applies `plan`; the GAL step follows.
    pub async fn apply(&self, plan: &Plan) -> GuestApplied {
        let mut out = GuestApplied::default();
        // Conflicts need a human: reported (as the mail-contact target does) without failing the run.
        for conflict in &plan.conflicts {
            out.applied.conflicts += 1;
            out.failures.push(Failure {
                anchor: Some(conflict.anchor.clone()),
                mailbox: None,
                kind: conflict.kind.failure_kind().into(),
                reason: conflict.detail.clone(),
            });
        }
        let mut recorder = Recorder::new(self.store, self.link);
        let n = self.max_concurrency.max(1);

        // Migration: galbridge's own contact goes before its person is invited (one GAL entry at any moment).
        let results: Vec<_> = bounded(
            plan.removals
                .iter()
                .filter(|r| is_migration(r))
                .map(|removal| async move {
                    (
                        removal,
                        self.target.remove_mail_contact(&removal.target_id).await,
                    )
                })
                .collect(),
            n,
        )
        .await;
        let mut migrated_failed = std::collections::BTreeSet::new();
        for (removal, result) in results {
            match result {
                Ok(()) => out.applied.deletes += 1,
                Err(error) => {
                    migrated_failed.insert(removal.anchor.clone());
                    out.failures.push(failure(&removal.anchor, &error));
                }
            }
        }

        // Removals: delete, or block sign-in and hide.
        let results: Vec<_> = bounded(
            plan.removals
                .iter()
                .filter(|r| !is_migration(r))
                .take(self.room())
                .map(|removal| async move {
                    let result = match removal.action {
                        RemovalAction::Delete => self.target.delete(&removal.target_id).await,
                        RemovalAction::Hide => {
                            let patch = GuestPatch {
                                account_enabled: Some(false),
                                ..GuestPatch::default()
                            };
                            match self.target.update(&removal.target_id, &patch).await {
                                // Hidden too, when Exchange knows the guest; a guest it does not know is not in the GAL.
                                Ok(()) => self
                                    .target
                                    .set_hidden_in_gal(&removal.target_id, true)
                                    .await
                                    .map(|_| ()),
                                Err(error) => Err(error),
                            }
                        }
                    };
                    (removal, result)
                })
                .collect(),
            n,
        )
        .await;
        let mut gal_gone = Vec::new();
        for (removal, result) in results {
            match result {
                Ok(()) => {
                    gal_gone.push(removal.anchor.clone());
                    match removal.action {
                        RemovalAction::Delete => {
                            out.applied.deletes += 1;
                            recorder.forget(&removal.anchor).await;
                        }
                        RemovalAction::Hide => {
                            out.applied.hides += 1;
                            if let Some(old) = self.managed.get(&removal.anchor) {
                                let mut blocked = old.clone();
                                blocked.hidden = true;
                                blocked.target_id = removal.target_id.clone();
                                recorder.put(&blocked).await;
                            }
                        }
                    }
                }
                Err(PortError::NotFound { .. }) => {
                    gal_gone.push(removal.anchor.clone());
                    recorder.forget(&removal.anchor).await;
                }
                Err(error) => out.failures.push(failure(&removal.anchor, &error)),
            }
        }
        for anchor in &plan.forget {
            recorder.forget(anchor).await;
            gal_gone.push(anchor.clone());
        }
        self.forget_gal(&gal_gone).await;

        // Updates (changed fields only; sign-in enabled again for a person who came back). Whoever is to be shown
        // in the GAL is remembered before the write, so a run killed in between still shows them later.
        let back: Vec<(String, String)> = plan
            .updates
            .iter()
            .filter(|u| u.unhide)
            .map(|u| (u.anchor.clone(), u.target_id.clone()))
            .chain(
                plan.adoptions
                    .iter()
                    .map(|a| (a.anchor.clone(), a.target_id.clone())),
            )
            .collect();
        self.remember_gal(&back).await;
        let results: Vec<_> = bounded(
            plan.updates
                .iter()
                .take(self.room())
                .map(|update| async move {
                    let patch = GuestPatch {
                        fields: fields_of(&update.changes),
                        account_enabled: update.unhide.then_some(true),
                        ..GuestPatch::default()
                    };
                    let result = if patch.is_empty() {
                        Ok(())
                    } else {
                        self.target.update(&update.target_id, &patch).await
                    };
                    (update, result)
                })
                .collect(),
            n,
        )
        .await;
        for (update, result) in results {
            match result {
                Ok(()) => {
                    out.applied.updates += 1;
                    recorder
                        .put(&managed(
                            &update.anchor,
                            &update.target_id,
                            &update.entry,
                            false,
                        ))
                        .await;
                }
                Err(error) => out.failures.push(failure(&update.anchor, &error)),
            }
        }

        // Adoptions: the anchor, the changed fields and the user type, in one PATCH.
        let results: Vec<_> = bounded(
            plan.adoptions
                .iter()
                .take(self.room())
                .map(|adoption| async move {
                    let patch = GuestPatch {
                        anchor: self.anchor_patch(&adoption.anchor),
                        fields: fields_of(&adoption.changes),
                        user_type: Some(self.options.user_type.as_str().to_owned()),
                        account_enabled: None,
                    };
                    (
                        adoption,
                        self.target.update(&adoption.target_id, &patch).await,
                    )
                })
                .collect(),
            n,
        )
        .await;
        for (adoption, result) in results {
            match result {
                Ok(()) => {
                    out.applied.adoptions += 1;
                    recorder
                        .put(&managed(
                            &adoption.anchor,
                            &adoption.target_id,
                            &adoption.entry,
                            false,
                        ))
                        .await;
                }
                Err(error) => out.failures.push(failure(&adoption.anchor, &error)),
            }
        }
        recorder.flush().await;

        // Invitations, in chunks: intents first (a crash after an invitation finds our guest by its address and
        // takes it back: see `plan::check_creates`), then invite, then anchor and fields in one PATCH.
        let creates: Vec<_> = plan
            .creates
            .iter()
            .filter(|c| !migrated_failed.contains(&c.anchor))
            .collect();
        for chunk in creates.chunks(CREATE_CHUNK) {
            if self.stopped() {
                break;
            }
            for create in chunk {
                let mut intent = managed(&create.anchor, "", &create.entry, false);
                intent.pending = true;
                recorder.put(&intent).await;
            }
            recorder.flush().await;
            // The guest's id is not known before its invitation: the GAL step finds it in the record.
            let unknown: Vec<(String, String)> = chunk
                .iter()
                .map(|c| (c.anchor.clone(), String::new()))
                .collect();
            self.remember_gal(&unknown).await;
            if !recorder.errors.is_empty() {
                // Without the intents recorded, inviting could leave guests nobody remembers: stop here.
                break;
            }
            let results: Vec<_> = bounded(
                chunk
                    .iter()
                    .map(|create| async move {
                        let result = async {
                            let id = self
                                .target
                                .invite(&create.entry, &self.options.redirect_url)
                                .await?;
                            let patch = GuestPatch {
                                anchor: self.anchor_patch(&create.anchor),
                                fields: create
                                    .entry
                                    .fields
                                    .iter()
                                    .filter(|(f, v)| {
                                        super::fields::graph_property(**f).is_some()
                                            && !v.is_empty()
                                    })
                                    .map(|(f, v)| (*f, v.clone()))
                                    .collect(),
                                user_type: Some(self.options.user_type.as_str().to_owned()),
                                account_enabled: None,
                            };
                            self.target.update(&id, &patch).await?;
                            Ok::<String, PortError>(id)
                        }
                        .await;
                        (create, result)
                    })
                    .collect(),
                n,
            )
            .await;
            let mut shown = Vec::new();
            for (create, result) in results {
                match result {
                    Ok(id) => {
                        out.applied.creates += 1;
                        recorder
                            .put(&managed(&create.anchor, &id, &create.entry, false))
                            .await;
                        shown.push((create.anchor.clone(), id));
                    }
                    Err(error) => out.failures.push(failure(&create.anchor, &error)),
                }
            }
            recorder.flush().await;
            self.remember_gal(&shown).await;
        }
        for error in &recorder.errors {
            out.failures.push(Failure {
                anchor: None,
                mailbox: None,
                kind: "state_error".into(),
                reason: error.to_string(),
            });
        }
        self.show_in_gal(&mut out).await;
        out.unfinished = self.stopped();
        out
    }

    /// The GAL step: `Set-MailUser -HiddenFromAddressListsEnabled:$false` for each guest waiting to be shown; a
    /// guest Exchange does not know yet (replication after the invitation) waits for a later run.
    pub async fn show_in_gal(&self, out: &mut GuestApplied) {
        if !self.options.show_in_gal || self.stopped() {
            return;
        }
        let mut waiting = match self.store.list_objects(self.link, GAL_PENDING_SCOPE).await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(link = %self.link, %error, "Could not read the guests to show in the GAL.");
                return;
            }
        };
        // Guests remembered before their invitation: their id is in the link's record once the invitation landed.
        let unknown: Vec<String> = waiting
            .iter()
            .filter(|r| r.target_id.is_empty())
            .map(|r| r.anchor.clone())
            .collect();
        if !unknown.is_empty() {
            let records = match self
                .store
                .get_objects(self.link, LINK_SCOPE, &unknown)
                .await
            {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(link = %self.link, %error, "Could not read the guests to show in the GAL.");
                    return;
                }
            };
            let ids: BTreeMap<String, String> = records
                .into_iter()
                .map(|r| (r.anchor, r.target_id))
                .collect();
            let mut gone = Vec::new();
            for record in &mut waiting {
                if record.target_id.is_empty() {
                    match ids.get(&record.anchor) {
                        Some(id) => record.target_id = id.clone(),
                        None => gone.push(record.anchor.clone()),
                    }
                }
            }
            // An intent forgotten since (the person left before the invitation landed): nothing to show.
            self.forget_gal(&gone).await;
            waiting.retain(|r| !r.target_id.is_empty());
        }
        let results: Vec<_> = bounded(
            waiting
                .iter()
                .take(self.room())
                .map(|record| async move {
                    (
                        record,
                        self.target
                            .set_hidden_in_gal(&record.target_id, false)
                            .await,
                    )
                })
                .collect(),
            self.max_concurrency,
        )
        .await;
        let mut done = Vec::new();
        for (record, result) in results {
            match result {
                Ok(true) => {
                    out.shown += 1;
                    done.push(record.anchor.clone());
                }
                Ok(false) => out.waiting += 1,
                Err(error) => {
                    out.waiting += 1;
                    tracing::warn!(link = %self.link, anchor = %record.anchor, %error,
                        "Could not show a guest in the GAL; a later run tries again.");
                }
            }
        }
        if out.waiting > 0 {
            tracing::info!(link = %self.link, waiting = out.waiting,
                "Guests not known to Exchange yet are shown in the GAL by a later run.");
        }
        self.forget_gal(&done).await;
    }
}
