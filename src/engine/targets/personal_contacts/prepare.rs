//! The source side of a phones run: the shared source stage (`engine::source_stage`: read, hidden, scope, map),
//! merged into the link's snapshot, with photos, deciding who changed and who left.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use futures::StreamExt;

use super::contact::{desired_hash, photo_hash, render_properties};
use super::mailbox_sync::Desired;
use super::photos::PhotoCache;
use super::records::SnapshotEntry;
use super::spec::PhonesSpec;
use crate::engine::entry::Field;
use crate::engine::ports::{PortError, SourceDirectory};
use crate::engine::source_stage::{SourceBatch, SourceRules, read_source as read_source_batch};
use crate::state::LinkCheckpoint;

/// Concurrent source photo reads.
const PHOTO_READS: usize = 8;

/// What the source says in this run, merged with the snapshot.
pub struct SourceSide {
    pub full: bool,
    pub from_checkpoint: Option<String>,
    pub read: u64,
    /// The snapshot after this run (people in scope, with photo hashes).
    pub next: BTreeMap<String, SnapshotEntry>,
    /// Anchors whose entry or photo changed (new people included).
    pub changed: BTreeSet<String>,
    /// People in the old snapshot no longer in scope.
    pub removed: BTreeSet<String>,
    pub photo_failures: Vec<(String, String)>,
    /// The shared source stage's batch: its checkpoint commit and warnings.
    pub batch: SourceBatch,
}

/// Reads the source through the shared source stage and merges it into `snapshot`, with photos.
pub async fn read_source(
    link: &PhonesSpec,
    source: &dyn SourceDirectory,
    checkpoint: &LinkCheckpoint,
    snapshot: &BTreeMap<String, SnapshotEntry>,
    force_full: bool,
    photos: Option<&PhotoCache>,
) -> Result<SourceSide, PortError> {
    let rules = SourceRules {
        link: &link.name,
        source_tenant: &link.source_tenant,
        scope: &link.scope,
        mapping: &link.mapping,
        overrides: &link.overrides,
        full_reconcile_every: link.full_reconcile_every,
    };
    let mut batch = read_source_batch(&rules, source, checkpoint, force_full, Utc::now()).await?;
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
    Ok(SourceSide {
        full,
        from_checkpoint: batch.from_checkpoint.clone(),
        read: batch.read,
        next,
        changed,
        removed,
        photo_failures,
        batch,
    })
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
