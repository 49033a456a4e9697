//! The source stage every link runs first, whatever its target (docs/architecture.md, "One sync run"): decide
//! between a full and an incremental read (first run, `--full`, the periodic reconcile, a changed group membership,
//! org contacts, a changed hidden rule, groups switched on or off), read the source (users delta, falling back to a
//! full read when the delta token expired; org contacts; mail-enabled groups from their own delta), learn who is
//! hidden in Exchange, then filter the scope and map every object in it to an [`Entry`]. The result, a [`SourceBatch`], says who is wanted (anchor → entry) and who left (anchor → reason);
//! the target plans from it. What the batch read is committed to the checkpoint only once the run applied
//! everything ([`SourceBatch::commit`]), so a failed or interrupted run reads the same changes again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::entry::SourceKind;
use super::entry::{Entry, anchor_for};
use super::mapping::{Mapping, graph_select_for, group_select_for};
use super::ports::{PortError, SourceDirectory, SourceRead};
use super::scope::{
    HiddenRun, HiddenStage, ScopeFacts, ScopeRules, hidden_needs_full, read_hidden,
};
use super::spec::ObjectOverride;
use crate::state::LinkCheckpoint;

/// Checkpoint key of the hash of the link's group members (a changed membership forces a full read).
const GROUPS_HASH_KEY: &str = "group_members_hash";

/// Checkpoint key of the `groups/delta` link of a link with `include_groups` (docs/microsoft-facts.md §10); absent when
/// the link does not read groups.
pub const GROUPS_DELTA_KEY: &str = "groups_delta_link";

/// What the source stage needs of a link, whatever its target.
pub struct SourceRules<'a> {
    pub link: &'a str,
    /// Configuration name of the source tenant (`{sourceTenant}` in templates, errors).
    pub source_tenant: &'a str,
    pub scope: &'a ScopeRules,
    pub mapping: &'a Mapping,
    /// Per source object id (lowercase).
    pub overrides: &'a BTreeMap<String, ObjectOverride>,
    pub full_reconcile_every: chrono::Duration,
}

/// What the source says in this run.
pub struct SourceBatch {
    /// The source tenant's directory id (anchors are `galbridge:{tenant id}:{object id}`).
    pub tenant_id: String,
    /// Read in full: `desired` is the whole scope, and anything managed but not in it has left.
    pub full: bool,
    /// The delta link the read started from (`None` for a full read).
    pub from_checkpoint: Option<String>,
    /// The delta link to store once the run applied everything.
    pub delta_link: String,
    /// Source objects read (users and org contacts).
    pub read: u64,
    /// People in scope, mapped.
    pub desired: BTreeMap<String, Entry>,
    /// People read (or hidden since the last run) who are out of scope, with the reason.
    pub gone: BTreeMap<String, String>,
    /// Anchors of the mail-enabled groups among `desired` and `gone` (source kind [`SourceKind::Group`]): a target
    /// that cannot hold a group (guest users) skips these, one that can treats them like people.
    pub groups: BTreeSet<String>,
    /// The `groups/delta` link to store (`None`: the link does not read groups; a stored one is dropped).
    groups_delta_link: Option<String>,
    groups_hash: Option<String>,
    hidden: HiddenStage,
}

impl SourceBatch {
    /// Whether `anchor` is a mail-enabled group's (the hook for targets that skip groups).
    pub fn is_group(&self, anchor: &str) -> bool {
        self.groups.contains(anchor)
    }

    /// Warnings every report of this run carries (e.g. `hidden = "graph"`).
    pub fn warnings(&self) -> Vec<String> {
        self.hidden.warnings()
    }

    /// Moves the checkpoint past what this batch read: the delta link, the time of a full read, the group members'
    /// hash, the hidden stage's state. Call only when the run applied everything.
    pub fn commit(&self, checkpoint: &mut LinkCheckpoint, started: DateTime<Utc>) {
        checkpoint.delta_link = Some(self.delta_link.clone());
        if self.full {
            checkpoint.last_full_sync = Some(started);
        }
        if let Some(hash) = &self.groups_hash {
            checkpoint
                .extra
                .insert(GROUPS_HASH_KEY.into(), hash.clone().into());
        }
        match &self.groups_delta_link {
            Some(link) => {
                checkpoint
                    .extra
                    .insert(GROUPS_DELTA_KEY.into(), link.clone().into());
            }
            None => {
                checkpoint.extra.remove(GROUPS_DELTA_KEY);
            }
        }
        self.hidden.commit(checkpoint);
    }
}

