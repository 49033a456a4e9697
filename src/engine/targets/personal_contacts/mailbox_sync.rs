//! One mailbox of a `personal_contacts` run.
//!
//! - **Full** (first time, periodic reconcile, after an unfinished run): find the folder (by stored id even if the
//!   owner renamed it, else by name, else create it), list its contacts with the anchor property expanded, and bring
//!   them to the desired list: missing managed contacts are created again, changed ones patched, duplicates of one
//!   anchor and contacts of people no longer in scope deleted; unanchored contacts are never touched except when the
//!   link opts in to adopting one with the same address. Anchored contacts of other sources are left alone.
//! - **Incremental**: only the people that changed in this run; each costs one write per mailbox (create, patch or
//!   delete) computed from the mailbox's records, with no read of the mailbox.
//!
//! Writes go through `$batch` (20 per batch, one batch in flight per mailbox, so Outlook's 4 concurrent requests per
//! mailbox hold; the m365 batch executor retries throttled inner requests after their Retry-After). Photos follow
//! in a second pass: a new contact's id is only known once its create answered (a `$batch` request cannot use
//! another's result).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::contact::{
    CONTACT_PROPERTIES, adoption_patch, anchor_property_id, create_body, patch_for_current,
    patch_for_written, primary_address,
};
use super::mailboxes::MailboxRef;
use super::photos::PhotoCache;
use super::records::{ContactRecord, MailboxChanges, MailboxState, load_mailbox, save_mailbox};
use super::spec::{OnPersonGone, PhonesTarget};
use crate::m365::batch::{BatchRequest, BatchResponse, MAX_BATCH_SIZE};
use crate::m365::mailbox::extended_property_value;
use crate::m365::{GraphClient, GraphError};
use crate::report::{Failure, PlanCounts};
use crate::state::StateStore;

/// Photo uploads per `$batch` (base64 bodies: keep batches well under Graph's request size limit).
const PHOTOS_PER_BATCH: usize = 4;

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

/// What a run fans out to every mailbox.
pub struct Fanout<'a> {
    pub link: &'a str,
    pub graph: &'a GraphClient,
    pub store: &'a dyn StateStore,
    pub target: &'a PhonesTarget,
    pub fill_blank: &'a BTreeSet<&'static str>,
    pub desired: &'a BTreeMap<String, Desired>,
    /// People whose entry or photo changed in this run (incremental mailboxes look at these only).
    pub changed: &'a BTreeSet<String>,
    /// People gone from the source whose contacts must stay for now (quarantine).
    pub held: &'a BTreeSet<String>,
    /// `galbridge:{sourceTenantId}:`: anchored contacts with it belong to this link's source.
    pub anchor_prefix: &'a str,
    pub photos: Option<&'a PhotoCache>,
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

