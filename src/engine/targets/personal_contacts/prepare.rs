//! The source side of a phones run: read the source (delta, or full), filter the scope, map to entries, merge into
//! the link's snapshot, read photos, and decide who changed and who left. Shares the engine's scope rules, mapping,
//! overrides and delta handling with the mail-contact runner.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use futures::StreamExt;

use super::contact::{desired_hash, photo_hash, render_properties};
use super::mailbox_sync::Desired;
use super::photos::PhotoCache;
use super::records::SnapshotEntry;
use super::spec::PhonesSpec;
use crate::engine::entry::{Entry, Field, anchor_for};
use crate::engine::mapping::graph_select_for;
use crate::engine::ports::{PortError, SourceDirectory, SourceRead};
use crate::engine::scope::{HiddenRun, HiddenStage, ScopeFacts, hidden_needs_full, read_hidden};
use crate::engine::spec::ObjectOverride;
use crate::state::LinkCheckpoint;

/// Concurrent source photo reads.
const PHOTO_READS: usize = 8;

/// What the source says in this run, merged with the snapshot.
pub struct SourceSide {
    pub full: bool,
    pub from_checkpoint: Option<String>,
    pub delta_link: String,
    pub read: u64,
    /// The snapshot after this run (people in scope, with photo hashes).
    pub next: BTreeMap<String, SnapshotEntry>,
    /// Anchors whose entry or photo changed (new people included).
    pub changed: BTreeSet<String>,
    /// People in the old snapshot no longer in scope.
    pub removed: BTreeSet<String>,
    pub groups_hash: Option<String>,
    pub photo_failures: Vec<(String, String)>,
    /// Who is hidden from the address lists (commit it with the checkpoint; its warning goes in the report).
    pub hidden: HiddenStage,
}

/// Reads the source and merges it into `snapshot`.
pub async fn read_source(
    link: &PhonesSpec,
    source: &dyn SourceDirectory,
    checkpoint: &LinkCheckpoint,
    snapshot: &BTreeMap<String, SnapshotEntry>,
    force_full: bool,
    photos: Option<&PhotoCache>,
) -> Result<SourceSide, PortError> {
    let now = chrono::Utc::now();
    let tenant_id = source.tenant_id().await?;
    let mut group_members = HashSet::new();
    for group in &link.scope.groups {
        for id in source.group_members(group).await? {
            group_members.insert(id.to_ascii_lowercase());
        }
    }
    let groups_hash = (!link.scope.groups.is_empty()).then(|| members_hash(&group_members));
    let groups_changed = groups_hash.is_some()
        && checkpoint
            .extra
            .get("group_members_hash")
            .and_then(|v| v.as_str())
            != groups_hash.as_deref();
    let reconcile_due = checkpoint
        .last_full_sync
        .is_none_or(|last| now - last >= link.full_reconcile_every);
    let mut full = force_full
        || checkpoint.delta_link.is_none()
        || reconcile_due
        || groups_changed
        || link.scope.include_org_contacts
        || hidden_needs_full(&link.scope, checkpoint);
    let select = graph_select_for(&link.mapping, &link.scope.filter_attributes());
    let from_checkpoint = if full {
        None
    } else {
        checkpoint.delta_link.clone()
    };
    let mut read: SourceRead = match source.read_users(from_checkpoint.as_deref(), &select).await {
        Ok(read) => read,
        // Quirk (docs/microsoft-facts.md §2): delta tokens live about 7 days; 410 Gone means start over.
        Err(PortError::DeltaExpired) => {
            full = true;
            source.read_users(None, &select).await?
        }
        Err(error) => return Err(error),
    };
    if link.scope.include_org_contacts {
        read.objects.extend(source.read_org_contacts().await?);
    }
    let run = HiddenRun {
        rules: &link.scope,
        source_tenant: &link.source_tenant,
        checkpoint,
        full,
        select: &select,
        group_members: &group_members,
    };
    let hidden = read_hidden(run, source, &mut read).await?;
    let facts = ScopeFacts {
        group_members: &group_members,
        hidden: &hidden.hidden,
    };

    // Scope and mapping, as the mail-contact runner does them.
    let mut desired: BTreeMap<String, Entry> = BTreeMap::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for object in &read.objects {
        let anchor = anchor_for(&tenant_id, &object.id);
        let object_override = link.overrides.get(&object.id.to_ascii_lowercase());
        let in_scope = link.scope.check(object, &facts).is_ok()
            && !matches!(object_override, Some(ObjectOverride::Exclude));
        if in_scope {
            let mapping = match object_override {
                Some(ObjectOverride::Mapping(mapping)) => mapping,
                _ => &link.mapping,
            };
            desired.insert(
                anchor.clone(),
                mapping.render(&anchor, object, &link.source_tenant),
            );
        } else {
            gone.insert(anchor);
        }
    }
    // People hidden since the last run whom Graph's delta did not bring: leavers.
    for id in &hidden.left {
        gone.insert(anchor_for(&tenant_id, id));
    }

    // Photos of the people read in this run (photos are not tracked by delta).
    let mut photo_hashes: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut photo_failures = Vec::new();
    if let Some(cache) = photos {
        let reads: Vec<_> = desired
            .keys()
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
        from_checkpoint,
        delta_link: read.delta_link,
        read: read.objects.len() as u64,
        next,
        changed,
        removed,
        groups_hash,
        photo_failures,
        hidden,
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

fn members_hash(members: &HashSet<String>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for id in sorted {
        hasher.update(id.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}
