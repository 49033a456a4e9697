//! Applies a [`Plan`] to the target tenant's GAL as Exchange mail contacts, with bounded parallelism, recording each
//! landed change in the state store (batched) so a crash resumes without duplicates.
//!
//! Create = `New-MailContact` (name, address, names) → `Set-MailContact` (anchor in `CustomAttributeN`) →
//! `Set-Contact` (every other field). Crash-safety quirk (microsoft-apis.md §1): New-MailContact cannot set
//! `CustomAttributeN`, so a crash between New and Set would leave an unanchored contact nobody owns. Before each
//! create, an *intent* (a pending record with the intended name and address) is written; the next run resolves it
//! ([`MailContactApplier::resolve_intents`]): a contact with that address, unanchored and with exactly the intended
//! name, is ours and gets its anchor; otherwise the intent is dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use crate::engine::diff::{ManagedObject, TargetObject, field_changes};
use crate::engine::entry::{Entry, Field};
use crate::engine::names::suffixed_name;
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
        for chunk in plan.creates.chunks(CREATE_CHUNK) {
            if self.cancelled.load(Ordering::SeqCst) {
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
        let skipped =
            plan.creates.len() + plan.updates.len() + plan.adoptions.len() + plan.removals.len();
        let landed = result.applied.creates
            + result.applied.updates
            + result.applied.adoptions
            + result.applied.deletes
            + result.applied.hides;
        if self.cancelled.load(Ordering::SeqCst) && (skipped as u64) > landed {
            result.failures.push(Failure {
                anchor: None,
                mailbox: None,
                kind: "lease_lost".into(),
                reason: "the link's lease was lost during the run; the remaining changes were not applied".into(),
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
                Landed::Skipped => continue,
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
        tracing::warn!(link = %self.link, anchor = %anchor, error = %error, "Mail contact {action} failed.");
        Landed::Failed(Failure {
            anchor: Some(anchor.to_owned()),
            mailbox: None,
            kind: error.failure_kind().to_owned(),
            reason: format!("{action}: {error}"),
        })
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
            Err(PortError::AddressInUse { address, owner }) => {
                return self.address_in_use(create, &address, &owner).await;
            }
            Err(error) => {
                // The intent stays pending only if the contact might exist; a clean refusal drops it.
                return match error {
                    PortError::NameInUse { .. } => {
                        let failure = self.failure(&create.anchor, &error, "create");
                        let _ = self
                            .store
                            .delete_objects(
                                self.link,
                                crate::state::LINK_SCOPE,
                                std::slice::from_ref(&create.anchor),
                            )
                            .await;
                        failure
                    }
                    error => self.failure(&create.anchor, &error, "create"),
                };
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

    /// `New-MailContact` refused the address: adopt it (opt-in, unanchored mail contact), re-take our own anchored
    /// contact (a crash lost its record), or report the conflict.
    async fn address_in_use(&self, create: &Create, address: &str, owner: &str) -> Landed {
        let existing = match self
            .target
            .find_by_address(address, self.options.anchor_attribute)
            .await
        {
            Ok(existing) => existing,
            Err(error) => return self.failure(&create.anchor, &error, "address lookup"),
        };
        match existing {
            Some(object) if object.anchor.as_deref() == Some(create.anchor.as_str()) => {
                self.retake(create, object, Kind::Create).await
            }
            Some(object) if object.anchor.is_none() && self.options.policy.adopt_existing => {
                self.retake(create, object, Kind::Adopt).await
            }
            _ => {
                let _ = self
                    .store
                    .delete_objects(
                        self.link,
                        crate::state::LINK_SCOPE,
                        std::slice::from_ref(&create.anchor),
                    )
                    .await;
                let owner = match existing {
                    Some(object) if object.anchor.is_none() => {
                        format!(
                            "unanchored contact {:?} (set adopt_existing to take it over)",
                            object.name
                        )
                    }
                    Some(object) => format!("contact {:?} managed by another link", object.name),
                    None => owner.to_owned(),
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

    /// Resolves the intents a crashed run left behind (see the module docs). Returns how many contacts were claimed.
    pub async fn resolve_intents(
        &self,
        managed: &mut BTreeMap<String, ManagedObject>,
    ) -> Result<u64, PortError> {
        let pending: Vec<ManagedObject> = managed.values().filter(|m| m.pending).cloned().collect();
        let mut recorder = Recorder::new(self.store, self.link);
        let mut claimed = 0;
        for intent in pending {
            let address = intent.entry.get(Field::Email).to_owned();
            let found = self
                .target
                .find_by_address(&address, self.options.anchor_attribute)
                .await?;
            let ours = match found {
                Some(object) if object.anchor.as_deref() == Some(intent.anchor.as_str()) => {
                    Some(object)
                }
                Some(object) if object.anchor.is_none() && object.name == intent.name => {
                    let settings = MailContactSettings {
                        anchor: Some((self.options.anchor_attribute, intent.anchor.clone())),
                        ..Default::default()
                    };
                    self.target.set_mail_contact(&object.id, &settings).await?;
                    Some(object)
                }
                _ => None,
            };
            match ours {
                Some(object) => {
                    claimed += 1;
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
        match recorder.errors.into_iter().next() {
            Some(error) => Err(PortError::Failed {
                service: "state".into(),
                message: error.to_string(),
            }),
            None => Ok(claimed),
        }
    }
}

/// Runs a change unless the lease was lost before it started.
async fn unless_cancelled<F: Future<Output = Landed>>(cancelled: &AtomicBool, change: F) -> Landed {
    if cancelled.load(Ordering::SeqCst) {
        Landed::Skipped
    } else {
        change.await
    }
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
