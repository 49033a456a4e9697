//! Applies a [`Plan`] to the target tenant's GAL as Exchange mail contacts, with bounded parallelism, recording each
//! landed change in the state store (batched) so a crash resumes without duplicates.
//!
//! Create = `New-MailContact` (name, address, names) → `Set-MailContact` (anchor in `CustomAttributeN`) →
//! `Set-Contact` (every other field). Crash-safety quirk (docs/microsoft-facts.md §1): New-MailContact cannot set
//! `CustomAttributeN`, so a crash between New and Set would leave an unanchored contact nobody owns. Before each
//! create, an *intent* (a pending record with the intended name and address) is written; the next run resolves it
//! ([`MailContactApplier::resolve_intents`]): a contact with that address, unanchored and carrying one of the names
//! galbridge gives that person ([`is_our_name`]), is ours and gets its anchor; a contact that is not there was not
//! created (the intent is dropped and the person created again); a lookup that fails keeps the intent for the next
//! run and holds back only that person's create. Exchange's replication delay means a contact created moments ago
//! may be invisible to `Get-*` while `New-MailContact` already refuses its address: such a create keeps its intent
//! and is claimed by a later run, never reported as a conflict with ourselves.
//!
//! One object's failure is that object's: it is reported and retried by the next run, never the run's. The run's
//! time budget (`service.run_budget`) stops new changes from starting once spent; the rest waits for the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use crate::engine::diff::{ManagedObject, TargetObject, field_changes};
use crate::engine::entry::{Entry, Field};
use crate::engine::names::{base_name, suffixed_name};
use crate::engine::plan::{Adoption, Create, Plan, Removal, RemovalAction, Update};
use crate::engine::ports::{MailContactSettings, MailContactTarget, PortError};
use crate::engine::records::Recorder;
use crate::engine::spec::MailContactOptions;
use crate::report::{Failure, PlanCounts};
use crate::state::StateStore;

/// Creates between two intent writes.
const CREATE_CHUNK: usize = 100;

/// Fields written by `Set-MailContact` rather than `Set-Contact`.
pub fn is_mail_contact_field(field: Field) -> bool {
    matches!(field, Field::DisplayName | Field::Email)
}

/// Fields a mail contact cannot hold (Exchange `Manager` wants a recipient, `EmailAddresses` needs the primary too).
pub fn is_unsupported_field(field: Field) -> bool {
    matches!(field, Field::ManagerName | Field::OtherEmails)
}

/// What applying a plan achieved.
#[derive(Debug, Clone, Default)]
pub struct ApplyResult {
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    /// Changes never started (the lease was lost or the budget spent first).
    pub not_started: u64,
}

impl ApplyResult {
    /// Failures that are not conflicts (those make the run partially failed).
    pub fn hard_failures(&self) -> usize {
        self.failures
            .iter()
            .filter(|f| !f.kind.starts_with("conflict"))
            .count()
    }
}

enum Landed {
    /// Not started: the lease was lost.
    Skipped,
    Put(ManagedObject, Kind),
    Forget(String, Kind),
    Failed(Failure),
}

#[derive(Clone, Copy)]
enum Kind {
    Create,
    Update,
    Delete,
    Hide,
    Adopt,
    Conflict,
    Quiet,
}

/// Applies plans to mail contacts.
pub struct MailContactApplier<'a> {
    pub link: &'a str,
    pub target: &'a dyn MailContactTarget,
    pub store: &'a dyn StateStore,
    pub options: &'a MailContactOptions,
    /// The managed objects as loaded at the start of the run.
    pub managed: &'a BTreeMap<String, ManagedObject>,
    pub max_concurrency: usize,
    /// Set when the lease was lost: stop starting new changes.
    pub cancelled: &'a AtomicBool,
    /// Anchors whose create intent, left by an earlier run, found no contact: a contact of theirs that shows up
    /// now (Exchange's replication caught up) is the one that run made.
    pub prior_intents: &'a BTreeSet<String>,
}

