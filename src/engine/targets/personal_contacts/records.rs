//! What a `personal_contacts` link remembers in the state store:
//! - the **source snapshot** in the link scope: per anchor, the entry as mapped and the source photo's hash. A
//!   mailbox joining the selection gets the whole list from it without a full source read, and incremental runs
//!   know which people changed (entry hash or photo hash).
//! - per **(link, mailbox)** (scope = the mailbox's user id): per anchor, the contact id, the properties last
//!   written and the photo hash last uploaded; plus one folder record ([`FOLDER_KEY`]) with the folder's id.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::entry::Entry;
use crate::state::{LINK_SCOPE, ObjectRecord, StateError, StateStore};

/// The key of the folder record in a mailbox scope (never an anchor: anchors start with `galbridge:`).
pub const FOLDER_KEY: &str = "~folder";

// Records go to the store 100 at a time while a mailbox is written (`RECORDS_PER_FLUSH`): one entity group
// transaction in Table Storage, one journal append in the file store.

/// One person of the source snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub entry: Entry,
    /// sha256 of the source photo (None: no photo, or photos are off).
    #[serde(default)]
    pub photo: Option<String>,
}

/// One managed contact in one mailbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    /// The contact's id (kept as the record's `target_id`).
    #[serde(skip)]
    pub contact_id: String,
    /// The properties as last written (for incremental patches).
    pub written: BTreeMap<String, Value>,
    /// The photo hash last uploaded.
    #[serde(default)]
    pub photo: Option<String>,
    /// [`super::contact::desired_hash`] of what was written.
    #[serde(skip)]
    pub hash: String,
}

/// A mailbox's records: the folder id (None: never set up) and the contacts by anchor.
#[derive(Debug, Clone, Default)]
pub struct MailboxState {
    /// `Some("")` = the default Contacts folder.
    pub folder_id: Option<String>,
    /// The folder's contacts `@odata.deltaLink` (periodic drift repair reads only what changed since).
    pub delta_link: Option<String>,
    pub contacts: BTreeMap<String, ContactRecord>,
}

fn corrupt(record: &ObjectRecord, reason: String) -> StateError {
    StateError::Corrupt {
        what: format!("personal contact record {}", record.anchor),
        reason,
    }
}

/// The link's source snapshot.
pub async fn load_snapshot(
    store: &dyn StateStore,
    link: &str,
) -> Result<BTreeMap<String, SnapshotEntry>, StateError> {
    snapshot_entries(store.list_objects(link, LINK_SCOPE).await?)
}

/// The snapshot entries of `anchors` only (point reads; anchors not in the snapshot are absent).
pub async fn load_snapshot_of(
    store: &dyn StateStore,
    link: &str,
    anchors: &[String],
) -> Result<BTreeMap<String, SnapshotEntry>, StateError> {
    snapshot_entries(store.get_objects(link, LINK_SCOPE, anchors).await?)
}

fn snapshot_entries(
    records: Vec<ObjectRecord>,
) -> Result<BTreeMap<String, SnapshotEntry>, StateError> {
    let mut snapshot = BTreeMap::new();
    for mut record in records {
        let data = record
            .data
            .take()
            .ok_or_else(|| corrupt(&record, "no data".into()))?;
        let entry: SnapshotEntry =
            serde_json::from_value(data).map_err(|e| corrupt(&record, e.to_string()))?;
        snapshot.insert(record.anchor, entry);
    }
    Ok(snapshot)
}

/// Writes snapshot changes: `put` entries and `removed` anchors.
pub async fn save_snapshot(
    store: &dyn StateStore,
    link: &str,
    put: &[(&String, &SnapshotEntry)],
    removed: &[String],
) -> Result<(), StateError> {
    let records: Vec<ObjectRecord> = put
        .iter()
        .map(|(anchor, entry)| ObjectRecord {
            anchor: (*anchor).clone(),
            target_id: String::new(),
            hash: entry.entry.content_hash(),
            data: serde_json::to_value(entry).ok(),
            updated_at: Utc::now(),
        })
        .collect();
    store.put_objects(link, LINK_SCOPE, &records).await?;
    store.delete_objects(link, LINK_SCOPE, removed).await?;
    Ok(())
}

