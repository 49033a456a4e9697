//! The source side of a phones run: the shared source stage's batch (`engine::source_stage`: read, hidden, scope,
//! map) merged into the link's snapshot, with photos, deciding who changed and who left.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use super::contact::{desired_hash, photo_hash, render_properties};
use super::mailbox_sync::Desired;
use super::photos::PhotoCache;
use super::records::SnapshotEntry;
use crate::engine::entry::Field;
use crate::engine::source_stage::SourceBatch;

/// Concurrent source photo reads.
const PHOTO_READS: usize = 8;

/// What the source says in this run, merged with the snapshot.
pub struct SourceSide {
    pub full: bool,
    /// The snapshot after this run (people in scope, with photo hashes).
    pub next: BTreeMap<String, SnapshotEntry>,
    /// Anchors whose entry or photo changed (new people included).
    pub changed: BTreeSet<String>,
    /// People in the old snapshot no longer in scope.
    pub removed: BTreeSet<String>,
    pub photo_failures: Vec<(String, String)>,
}

/// Merges the source stage's batch (its people are taken out of it) into `snapshot`, with photos.
pub async fn absorb(
    batch: &mut SourceBatch,
    snapshot: &BTreeMap<String, SnapshotEntry>,
    photos: Option<&PhotoCache>,
) -> SourceSide {
    let full = batch.full;
    let desired = std::mem::take(&mut batch.desired);
    let gone: Vec<String> = batch.gone.keys().cloned().collect();

    // Photos of the people read in this run (photos are not tracked by delta).
    let mut photo_hashes: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut photo_failures = Vec::new();
    if let Some(cache) = photos {
        let reads: Vec<_> = desired
            .keys()
            // A mail-enabled group has no profile photo to copy.
            .filter(|anchor| !batch.is_group(anchor))
            .map(|anchor| async move { (anchor.clone(), cache.get(anchor).await) })
            .collect();
        let mut results =
            std::pin::pin!(futures::stream::iter(reads).buffer_unordered(PHOTO_READS));
        while let Some((anchor, result)) = results.next().await {
            match result {
                Ok(bytes) => {
                    photo_hashes.insert(anchor, bytes.map(|b| photo_hash(&b)));
                }
                Err(error) => photo_failures.push((anchor, error.to_string())),
            }
        }
    }

    let mut next: BTreeMap<String, SnapshotEntry> = if full {
        BTreeMap::new()
    } else {
        snapshot.clone()
    };
    for anchor in &gone {
        next.remove(anchor);
    }
    for (anchor, entry) in desired {
        // A photo that could not be read keeps its last known hash.
        let photo = match photo_hashes.remove(&anchor) {
            Some(hash) => hash,
            None => snapshot.get(&anchor).and_then(|s| s.photo.clone()),
        };
        next.insert(anchor, SnapshotEntry { entry, photo });
    }
    let changed = next
        .iter()
        .filter(|(anchor, entry)| snapshot.get(*anchor) != Some(*entry))
        .map(|(anchor, _)| anchor.clone())
        .collect();
    let removed = snapshot
        .keys()
        .filter(|anchor| !next.contains_key(*anchor))
        .cloned()
        .collect();
    SourceSide {
        full,
        next,
        changed,
        removed,
        photo_failures,
    }
}

/// The desired contact of every person of the snapshot.
pub fn desired_contacts(
    next: &BTreeMap<String, SnapshotEntry>,
    categories: &[String],
    photos: bool,
) -> BTreeMap<String, Desired> {
    next.iter()
        .map(|(anchor, snapshot)| {
            let props = render_properties(&snapshot.entry);
            let photo = if photos { snapshot.photo.clone() } else { None };
            let hash = desired_hash(&props, categories, photo.as_deref());
            let email = snapshot
                .entry
                .fields
                .get(&Field::Email)
                .filter(|e| !e.is_empty())
                .map(|e| e.to_ascii_lowercase());
            (
                anchor.clone(),
                Desired {
                    props,
                    email,
                    photo,
                    hash,
                },
            )
        })
        .collect()
}