/// What resolving the intents of an interrupted run found.
#[derive(Debug, Default)]
pub struct IntentResolution {
    /// Contacts claimed (found with our anchor, or unanchored with our name, and anchored now).
    pub claimed: u64,
    /// Intents whose contact was not found: not created, so created again (the intent stays as evidence).
    pub not_found: BTreeSet<String>,
    /// Intents that could not be resolved this run (the lookup failed): their creates wait for the next run.
    pub held_back: BTreeSet<String>,
    /// The failures of those lookups, one per person.
    pub failures: Vec<Failure>,
}

impl MailContactApplier<'_> {
    /// Applies the plan: removals first (they free names and addresses), then updates, adoptions and creates.
    pub async fn apply(&self, plan: &Plan) -> ApplyResult {
        let mut result = ApplyResult {
            applied: PlanCounts {
                unchanged: plan.unchanged,
                ..PlanCounts::default()
            },
            ..Default::default()
        };
        for conflict in &plan.conflicts {
            result.applied.conflicts += 1;
            result.failures.push(Failure {
                anchor: Some(conflict.anchor.clone()),
                mailbox: None,
                kind: conflict.kind.failure_kind().to_owned(),
                reason: conflict.detail.clone(),
            });
        }
        let mut recorder = Recorder::new(self.store, self.link);
        for anchor in &plan.forget {
            recorder.forget(anchor).await;
        }
        // Futures are collected before streaming them: a closure inside the stream type trips rustc's
        // "FnOnce is not general enough" when the run's future must be `Send`.
        let removals: Vec<_> = plan.removals.iter().map(|r| self.remove(r)).collect();
        self.drain(removals, &mut recorder, &mut result).await;
        let updates: Vec<_> = plan.updates.iter().map(|u| self.update(u)).collect();
        self.drain(updates, &mut recorder, &mut result).await;
        let adoptions: Vec<_> = plan.adoptions.iter().map(|a| self.adopt(a)).collect();
        self.drain(adoptions, &mut recorder, &mut result).await;
        for (index, chunk) in plan.creates.chunks(CREATE_CHUNK).enumerate() {
            if self.cancelled.load(Ordering::SeqCst) || crate::m365::budget::exhausted() {
                result.not_started += (plan.creates.len() - index * CREATE_CHUNK) as u64;
                break;
            }
            // Intents first (one batched write), then the creates of the chunk.
            for create in chunk {
                recorder.put(&intent(create)).await;
            }
            recorder.flush().await;
            let creates: Vec<_> = chunk.iter().map(|c| self.create(c)).collect();
            self.drain(creates, &mut recorder, &mut result).await;
        }
        recorder.flush().await;
        for error in recorder.errors {
            result.failures.push(Failure {
                anchor: None,
                mailbox: None,
                kind: "state_write".into(),
                reason: format!("a landed change was not recorded: {error}"),
            });
        }
        if self.cancelled.load(Ordering::SeqCst) && result.not_started > 0 {
            result.failures.push(Failure {
                anchor: None,
                mailbox: None,
                kind: "lease_lost".into(),
                reason: "the link's lease was lost during the run; the remaining changes were not applied".into(),
            });
        } else if result.not_started > 0 {
            result.failures.push(Failure {
                anchor: None,
                mailbox: None,
                kind: "budget_spent".into(),
                reason: format!(
                    "the run's time budget (service.run_budget) was spent with {} change(s) not started; the next run carries on",
                    result.not_started
                ),
            });
        }
        result
    }

    async fn drain<F>(&self, changes: Vec<F>, recorder: &mut Recorder<'_>, result: &mut ApplyResult)
    where
        F: Future<Output = Landed>,
    {
        let guarded: Vec<_> = changes
            .into_iter()
            .map(|change| unless_cancelled(self.cancelled, change))
            .collect();
        let mut landed = std::pin::pin!(
            futures::stream::iter(guarded).buffer_unordered(self.max_concurrency.max(1))
        );
        while let Some(outcome) = landed.next().await {
            let kind = match outcome {
                Landed::Skipped => {
                    result.not_started += 1;
                    continue;
                }
                Landed::Put(object, kind) => {
                    recorder.put(&object).await;
                    kind
                }
                Landed::Forget(anchor, kind) => {
                    recorder.forget(&anchor).await;
                    kind
                }
                Landed::Failed(failure) => {
                    let conflict = failure.kind.starts_with("conflict");
                    result.failures.push(failure);
                    if conflict {
                        Kind::Conflict
                    } else {
                        Kind::Quiet
                    }
                }
            };
            let counts = &mut result.applied;
            match kind {
                Kind::Create => counts.creates += 1,
                Kind::Update => counts.updates += 1,
                Kind::Delete => counts.deletes += 1,
                Kind::Hide => counts.hides += 1,
                Kind::Adopt => counts.adoptions += 1,
                Kind::Conflict => counts.conflicts += 1,
                Kind::Quiet => {}
            }
        }
    }

    fn failure(&self, anchor: &str, error: &PortError, action: &str) -> Landed {
        Landed::Failed(self.object_failure(anchor, error, action))
    }

    /// One object's failure, logged, as the report lists it.
    fn object_failure(&self, anchor: &str, error: &PortError, action: &str) -> Failure {
        tracing::warn!(link = %self.link, anchor = %anchor, error = %error, "Mail contact {action} failed.");
        Failure {
            anchor: Some(anchor.to_owned()),
            mailbox: None,
            kind: error.failure_kind().to_owned(),
            reason: format!("{action}: {error}"),
        }
    }

    async fn remove(&self, removal: &Removal) -> Landed {
        match removal.action {
            RemovalAction::Delete => match self.target.remove(&removal.target_id).await {
                Ok(()) | Err(PortError::NotFound { .. }) => {
                    Landed::Forget(removal.anchor.clone(), Kind::Delete)
                }
                Err(error) => self.failure(&removal.anchor, &error, "delete"),
            },
            RemovalAction::Hide => {
                let settings = MailContactSettings {
                    hidden: Some(true),
                    ..Default::default()
                };
                match self
                    .target
                    .set_mail_contact(&removal.target_id, &settings)
                    .await
                {
                    Ok(()) => match self.managed.get(&removal.anchor) {
                        Some(object) => {
                            let mut object = object.clone();
                            object.hidden = true;
                            object.target_id = removal.target_id.clone();
                            Landed::Put(object, Kind::Hide)
                        }
                        // An orphan (anchored, no record): hidden and left unrecorded; the next full run sees it hidden.
                        None => Landed::Forget(removal.anchor.clone(), Kind::Hide),
                    },
                    Err(PortError::NotFound { .. }) => {
                        Landed::Forget(removal.anchor.clone(), Kind::Hide)
                    }
                    Err(error) => self.failure(&removal.anchor, &error, "hide"),
                }
            }
        }
    }

    async fn update(&self, update: &Update) -> Landed {
        let mut settings = MailContactSettings::default();
        if let Some((_, new)) = &update.rename {
            settings.name = Some(new.clone());
        }
        if update.unhide {
            settings.hidden = Some(false);
        }
        let mut contact_fields = BTreeMap::new();
        for change in &update.changes {
            match change.field {
                Field::DisplayName => settings.display_name = Some(change.new.clone()),
                Field::Email => settings.external_address = Some(change.new.clone()),
                field if is_unsupported_field(field) => {}
                field => {
                    contact_fields.insert(field, change.new.clone());
                }
            }
        }
        if let Err(error) = self
            .write(&update.target_id, &settings, &contact_fields)
            .await
        {
            return self.failure(&update.anchor, &error, "update");
        }
        Landed::Put(
            ManagedObject {
                anchor: update.anchor.clone(),
                target_id: update.target_id.clone(),
                name: update.name.clone(),
                hidden: false,
                pending: false,
                entry: update.entry.clone(),
            },
            Kind::Update,
        )
    }

    async fn adopt(&self, adoption: &Adoption) -> Landed {
        match self
            .take_over(&adoption.target_id, &adoption.entry, &adoption.changes)
            .await
        {
            Ok(()) => Landed::Put(
                ManagedObject {
                    anchor: adoption.anchor.clone(),
                    target_id: adoption.target_id.clone(),
                    name: adoption.name.clone(),
                    hidden: false,
                    pending: false,
                    entry: adoption.entry.clone(),
                },
                Kind::Adopt,
            ),
            Err(error) => self.failure(&adoption.anchor, &error, "adoption"),
        }
    }

    /// Writes the anchor and the changed fields onto an existing contact.
    async fn take_over(
        &self,
        id: &str,
        entry: &Entry,
        changes: &[crate::engine::plan::FieldChange],
    ) -> Result<(), PortError> {
        let mut settings = MailContactSettings {
            anchor: Some((self.options.anchor_attribute, entry.anchor.clone())),
            hidden: Some(false),
            ..Default::default()
        };
        let mut contact_fields = BTreeMap::new();
        for change in changes {
            match change.field {
                Field::DisplayName => settings.display_name = Some(change.new.clone()),
                Field::Email => {}
                field if is_unsupported_field(field) => {}
                field => {
                    contact_fields.insert(field, change.new.clone());
                }
            }
        }
        self.write(id, &settings, &contact_fields).await
    }

    async fn write(
        &self,
        id: &str,
        settings: &MailContactSettings,
        contact_fields: &BTreeMap<Field, String>,
    ) -> Result<(), PortError> {
        if !settings.is_empty() {
            self.target.set_mail_contact(id, settings).await?;
        }
        if !contact_fields.is_empty() {
            self.target.set_contact(id, contact_fields).await?;
        }
        Ok(())
    }

    async fn create(&self, create: &Create) -> Landed {
        let mut name = create.name.clone();
        let mut created = self.target.create(&name, &create.entry).await;
        if let Err(PortError::NameInUse { .. }) = created {
            // The name belongs to a recipient the plan could not see (a mailbox, a group): take the stable suffix.
            name = suffixed_name(&create.entry, 6);
            let mut renamed = intent(create);
            renamed.name = name.clone();
            if let Err(error) = self
                .store
                .put_objects(
                    self.link,
                    crate::state::LINK_SCOPE,
                    &[crate::engine::records::to_record(&renamed)],
                )
                .await
            {
                return self.failure(
                    &create.anchor,
                    &PortError::Failed {
                        service: "state".into(),
                        message: error.to_string(),
                    },
                    "create",
                );
            }
            created = self.target.create(&name, &create.entry).await;
        }
        let id = match created {
            Ok(id) => id,
            Err(PortError::AddressInUse { address, .. }) => {
                let address = if address.is_empty() {
                    create.entry.get(Field::Email).to_owned()
                } else {
                    address
                };
                return self.address_in_use(create, &address).await;
            }
            Err(PortError::NameInUse { .. }) if self.prior_intents.contains(&create.anchor) => {
                // Both of our names are taken and an earlier create of this person may not be visible yet: keep
                // the intent; the next run claims the contact or creates it.
                return self.not_yet_visible(create, "its name");
            }
            Err(error) => {
                // The intent stays pending only if the contact might exist; a clean refusal drops it.
                if matches!(error, PortError::NameInUse { .. }) {
                    self.drop_intent(&create.anchor).await;
                }
                return self.failure(&create.anchor, &error, "create");
            }
        };
        let rest: BTreeMap<Field, String> = create
            .entry
            .non_blank()
            .filter(|(field, _)| !is_mail_contact_field(*field) && !is_unsupported_field(*field))
            .map(|(field, value)| (field, value.to_owned()))
            .collect();
        let settings = MailContactSettings {
            anchor: Some((self.options.anchor_attribute, create.anchor.clone())),
            ..Default::default()
        };
        if let Err(error) = self.write(&id, &settings, &rest).await {
            // The contact exists, maybe unanchored: the pending intent lets the next run claim it.
            return self.failure(&create.anchor, &error, "create (anchor and fields)");
        }
        Landed::Put(
            ManagedObject {
                anchor: create.anchor.clone(),
                target_id: id,
                name,
                hidden: false,
                pending: false,
                entry: create.entry.clone(),
            },
            Kind::Create,
        )
    }

    /// `New-MailContact` refused the address: re-take our own anchored contact (a crash lost its record), claim the
    /// unanchored contact an earlier interrupted create made, adopt an unanchored one (opt-in), wait for one Exchange
    /// does not show yet, or report the conflict.
    async fn address_in_use(&self, create: &Create, address: &str) -> Landed {
        let existing = match self
            .target
            .find_by_address(address, self.options.anchor_attribute)
            .await
        {
            Ok(existing) => existing,
            // The intent stays: the next run looks again.
            Err(error) => return self.failure(&create.anchor, &error, "address lookup"),
        };
        match existing {
            Some(object) if object.anchor.as_deref() == Some(create.anchor.as_str()) => {
                self.retake(create, object, Kind::Create).await
            }
            Some(object)
                if object.anchor.is_none()
                    && self.prior_intents.contains(&create.anchor)
                    && is_our_name(&object.name, &create.entry) =>
            {
                self.retake(create, object, Kind::Create).await
            }
            Some(object) if object.anchor.is_none() && self.options.policy.adopt_existing => {
                self.retake(create, object, Kind::Adopt).await
            }
            // No mail contact holds it: another kind of recipient (a mailbox, a group) does, which is a conflict;
            // or nobody visible does: a contact created moments ago that `Get-*` does not see yet (replication),
            // not a conflict, and the intent lets the next run claim it.
            None => match self.target.recipient_holding(address).await {
                Ok(Some(owner)) => {
                    self.drop_intent(&create.anchor).await;
                    Landed::Failed(Failure {
                        anchor: Some(create.anchor.clone()),
                        mailbox: None,
                        kind: "conflict_address".into(),
                        reason: format!("{address} is already used by {owner}"),
                    })
                }
                Ok(None) => self.not_yet_visible(create, "its address"),
                Err(error) => self.failure(&create.anchor, &error, "address lookup"),
            },
            Some(object) => {
                self.drop_intent(&create.anchor).await;
                let owner = if object.anchor.is_none() {
                    format!(
                        "unanchored contact {:?} (set adopt_existing to take it over)",
                        object.name
                    )
                } else {
                    format!("contact {:?} managed by another link", object.name)
                };
                Landed::Failed(Failure {
                    anchor: Some(create.anchor.clone()),
                    mailbox: None,
                    kind: "conflict_address".into(),
                    reason: format!("{address} is already used by {owner}"),
                })
            }
        }
    }

    /// A create refused because of an object Exchange does not show yet: reported as this person's failure (retried
    /// next run), with the intent kept so that run can claim the contact.
    fn not_yet_visible(&self, create: &Create, what: &str) -> Landed {
        tracing::info!(link = %self.link, anchor = %create.anchor, "Create refused for {what}, but no such recipient is visible yet; retrying next run.");
        Landed::Failed(Failure {
            anchor: Some(create.anchor.clone()),
            mailbox: None,
            kind: "not_yet_visible".into(),
            reason: format!(
                "Exchange refused {what} but shows no recipient holding it yet (replication delay); the next run claims or creates the contact"
            ),
        })
    }

    async fn drop_intent(&self, anchor: &str) {
        if let Err(error) = self
            .store
            .delete_objects(
                self.link,
                crate::state::LINK_SCOPE,
                std::slice::from_ref(&anchor.to_owned()),
            )
            .await
        {
            tracing::warn!(link = %self.link, anchor = %anchor, error = %error, "Dropping a create intent failed; the next run resolves it.");
        }
    }

    async fn retake(&self, create: &Create, object: TargetObject, kind: Kind) -> Landed {
        let changes = field_changes(&object.fields, &create.entry);
        match self.take_over(&object.id, &create.entry, &changes).await {
            Ok(()) => Landed::Put(
                ManagedObject {
                    anchor: create.anchor.clone(),
                    target_id: object.id,
                    name: object.name,
                    hidden: false,
                    pending: false,
                    entry: create.entry.clone(),
                },
                kind,
            ),
            Err(error) => self.failure(&create.anchor, &error, "take over"),
        }
    }

    /// Resolves the intents an interrupted run left behind (see the module docs). Never fails the run: a lookup that
    /// fails is that person's failure, and their create waits for the next run.
    pub async fn resolve_intents(
        &self,
        managed: &mut BTreeMap<String, ManagedObject>,
    ) -> IntentResolution {
        let pending: Vec<ManagedObject> = managed.values().filter(|m| m.pending).cloned().collect();
        let mut recorder = Recorder::new(self.store, self.link);
        let mut resolution = IntentResolution::default();
        for intent in pending {
            if crate::m365::budget::exhausted() {
                resolution.held_back.insert(intent.anchor.clone());
                continue;
            }
            let address = intent.entry.get(Field::Email).to_owned();
            let found = match self
                .target
                .find_by_address(&address, self.options.anchor_attribute)
                .await
            {
                Ok(found) => found,
                Err(error) => {
                    resolution.held_back.insert(intent.anchor.clone());
                    resolution.failures.push(self.object_failure(
                        &intent.anchor,
                        &error,
                        "resolving an interrupted create",
                    ));
                    continue;
                }
            };
            let ours = match found {
                Some(object) if object.anchor.as_deref() == Some(intent.anchor.as_str()) => {
                    Some(object)
                }
                Some(object)
                    if object.anchor.is_none()
                        && (object.name == intent.name
                            || is_our_name(&object.name, &intent.entry)) =>
                {
                    let settings = MailContactSettings {
                        anchor: Some((self.options.anchor_attribute, intent.anchor.clone())),
                        ..Default::default()
                    };
                    if let Err(error) = self.target.set_mail_contact(&object.id, &settings).await {
                        resolution.held_back.insert(intent.anchor.clone());
                        resolution.failures.push(self.object_failure(
                            &intent.anchor,
                            &error,
                            "claiming an interrupted create",
                        ));
                        continue;
                    }
                    Some(object)
                }
                None => {
                    // Not created (or not visible yet): create it again; the intent stays as evidence.
                    resolution.not_found.insert(intent.anchor.clone());
                    continue;
                }
                // Someone else's contact holds the address: the create reports the conflict.
                Some(_) => None,
            };
            match ours {
                Some(object) => {
                    resolution.claimed += 1;
                    // Remember what the contact holds now; the diff brings the rest of the fields.
                    let claimed_object = ManagedObject {
                        anchor: intent.anchor.clone(),
                        target_id: object.id.clone(),
                        name: object.name.clone(),
                        hidden: object.hidden,
                        pending: false,
                        entry: Entry {
                            anchor: intent.anchor.clone(),
                            fields: object.fields.clone(),
                        },
                    };
                    recorder.put(&claimed_object).await;
                    managed.insert(intent.anchor.clone(), claimed_object);
                }
                None => {
                    recorder.forget(&intent.anchor).await;
                    managed.remove(&intent.anchor);
                }
            }
        }
        recorder.flush().await;
        for error in recorder.errors {
            resolution.failures.push(Failure {
                anchor: None,
                mailbox: None,
                kind: "state_write".into(),
                reason: format!("a resolved create intent was not recorded: {error}"),
            });
        }
        resolution
    }
}

/// Runs a change unless the lease was lost, or the run's time budget spent, before it started.
async fn unless_cancelled<F: Future<Output = Landed>>(cancelled: &AtomicBool, change: F) -> Landed {
    if cancelled.load(Ordering::SeqCst) || crate::m365::budget::exhausted() {
        Landed::Skipped
    } else {
        change.await
    }
}

/// Whether `name` is one galbridge gives the person of `entry` (the plain name or a stable suffixed one, see
/// `engine::names`): with an intent for that person, an unanchored contact at their address with such a name is
/// the one an interrupted create made.
pub fn is_our_name(name: &str, entry: &Entry) -> bool {
    let name = name.trim();
    name.eq_ignore_ascii_case(&base_name(entry))
        || [6, 10, 16, 32]
            .into_iter()
            .any(|hex_len| name.eq_ignore_ascii_case(&suffixed_name(entry, hex_len)))
}

/// The pending record written before `New-MailContact`.
fn intent(create: &Create) -> ManagedObject {
    ManagedObject {
        anchor: create.anchor.clone(),
        target_id: String::new(),
        name: create.name.clone(),
        hidden: false,
        pending: true,
        entry: create.entry.clone(),
    }
}
