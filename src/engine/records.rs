//! How the engine's managed objects live in the state store: one [`ObjectRecord`] per anchor in the link scope, its
//! `data` holding the [`ManagedObject`] (name, hidden flag, pending-create intent, entry as last written), its
//! `hash` the entry's content hash. Also [`Recorder`], which batches record writes as changes land.

use std::collections::BTreeMap;

use chrono::Utc;

use super::diff::{ManagedObject, TakenNames};
use crate::state::{LINK_SCOPE, ObjectRecord, StateError, StateStore};

/// How many record writes are batched before they are flushed.
pub const RECORD_BATCH: usize = 100;

/// The record of a managed object.
pub fn to_record(object: &ManagedObject) -> ObjectRecord {
    ObjectRecord {
        anchor: object.anchor.clone(),
        target_id: object.target_id.clone(),
        hash: object.entry.content_hash(),
        data: serde_json::to_value(object).ok(),
        updated_at: Utc::now(),
    }
}

/// A managed object from its record.
pub fn from_record(record: &ObjectRecord) -> Result<ManagedObject, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        what: format!("object record {}", record.anchor),
        reason,
    };
    let data = record
        .data
        .clone()
        .ok_or_else(|| corrupt("no data".into()))?;
    let mut object: ManagedObject =
        serde_json::from_value(data).map_err(|e| corrupt(e.to_string()))?;
    object.anchor = record.anchor.clone();
    object.target_id = record.target_id.clone();
    Ok(object)
}

/// Every managed object of a link, by anchor.
pub async fn load_managed(
    store: &dyn StateStore,
    link: &str,
) -> Result<BTreeMap<String, ManagedObject>, StateError> {
    let records = store.list_objects(link, LINK_SCOPE).await?;
    records
        .iter()
        .map(|record| from_record(record).map(|object| (object.anchor.clone(), object)))
        .collect()
}

/// What a run that reads the source incrementally needs of a link's managed objects, without loading them all:
/// the objects of the anchors the run touches plus every pending create intent ([`TouchedRecords::objects`]), how
/// many objects are managed (the safety net's base), and, only when the run must choose a name, the names in use
/// (as [`TakenNames`], a few bytes per name). Memory follows the changes, not the directory.
pub struct TouchedRecords {
    pub objects: BTreeMap<String, ManagedObject>,
    /// Managed objects that are not pending intents.
    pub managed_count: u64,
    /// Every managed object's name, when `wants_names` asked for them.
    pub names: Option<TakenNames>,
}

/// Loads [`TouchedRecords`]: the records of `anchors` first (selectively), then one streamed pass over the map for
/// the intents, the count and (if `wants_names` says so, given the touched objects) the names.
pub async fn load_touched(
    store: &dyn StateStore,
    link: &str,
    anchors: &[String],
    wants_names: impl FnOnce(&BTreeMap<String, ManagedObject>) -> bool,
) -> Result<TouchedRecords, StateError> {
    let mut objects = BTreeMap::new();
    for record in store.get_objects(link, LINK_SCOPE, anchors).await? {
        let object = from_record(&record)?;
        objects.insert(object.anchor.clone(), object);
    }
    let mut names = wants_names(&objects).then(TakenNames::default);
    let mut managed_count = 0;
    let mut intents = Vec::new();
    store
        .scan_objects(link, LINK_SCOPE, &mut |record| {
            let data = record.data.as_ref();
            let pending = data
                .and_then(|data| data.get("pending"))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            if pending {
                intents.push(record);
                return;
            }
            managed_count += 1;
            if let Some(names) = names.as_mut()
                && let Some(name) = data
                    .and_then(|data| data.get("name"))
                    .and_then(serde_json::Value::as_str)
            {
                names.insert(name);
            }
        })
        .await?;
    for record in intents {
        let object = from_record(&record)?;
        if let Some(names) = names.as_mut() {
            names.insert(&object.name);
        }
        objects.insert(object.anchor.clone(), object);
    }
    Ok(TouchedRecords {
        objects,
        managed_count,
        names,
    })
}

/// Buffers record writes and deletes of a link and flushes them in batches.
pub struct Recorder<'a> {
    store: &'a dyn StateStore,
    link: &'a str,
    puts: Vec<ObjectRecord>,
    deletes: Vec<String>,
    /// Errors of flushes (the target changed but the checkpoint did not remember it).
    pub errors: Vec<StateError>,
}

impl<'a> Recorder<'a> {
    pub fn new(store: &'a dyn StateStore, link: &'a str) -> Self {
        Recorder {
            store,
            link,
            puts: Vec::new(),
            deletes: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Remembers a managed object (flushes when the batch is full).
    pub async fn put(&mut self, object: &ManagedObject) {
        self.deletes.retain(|anchor| anchor != &object.anchor);
        self.puts.push(to_record(object));
        if self.puts.len() >= RECORD_BATCH {
            self.flush().await;
        }
    }

    /// Forgets a managed object (flushes when the batch is full).
    pub async fn forget(&mut self, anchor: &str) {
        self.puts.retain(|record| record.anchor != anchor);
        self.deletes.push(anchor.to_owned());
        if self.deletes.len() >= RECORD_BATCH {
            self.flush().await;
        }
    }

    /// Writes what is buffered.
    pub async fn flush(&mut self) {
        if !self.puts.is_empty() {
            let puts = std::mem::take(&mut self.puts);
            for chunk in puts.chunks(100) {
                if let Err(error) = self.store.put_objects(self.link, LINK_SCOPE, chunk).await {
                    self.errors.push(error);
                }
            }
        }
        if !self.deletes.is_empty() {
            let deletes = std::mem::take(&mut self.deletes);
            if let Err(error) = self
                .store
                .delete_objects(self.link, LINK_SCOPE, &deletes)
                .await
            {
                self.errors.push(error);
            }
        }
    }
}