/// Reads the source and maps what is in scope (see the module docs). `force_full` is the run's `--full`.
pub async fn read_source(
    rules: &SourceRules<'_>,
    source: &dyn SourceDirectory,
    checkpoint: &LinkCheckpoint,
    force_full: bool,
    started: DateTime<Utc>,
) -> Result<SourceBatch, PortError> {
    let tenant_id = source.tenant_id().await?;
    let scope = rules.scope;

    // Group scoping: membership changes do not show in users/delta, so a changed member set forces a full read.
    let mut group_members = HashSet::new();
    for group in &scope.groups {
        for id in source.group_members(group).await? {
            group_members.insert(id.to_ascii_lowercase());
        }
    }
    let groups_hash = (!scope.groups.is_empty()).then(|| members_hash(&group_members));
    let groups_changed = groups_hash.is_some()
        && checkpoint
            .extra
            .get(GROUPS_HASH_KEY)
            .and_then(|v| v.as_str())
            != groups_hash.as_deref();
    let reconcile_due = checkpoint
        .last_full_sync
        .is_none_or(|last| started - last >= rules.full_reconcile_every);
    // Groups switched on (no groups/delta link yet) or off (managed groups must leave) need the whole view.
    let stored_groups_link = checkpoint
        .extra
        .get(GROUPS_DELTA_KEY)
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let groups_switched = scope.include_groups != stored_groups_link.is_some();
    // Org contacts are read in full on every run (no delta link of their own), so such links reconcile fully.
    let mut full = force_full
        || checkpoint.delta_link.is_none()
        || reconcile_due
        || groups_changed
        || groups_switched
        || scope.include_org_contacts
        || hidden_needs_full(scope, checkpoint);
    let select = graph_select_for(rules.mapping, &scope.filter_attributes());
    let from_checkpoint = if full {
        None
    } else {
        checkpoint.delta_link.clone()
    };
    let mut read: SourceRead = match source.read_users(from_checkpoint.as_deref(), &select).await {
        Ok(read) => read,
        // Quirk (docs/microsoft-facts.md §2): delta tokens live about 7 days; 410 Gone means start over.
        Err(PortError::DeltaExpired) => {
            tracing::info!(link = %rules.link, "Delta token expired; reading the source in full.");
            full = true;
            source.read_users(None, &select).await?
        }
        Err(error) => return Err(error),
    };
    let mut groups_delta_link = None;
    if scope.include_groups {
        let group_select = group_select_for(&scope.group_filter_attributes());
        let from = if full {
            None
        } else {
            stored_groups_link.as_deref()
        };
        let groups = match source.read_groups(from, &group_select).await {
            Ok(groups) => groups,
            // Quirk (docs/microsoft-facts.md §2, §10): an expired groups/delta token means start over; the users read
            // was incremental, so everything is read again in full (a full batch must be the whole scope).
            Err(PortError::DeltaExpired) => {
                tracing::info!(link = %rules.link, "Groups delta token expired; reading the source in full.");
                full = true;
                read = source.read_users(None, &select).await?;
                source.read_groups(None, &group_select).await?
            }
            Err(error) => return Err(error),
        };
        read.objects.extend(groups.objects);
        groups_delta_link = Some(groups.delta_link);
    }
    if scope.include_org_contacts {
        read.objects.extend(source.read_org_contacts().await?);
    }
    let hidden = read_hidden(
        HiddenRun {
            rules: scope,
            source_tenant: rules.source_tenant,
            checkpoint,
            full,
            select: &select,
            group_members: &group_members,
        },
        source,
        &mut read,
    )
    .await?;

    let facts = ScopeFacts {
        group_members: &group_members,
        hidden: &hidden.hidden,
    };
    let mut desired = BTreeMap::new();
    let mut gone = BTreeMap::new();
    let mut groups = BTreeSet::new();
    for object in &read.objects {
        let anchor = anchor_for(&tenant_id, &object.id);
        let is_group = object.kind == SourceKind::Group;
        if is_group {
            groups.insert(anchor.clone());
        }
        let object_override = rules.overrides.get(&object.id.to_ascii_lowercase());
        let decision = match (scope.check(object, &facts), object_override) {
            (Ok(()), Some(ObjectOverride::Exclude)) => Err("excluded".to_owned()),
            (Ok(()), _) => Ok(()),
            (Err(reason), _) => Err(serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "out_of_scope".into())),
        };
        match decision {
            Ok(()) => {
                let mapping = match object_override {
                    Some(ObjectOverride::Mapping(mapping)) => mapping,
                    _ => rules.mapping,
                };
                let entry = if is_group {
                    mapping.render_group(&anchor, object, rules.source_tenant)
                } else {
                    mapping.render(&anchor, object, rules.source_tenant)
                };
                desired.insert(anchor.clone(), entry);
            }
            Err(reason) => {
                gone.insert(anchor, reason);
            }
        }
    }
    // People hidden since the last run whom Graph's delta did not bring: leavers.
    for id in &hidden.left {
        gone.entry(anchor_for(&tenant_id, id))
            .or_insert_with(|| "hidden".to_owned());
    }
    Ok(SourceBatch {
        tenant_id,
        full,
        from_checkpoint,
        delta_link: read.delta_link,
        read: read.objects.len() as u64,
        desired,
        gone,
        groups,
        groups_delta_link,
        groups_hash,
        hidden,
    })
}

/// A stable hash of a set of member ids.
fn members_hash(members: &HashSet<String>) -> String {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for id in sorted {
        hasher.update(id.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}