enum Op {
    Create {
        anchor: String,
        body: Value,
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

struct MailboxRun<'f, 'a> {
    fanout: &'f Fanout<'a>,
    mailbox: &'f MailboxRef,
    state: MailboxState,
    changes: MailboxChanges,
    outcome: MailboxOutcome,
    photo_queue: Vec<(String, String)>,
}

impl Fanout<'_> {
    /// Syncs one mailbox (`full`: reconcile the folder; else the changed people only).
    pub async fn sync(&self, mailbox: &MailboxRef, full: bool) -> MailboxOutcome {
        let state = match load_mailbox(self.store, self.link, &mailbox.id).await {
            Ok(state) => state,
            Err(error) => {
                let mut outcome = MailboxOutcome::default();
                outcome
                    .failures
                    .push(failure(mailbox, None, "state_error", error.to_string()));
                return outcome;
            }
        };
        let full = full || state.folder_id.is_none();
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
        let planned = if full {
            run.plan_full().await
        } else {
            Ok(run.plan_incremental())
        };
        let result = match planned {
            Ok(ops) => run.execute(ops).await,
            Err(error) => Err(error),
        };
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
            && let Err(error) = save_mailbox(self.store, self.link, &mailbox.id, &run.changes).await
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

impl Fanout<'_> {
    /// Deletes every recorded contact of a mailbox leaving the selection; returns how many went.
    pub async fn remove_all(&self, mailbox: &str, state: &MailboxState) -> Result<u64, Failure> {
        let as_failure = |kind: &str, reason: String| Failure {
            anchor: None,
            mailbox: Some(mailbox.to_owned()),
            kind: kind.into(),
            reason,
        };
        let requests: Vec<BatchRequest> = state
            .contacts
            .values()
            .enumerate()
            .map(|(index, record)| {
                BatchRequest::delete_contact(index.to_string(), mailbox, &record.contact_id)
            })
            .collect();
        let answers = match self.graph.batch(Some(mailbox), requests).await {
            Ok(answers) => answers,
            Err(GraphError::MailboxNotEnabledForRest { .. }) => {
                return Err(as_failure(
                    "mailbox_not_rest_enabled",
                    "left the selection but is not enabled for REST: its contacts stay".into(),
                ));
            }
            Err(error) => return Err(as_failure("graph_error", error.to_string())),
        };
        let mut removed = 0;
        for answer in &answers {
            if answer.is_success() || answer.status == 404 {
                removed += 1;
            } else if answer.is_mailbox_not_enabled() {
                return Err(as_failure(
                    "mailbox_not_rest_enabled",
                    "left the selection but is not enabled for REST: its contacts stay".into(),
                ));
            } else {
                return Err(as_failure(
                    "graph_error",
                    format!(
                        "removing the contacts of a mailbox that left: HTTP {}",
                        answer.status
                    ),
                ));
            }
        }
        Ok(removed)
    }
}

impl MailboxRun<'_, '_> {
    fn categories(&self) -> &[String] {
        &self.fanout.target.categories
    }

    /// The folder's id (`""`: the default Contacts folder), created if missing.
    async fn ensure_folder(&mut self) -> Result<String, GraphError> {
        let graph = self.fanout.graph;
        let mailbox = &self.mailbox.id;
        let Some(name) = &self.fanout.target.folder else {
            // Probe the mailbox so a mailbox without REST is found before anything else.
            graph.contact_folders(mailbox).await?;
            return Ok(String::new());
        };
        if let Some(stored) = self.state.folder_id.as_deref().filter(|id| !id.is_empty())
            && let Some(folder) = graph.get_contact_folder(mailbox, stored).await?
        {
            // Found again by id, whatever the owner renamed it to.
            return Ok(id_of(&folder).unwrap_or(stored).to_owned());
        }
        let folders = graph.contact_folders(mailbox).await?;
        if let Some(existing) = folders.iter().find(|folder| {
            folder
                .get("displayName")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }) && let Some(id) = id_of(existing)
        {
            return Ok(id.to_owned());
        }
        let created = graph.create_contact_folder(mailbox, None, name).await?;
        id_of(&created)
            .map(str::to_owned)
            .ok_or_else(|| GraphError::Decode {
                path: "contactFolders".into(),
                message: "created folder without id".into(),
            })
    }

    fn folder(&self) -> Option<&str> {
        self.state.folder_id.as_deref().filter(|id| !id.is_empty())
    }

    async fn plan_full(&mut self) -> Result<Vec<Op>, GraphError> {
        let folder_id = self.ensure_folder().await?;
        if self.state.folder_id.as_deref() != Some(folder_id.as_str()) {
            self.changes.folder_id = Some(folder_id.clone());
            self.state.folder_id = Some(folder_id);
        }
        let property_id = anchor_property_id();
        let listed = self
            .fanout
            .graph
            .folder_contacts(
                &self.mailbox.id,
                self.folder(),
                CONTACT_PROPERTIES,
                Some(&property_id),
            )?
            .collect_all()
            .await?;
        let mut ours: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut unanchored: HashMap<String, Value> = HashMap::new();
        for contact in listed {
            match extended_property_value(&contact, &property_id) {
                Some(anchor) if anchor.starts_with(self.fanout.anchor_prefix) => {
                    ours.entry(anchor.to_owned()).or_default().push(contact);
                }
                // Another source's contact: not ours to touch.
                Some(_) => {}
                None => {
                    if let Some(address) = primary_address(&contact) {
                        unanchored.entry(address).or_insert(contact);
                    }
                }
            }
        }
        let fanout = self.fanout;
        let mut ops = Vec::new();
        for (anchor, want) in fanout.desired {
            let record = self.state.contacts.get(anchor);
            match ours.remove(anchor) {
                Some(mut found) => {
                    let keep = found
                        .iter()
                        .position(|c| record.is_some_and(|r| id_of(c) == Some(&r.contact_id)))
                        .unwrap_or(0);
                    let keeper = found.swap_remove(keep);
                    let contact_id = id_of(&keeper).unwrap_or_default().to_owned();
                    for duplicate in found {
                        ops.push(Op::Delete {
                            anchor: anchor.clone(),
                            contact_id: id_of(&duplicate).unwrap_or_default().to_owned(),
                            forget: false,
                        });
                    }
                    let patch = patch_for_current(
                        &want.props,
                        fanout.fill_blank,
                        self.categories(),
                        &keeper,
                    );
                    let uploaded = record.and_then(|r| r.photo.clone());
                    let photo =
                        fanout.photos.is_some() && want.photo.is_some() && want.photo != uploaded;
                    let recorded = record
                        .is_some_and(|r| r.contact_id == contact_id && r.written == want.props);
                    if patch.is_empty() && !photo {
                        self.outcome.applied.unchanged += 1;
                        if !recorded {
                            self.remember(anchor, &contact_id, uploaded);
                        }
                    } else if patch.is_empty() {
                        ops.push(Op::Photo {
                            anchor: anchor.clone(),
                            contact_id,
                        });
                    } else {
                        ops.push(Op::Patch {
                            anchor: anchor.clone(),
                            contact_id,
                            body: Value::Object(patch),
                            adopt: false,
                            photo,
                        });
                    }
                }
                None => {
                    let adoptable = fanout.target.adopt_existing
                        && want
                            .email
                            .as_ref()
                            .is_some_and(|e| unanchored.contains_key(e));
                    match want
                        .email
                        .as_ref()
                        .and_then(|e| unanchored.remove(e))
                        .filter(|_| adoptable)
                    {
                        Some(existing) => {
                            let patch = patch_for_current(
                                &want.props,
                                fanout.fill_blank,
                                self.categories(),
                                &existing,
                            );
                            ops.push(Op::Patch {
                                anchor: anchor.clone(),
                                contact_id: id_of(&existing).unwrap_or_default().to_owned(),
                                body: adoption_patch(patch, anchor),
                                adopt: true,
                                photo: fanout.photos.is_some() && want.photo.is_some(),
                            });
                        }
                        None => ops.push(Op::Create {
                            anchor: anchor.clone(),
                            body: create_body(&want.props, self.categories(), anchor),
                        }),
                    }
                }
            }
        }
        // Our contacts of people no longer in scope (or orphans a crash left).
        for (anchor, found) in ours {
            if fanout.held.contains(&anchor) {
                continue;
            }
            if fanout.target.on_delete == OnPersonGone::Keep {
                self.changes.forget.push(anchor);
                continue;
            }
            for contact in found {
                ops.push(Op::Delete {
                    anchor: anchor.clone(),
                    contact_id: id_of(&contact).unwrap_or_default().to_owned(),
                    forget: true,
                });
            }
        }
        // Records of contacts that are gone from the folder and not wanted any more.
        let stale: Vec<String> = self
            .state
            .contacts
            .keys()
            .filter(|anchor| {
                !fanout.desired.contains_key(*anchor) && !fanout.held.contains(*anchor)
            })
            .filter(|anchor| {
                !ops.iter()
                    .any(|op| matches!(op, Op::Delete { anchor: a, .. } if a == *anchor))
            })
            .cloned()
            .collect();
        self.changes.forget.extend(stale);
        Ok(ops)
    }

    fn plan_incremental(&mut self) -> Vec<Op> {
        let fanout = self.fanout;
        let mut ops = Vec::new();
        for anchor in fanout.changed {
            let record = self.state.contacts.get(anchor);
            match (fanout.desired.get(anchor), record) {
                (Some(want), Some(record)) => {
                    let patch = patch_for_written(&want.props, &record.written, fanout.fill_blank);
                    let photo = fanout.photos.is_some()
                        && want.photo.is_some()
                        && want.photo != record.photo;
                    if patch.is_empty() && !photo {
                        self.outcome.applied.unchanged += 1;
                    } else if patch.is_empty() {
                        ops.push(Op::Photo {
                            anchor: anchor.clone(),
                            contact_id: record.contact_id.clone(),
                        });
                    } else {
                        ops.push(Op::Patch {
                            anchor: anchor.clone(),
                            contact_id: record.contact_id.clone(),
                            body: Value::Object(patch),
                            adopt: false,
                            photo,
                        });
                    }
                }
                (Some(want), None) => ops.push(Op::Create {
                    anchor: anchor.clone(),
                    body: create_body(&want.props, self.categories(), anchor),
                }),
                (None, Some(_)) if fanout.held.contains(anchor) => {}
                (None, Some(_)) if fanout.target.on_delete == OnPersonGone::Keep => {
                    self.changes.forget.push(anchor.clone());
                }
                (None, Some(record)) => ops.push(Op::Delete {
                    anchor: anchor.clone(),
                    contact_id: record.contact_id.clone(),
                    forget: true,
                }),
                (None, None) => {}
            }
        }
        ops
    }

    /// Records a contact as holding the desired properties (the photo as given).
    fn remember(&mut self, anchor: &str, contact_id: &str, photo: Option<String>) {
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

    fn uploaded_photo(&self, anchor: &str) -> Option<String> {
        self.state
            .contacts
            .get(anchor)
            .and_then(|r| r.photo.clone())
    }

    async fn execute(&mut self, ops: Vec<Op>) -> Result<(), GraphError> {
        let mut requests = Vec::new();
        let mut by_id: HashMap<String, Op> = HashMap::new();
        for (index, op) in ops.into_iter().enumerate() {
            let id = index.to_string();
            let mailbox = &self.mailbox.id;
            let request = match &op {
                Op::Create { body, .. } => {
                    BatchRequest::create_contact(&id, mailbox, self.folder(), body.clone())
                }
                Op::Patch {
                    contact_id, body, ..
                } => BatchRequest::patch_contact(&id, mailbox, contact_id, body.clone()),
                Op::Delete { contact_id, .. } => {
                    BatchRequest::delete_contact(&id, mailbox, contact_id)
                }
                Op::Photo {
                    anchor, contact_id, ..
                } => {
                    self.photo_queue.push((anchor.clone(), contact_id.clone()));
                    continue;
                }
            };
            requests.push(request);
            by_id.insert(id, op);
        }
        let mut recreate = Vec::new();
        for chunk in requests.chunks(MAX_BATCH_SIZE) {
            let answers = self
                .fanout
                .graph
                .batch(Some(&self.mailbox.id), chunk.to_vec())
                .await?;
            for answer in answers {
                let Some(op) = by_id.remove(&answer.id) else {
                    continue;
                };
                if answer.is_mailbox_not_enabled() {
                    return Err(GraphError::MailboxNotEnabledForRest {
                        mailbox: self.mailbox.upn.clone(),
                    });
                }
                if let Some(anchor) = self.landed(op, &answer) {
                    recreate.push(anchor);
                }
            }
        }
        if !recreate.is_empty() {
            // Drift seen during an incremental write: the owner deleted a managed contact; it comes back now.
            let ops = recreate
                .into_iter()
                .filter_map(|anchor| {
                    let want = self.fanout.desired.get(&anchor)?;
                    let body = create_body(&want.props, self.categories(), &anchor);
                    Some(Op::Create { anchor, body })
                })
                .collect();
            Box::pin(self.execute(ops)).await?;
        }
        self.upload_photos().await
    }

    /// Books one answer; returns the anchor when the contact turned out to be gone and must be created again.
    fn landed(&mut self, op: Op, answer: &BatchResponse) -> Option<String> {
        let gone = answer.status == 404;
        match op {
            Op::Create { anchor, .. } if answer.is_success() => {
                let contact_id = answer
                    .body
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.outcome.applied.creates += 1;
                self.after_write(&anchor, &contact_id, true);
            }
            Op::Patch {
                anchor,
                contact_id,
                adopt,
                photo,
                ..
            } if answer.is_success() => {
                if adopt {
                    self.outcome.applied.adoptions += 1;
                } else {
                    self.outcome.applied.updates += 1;
                }
                self.after_write(&anchor, &contact_id, photo);
            }
            Op::Patch { anchor, .. } if gone => {
                self.changes.put.remove(&anchor);
                self.changes.forget.push(anchor.clone());
                return Some(anchor);
            }
            Op::Delete { anchor, forget, .. } if answer.is_success() || gone => {
                self.outcome.applied.deletes += 1;
                if forget {
                    self.changes.forget.push(anchor);
                }
            }
            Op::Create { anchor, .. }
            | Op::Patch { anchor, .. }
            | Op::Delete { anchor, .. }
            | Op::Photo { anchor, .. } => {
                let reason = format!(
                    "HTTP {} {}: {}",
                    answer.status,
                    answer.error_code().unwrap_or(""),
                    answer.error_message().unwrap_or("")
                );
                let kind = if answer.status == 429 || answer.status == 503 {
                    "throttled"
                } else {
                    "graph_error"
                };
                self.outcome
                    .failures
                    .push(failure(self.mailbox, Some(&anchor), kind, reason));
            }
        }
        None
    }

    /// After a create or patch landed: record it, or queue its photo first.
    fn after_write(&mut self, anchor: &str, contact_id: &str, photo: bool) {
        let wants_photo = self
            .fanout
            .desired
            .get(anchor)
            .is_some_and(|want| want.photo.is_some());
        if photo && wants_photo && self.fanout.photos.is_some() {
            self.photo_queue
                .push((anchor.to_owned(), contact_id.to_owned()));
        } else {
            let uploaded = self.uploaded_photo(anchor);
            self.remember(anchor, contact_id, uploaded);
        }
    }

    async fn upload_photos(&mut self) -> Result<(), GraphError> {
        let Some(cache) = self.fanout.photos else {
            return Ok(());
        };
        let queue = std::mem::take(&mut self.photo_queue);
        for chunk in queue.chunks(PHOTOS_PER_BATCH) {
            let mut requests = Vec::new();
            for (index, (anchor, contact_id)) in chunk.iter().enumerate() {
                match cache.get(anchor).await {
                    Ok(Some(bytes)) => requests.push(BatchRequest::put_contact_photo(
                        index.to_string(),
                        &self.mailbox.id,
                        contact_id,
                        &bytes,
                    )),
                    Ok(None) => {
                        let uploaded = self.uploaded_photo(anchor);
                        self.remember(anchor, contact_id, uploaded);
                    }
                    Err(error) => {
                        let uploaded = self.uploaded_photo(anchor);
                        self.remember(anchor, contact_id, uploaded);
                        self.outcome.failures.push(failure(
                            self.mailbox,
                            Some(anchor),
                            "source_photo",
                            error.to_string(),
                        ));
                    }
                }
            }
            if requests.is_empty() {
                continue;
            }
            let answers = self
                .fanout
                .graph
                .batch(Some(&self.mailbox.id), requests)
                .await?;
            for answer in answers {
                let Some((anchor, contact_id)) = answer
                    .id
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| chunk.get(index))
                else {
                    continue;
                };
                if answer.is_success() {
                    let photo = self
                        .fanout
                        .desired
                        .get(anchor)
                        .and_then(|w| w.photo.clone());
                    self.remember(anchor, contact_id, photo);
                } else {
                    let uploaded = self.uploaded_photo(anchor);
                    self.remember(anchor, contact_id, uploaded);
                    self.outcome.failures.push(failure(
                        self.mailbox,
                        Some(anchor),
                        "photo_upload",
                        format!(
                            "HTTP {} {}",
                            answer.status,
                            answer.error_code().unwrap_or("")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn id_of(value: &Value) -> Option<&str> {
    value.get("id").and_then(Value::as_str)
}

fn failure(mailbox: &MailboxRef, anchor: Option<&str>, kind: &str, reason: String) -> Failure {
    Failure {
        anchor: anchor.map(str::to_owned),
        mailbox: Some(mailbox.upn.clone()),
        kind: kind.into(),
        reason,
    }
}
