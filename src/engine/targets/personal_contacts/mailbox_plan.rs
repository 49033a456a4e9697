//! Planning one mailbox's writes: the folder (found by stored id, by name, or created), the thorough reconcile
//! (list the folder with anchors), the periodic repair from the folder's delta, and the incremental plan (changed
//! and departed people, from the records).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::contact::{
    CONTACT_PROPERTIES, adoption_patch, anchor_property_id, patch_for_current, patch_for_written,
    primary_address,
};
use super::mailbox_sync::{MailboxRun, Op, id_of};
use super::spec::OnPersonGone;
use crate::m365::mailbox::extended_property_value;
use crate::m365::{DeltaStart, GraphError};

impl MailboxRun<'_> {
    async fn ensure_folder(&mut self) -> Result<String, GraphError> {
        let graph = &self.fanout.graph;
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

    pub(super) async fn plan_full(&mut self) -> Result<Vec<Op>, GraphError> {
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
                Some(anchor) if anchor.starts_with(self.fanout.anchor_prefix.as_str()) => {
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
        for (anchor, want) in &fanout.desired {
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
                        &fanout.fill_blank,
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
                                &fanout.fill_blank,
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

    pub(super) fn plan_incremental(&mut self) -> Vec<Op> {
        let fanout = self.fanout;
        let mut ops = Vec::new();
        for anchor in &fanout.changed {
            let record = self.state.contacts.get(anchor);
            match (fanout.desired.get(anchor), record) {
                (Some(want), Some(record)) => {
                    let patch = patch_for_written(&want.props, &record.written, &fanout.fill_blank);
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
                (Some(_), None) => ops.push(Op::Create {
                    anchor: anchor.clone(),
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

    /// A delta link "from now" for the folder (`$deltaToken=latest`: no contacts, one request). Taken after a
    /// thorough run's writes, so the next repair does not read galbridge's own writes back.
    pub(super) async fn latest_delta_link(
        &self,
        folder: &str,
    ) -> Result<Option<String>, GraphError> {
        let mut pages = self.fanout.graph.folder_contacts_delta(
            &self.mailbox.id,
            folder,
            CONTACT_PROPERTIES,
            &DeltaStart::Latest,
        )?;
        let mut link = None;
        while let Some(page) = pages.next_page().await? {
            link = page.delta_link.or(link);
        }
        Ok(link)
    }

    /// The periodic repair without listing the folder: the changed people (as incremental), plus the contacts the
    /// folder's delta reports since the last repair: a managed contact the owner deleted is created again, one the
    /// owner edited is reset (per field policy). Contacts the records do not know are the owner's: untouched.
    pub(super) async fn plan_delta(&mut self) -> Result<Vec<Op>, GraphError> {
        let (Some(folder), Some(link)) = (
            self.folder().map(str::to_owned),
            self.state.delta_link.clone(),
        ) else {
            return self.plan_full().await;
        };
        let mut pages = self.fanout.graph.folder_contacts_delta(
            &self.mailbox.id,
            &folder,
            CONTACT_PROPERTIES,
            &DeltaStart::Resume(link),
        )?;
        let mut changed_contacts = Vec::new();
        let mut next_link = None;
        while let Some(page) = pages.next_page().await? {
            changed_contacts.extend(page.items);
            next_link = page.delta_link.or(next_link);
        }
        let mut ops = self.plan_incremental();
        let mut planned: HashSet<String> = ops.iter().map(|op| op.anchor().to_owned()).collect();
        let by_contact: HashMap<String, String> = self
            .state
            .contacts
            .iter()
            .map(|(anchor, record)| (record.contact_id.clone(), anchor.clone()))
            .collect();
        let fanout = self.fanout;
        for contact in &changed_contacts {
            let Some(anchor) = id_of(contact).and_then(|id| by_contact.get(id)) else {
                continue;
            };
            let Some(want) = fanout.desired.get(anchor) else {
                continue;
            };
            if !planned.insert(anchor.clone()) {
                continue;
            }
            if contact.get("@removed").is_some() {
                ops.push(Op::Create {
                    anchor: anchor.clone(),
                });
                continue;
            }
            let patch =
                patch_for_current(&want.props, &fanout.fill_blank, self.categories(), contact);
            if !patch.is_empty() {
                ops.push(Op::Patch {
                    anchor: anchor.clone(),
                    contact_id: id_of(contact).unwrap_or_default().to_owned(),
                    body: Value::Object(patch),
                    adopt: false,
                    photo: false,
                });
            }
        }
        // People with no contact in this mailbox yet (a create that failed earlier).
        for anchor in fanout.desired.keys() {
            if !self.state.contacts.contains_key(anchor) && planned.insert(anchor.clone()) {
                ops.push(Op::Create {
                    anchor: anchor.clone(),
                });
            }
        }
        self.changes.folder_id = Some(folder);
        self.changes.delta_link = next_link;
        Ok(ops)
    }
}