/// A mailbox's records (all of them: thorough and repair runs, mailboxes leaving).
pub async fn load_mailbox(
    store: &dyn StateStore,
    link: &str,
    mailbox: &str,
) -> Result<MailboxState, StateError> {
    mailbox_state(store.list_objects(link, mailbox).await?)
}

/// The folder record and the records of `anchors` only (an incremental run: one changed person costs one record
/// read per mailbox, not the whole map). Contacts of other people are absent from the state it returns.
pub async fn load_mailbox_anchors(
    store: &dyn StateStore,
    link: &str,
    mailbox: &str,
    anchors: &BTreeSet<String>,
) -> Result<MailboxState, StateError> {
    let mut wanted: Vec<String> = Vec::with_capacity(anchors.len() + 1);
    wanted.push(FOLDER_KEY.to_owned());
    wanted.extend(anchors.iter().cloned());
    mailbox_state(store.get_objects(link, mailbox, &wanted).await?)
}

fn mailbox_state(records: Vec<ObjectRecord>) -> Result<MailboxState, StateError> {
    let mut state = MailboxState::default();
    for record in records {
        if record.anchor == FOLDER_KEY {
            state.folder_id = Some(record.target_id.clone());
            state.delta_link = record
                .data
                .as_ref()
                .and_then(|data| data.get("delta"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            continue;
        }
        let data = record
            .data
            .clone()
            .ok_or_else(|| corrupt(&record, "no data".into()))?;
        let mut contact: ContactRecord =
            serde_json::from_value(data).map_err(|e| corrupt(&record, e.to_string()))?;
        contact.contact_id = record.target_id.clone();
        contact.hash = record.hash.clone();
        state.contacts.insert(record.anchor.clone(), contact);
    }
    Ok(state)
}

/// Record changes of one mailbox: contact records are saved every 100 while it is written, the rest (folder record,
/// forgotten anchors) when it is done. What a crash loses is repaired by the thorough pass the next run does (see
/// the module docs of `personal_contacts`).
#[derive(Debug, Default)]
pub struct MailboxChanges {
    /// A new folder record: the folder id and its delta link.
    pub folder_id: Option<String>,
    pub delta_link: Option<String>,
    pub put: BTreeMap<String, ContactRecord>,
    pub forget: Vec<String>,
}

impl MailboxChanges {
    pub fn is_empty(&self) -> bool {
        self.folder_id.is_none() && self.put.is_empty() && self.forget.is_empty()
    }
}

/// Writes a mailbox's record changes.
pub async fn save_mailbox(
    store: &dyn StateStore,
    link: &str,
    mailbox: &str,
    changes: &MailboxChanges,
) -> Result<(), StateError> {
    let mut records: Vec<ObjectRecord> = Vec::with_capacity(changes.put.len() + 1);
    if let Some(folder_id) = &changes.folder_id {
        records.push(ObjectRecord {
            anchor: FOLDER_KEY.into(),
            target_id: folder_id.clone(),
            hash: String::new(),
            data: changes
                .delta_link
                .as_ref()
                .map(|link| serde_json::json!({ "delta": link })),
            updated_at: Utc::now(),
        });
    }
    for (anchor, contact) in &changes.put {
        records.push(ObjectRecord {
            anchor: anchor.clone(),
            target_id: contact.contact_id.clone(),
            hash: contact.hash.clone(),
            data: serde_json::to_value(contact).ok(),
            updated_at: Utc::now(),
        });
    }
    store.put_objects(link, mailbox, &records).await?;
    store.delete_objects(link, mailbox, &changes.forget).await?;
    Ok(())
}

/// Forgets a mailbox entirely (it left the selection).
pub async fn forget_mailbox(
    store: &dyn StateStore,
    link: &str,
    mailbox: &str,
    state: &MailboxState,
) -> Result<(), StateError> {
    let mut anchors: Vec<String> = state.contacts.keys().cloned().collect();
    anchors.push(FOLDER_KEY.into());
    store.delete_objects(link, mailbox, &anchors).await?;
    Ok(())
}
