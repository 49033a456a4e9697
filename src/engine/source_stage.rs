//! The source stage every link runs first, whatever its target (docs/architecture.md, "One sync run"): decide
//! between a full and an incremental read (first run, `--full`, the periodic reconcile, a changed group membership,
//! org contacts, a changed hidden rule, groups switched on or off), read the source (users delta, falling back to a
//! full read when the delta token expired; org contacts; mail-enabled groups from their own delta), learn who is
//! hidden in Exchange, then filter the scope and map every object in it to an [`Entry`]. The result, a
//! [`SourceBatch`], says who is wanted (anchor → entry) and who left (anchor → reason), and which of them are
//! groups; the target plans from it. What the batch read is committed to the checkpoint only once the run applied
//! everything ([`SourceBatch::commit`]), so a failed or interrupted run reads the same changes again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::entry::{Entry, SourceKind, SourceObject, anchor_for};
use super::mapping::{Mapping, graph_select_for, group_select_for};
use super::ports::{PortError, SourceDirectory, SourceRead};
use super::scope::{
    FullHidden, HiddenRun, HiddenStage, OutOfScope, ScopeFacts, ScopeRules, begin_full_hidden,
    hidden_needs_full, read_hidden,
};
use super::spec::{LinkSpec, ObjectOverride};
use crate::state::LinkCheckpoint;

/// Checkpoint key of the hash of the link's group members (a changed membership forces a full read).
const GROUPS_HASH_KEY: &str = "group_members_hash";

/// Checkpoint key of the `groups/delta` link of a link with `include_groups` (docs/microsoft-facts.md §10); absent
/// when the link does not read groups.
pub const GROUPS_DELTA_KEY: &str = "groups_delta_link";

impl<'a> SourceRules<'a> {
    /// What the source stage needs of `link`.
    pub fn of(link: &'a LinkSpec) -> SourceRules<'a> {
        SourceRules {
            link: &link.name,
            source_tenant: &link.source_tenant,
            scope: &link.scope,
            mapping: &link.mapping,
            overrides: &link.overrides,
            full_reconcile_every: link.full_reconcile_every,
        }
    }
}

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
    let group_select = group_select_for(&scope.group_filter_attributes());
    let from_checkpoint = if full {
        None
    } else {
        checkpoint.delta_link.clone()
    };
    // An incremental read is small: it is read whole, then the hidden stage looks at it. A full read (or one that
    // falls back to full) is mapped as it arrives, page by page: the tenant's objects are never held all at once.
    let mut incremental: Option<(SourceRead, Option<String>)> = None;
    if let Some(from) = from_checkpoint.as_deref() {
        match source.read_users(Some(from), &select).await {
            Ok(mut read) => {
                let mut groups_delta_link = None;
                let mut groups_expired = false;
                if scope.include_groups {
                    match source
                        .read_groups(stored_groups_link.as_deref(), &group_select)
                        .await
                    {
                        Ok(groups) => {
                            read.objects.extend(groups.objects);
                            groups_delta_link = Some(groups.delta_link);
                        }
                        // Quirk (docs/microsoft-facts.md §2, §10): an expired groups/delta token means start over;
                        // the users read was incremental, so everything is read again in full (a full batch must
                        // be the whole scope).
                        Err(PortError::DeltaExpired) => {
                            tracing::info!(link = %rules.link, "Groups delta token expired; reading the source in full.");
                            groups_expired = true;
                        }
                        Err(error) => return Err(error),
                    }
                }
                if groups_expired {
                    full = true;
                } else {
                    incremental = Some((read, groups_delta_link));
                }
            }
            // Quirk (docs/microsoft-facts.md §2): delta tokens live about 7 days; 410 Gone means start over.
            Err(PortError::DeltaExpired) => {
                tracing::info!(link = %rules.link, "Delta token expired; reading the source in full.");
                full = true;
            }
            Err(error) => return Err(error),
        }
    }

    let mut mapper = Mapper {
        rules,
        tenant_id: &tenant_id,
        group_members: &group_members,
        desired: BTreeMap::new(),
        gone: BTreeMap::new(),
        groups: BTreeSet::new(),
        read: 0,
    };
    let (delta_link, groups_delta_link, hidden) = match incremental {
        Some((mut read, groups_delta_link)) => {
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
            for object in &read.objects {
                let _verdict = mapper.map(object, &hidden.hidden);
            }
            (read.delta_link, groups_delta_link, hidden)
        }
        None => {
            let mut stage = begin_full_hidden(scope, rules.source_tenant, source).await?;
            let delta_link = {
                let stage = &mut stage;
                let mapper = &mut mapper;
                source
                    .read_users_each(None, &select, &mut |object| {
                        mapper.map_noting(object, stage);
                    })
                    .await?
            };
            let mut groups_delta_link = None;
            if scope.include_groups {
                let groups = source.read_groups(None, &group_select).await?;
                for object in groups.objects {
                    mapper.map_noting(object, &mut stage);
                }
                groups_delta_link = Some(groups.delta_link);
            }
            if scope.include_org_contacts {
                for object in source.read_org_contacts().await? {
                    mapper.map_noting(object, &mut stage);
                }
            }
            (delta_link, groups_delta_link, stage.finish())
        }
    };
    let Mapper {
        mut gone,
        desired,
        groups,
        read,
        ..
    } = mapper;
    // People hidden since the last run whom Graph's delta did not bring: leavers.
    for id in &hidden.left {
        gone.entry(anchor_for(&tenant_id, id))
            .or_insert_with(|| "hidden".to_owned());
    }
    Ok(SourceBatch {
        tenant_id,
        full,
        from_checkpoint,
        delta_link,
        read,
        desired,
        gone,
        groups,
        groups_delta_link,
        groups_hash,
        hidden,
    })
}

/// Scope and map, one source object at a time, into the batch's maps.
struct Mapper<'a, 'r> {
    rules: &'a SourceRules<'r>,
    tenant_id: &'a str,
    group_members: &'a HashSet<String>,
    desired: BTreeMap<String, Entry>,
    gone: BTreeMap<String, String>,
    groups: BTreeSet<String>,
    read: u64,
}

impl Mapper<'_, '_> {
    /// Maps an object of a full read, noting the hidden stage's held-out people.
    fn map_noting(&mut self, object: SourceObject, stage: &mut FullHidden) {
        let verdict = self.map(&object, stage.hidden());
        stage.note(&object, &verdict);
    }

    /// Checks one object against the scope (with `hidden`, who is hidden) and renders it when in scope; returns
    /// the scope's verdict.
    fn map(&mut self, object: &SourceObject, hidden: &HashSet<String>) -> Result<(), OutOfScope> {
        let facts = ScopeFacts {
            group_members: self.group_members,
            hidden,
        };
        let rules = self.rules;
        self.read += 1;
        let anchor = anchor_for(self.tenant_id, &object.id);
        let is_group = object.kind == SourceKind::Group;
        if is_group {
            self.groups.insert(anchor.clone());
        }
        let object_override = rules.overrides.get(&object.id.to_ascii_lowercase());
        let verdict = rules.scope.check(object, &facts);
        let decision = match (&verdict, object_override) {
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
                self.desired.insert(anchor, entry);
            }
            Err(reason) => {
                self.gone.insert(anchor, reason);
            }
        }
        verdict
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::entry::Field;
    use crate::engine::scope::{AttributeFilter, HiddenRule, Matcher, ScopeRules};
    use crate::engine::testing::FakeDirectory;
    use serde_json::json;

    fn directory() -> FakeDirectory {
        let directory = FakeDirectory::new("t1");
        directory.put_user(
            json!({"id": "u1", "displayName": "Ada", "mail": "ada@acme.com",
                                  "accountEnabled": true, "userType": "Member"}),
        );
        directory.put_mail_group(
            json!({"id": "g1", "displayName": "Sales", "mail": "sales@acme.com",
                                        "mailEnabled": true, "groupTypes": []}),
        );
        directory.put_mail_group(
            json!({"id": "g2", "displayName": "Legal", "mail": "legal@acme.com",
                                        "mailEnabled": true, "groupTypes": ["Unified"]}),
        );
        directory.put_mail_group(
            json!({"id": "g3", "displayName": "Badges", "mailEnabled": false,
                                        "groupTypes": []}),
        );
        directory
    }

    fn rules(include_groups: bool) -> ScopeRules {
        ScopeRules {
            hidden: HiddenRule::Include,
            include_groups,
            group_filters: vec![AttributeFilter {
                attribute: "groupTypes".into(),
                matcher: Matcher::Equals(String::new()),
            }],
            ..ScopeRules::default()
        }
    }

    async fn read(
        scope: &ScopeRules,
        directory: &FakeDirectory,
        checkpoint: &LinkCheckpoint,
    ) -> SourceBatch {
        let mapping = Mapping::defaults();
        let overrides = BTreeMap::new();
        let rules = SourceRules {
            link: "l",
            source_tenant: "acme",
            scope,
            mapping: &mapping,
            overrides: &overrides,
            full_reconcile_every: chrono::Duration::days(1),
        };
        read_source(&rules, directory, checkpoint, false, Utc::now())
            .await
            .expect("source read")
    }

    #[tokio::test]
    async fn groups_are_read_from_their_own_delta_kept_in_the_checkpoint() {
        let directory = directory();
        let scope = rules(true);
        let mut checkpoint = LinkCheckpoint::default();
        let batch = read(&scope, &directory, &checkpoint).await;
        assert!(batch.full);
        let sales = anchor_for("t1", "g1");
        assert!(batch.is_group(&sales) && !batch.is_group(&anchor_for("t1", "u1")));
        assert_eq!(batch.desired[&sales].get(Field::Email), "sales@acme.com");
        assert_eq!(batch.desired[&sales].get(Field::DisplayName), "Sales");
        assert_eq!(
            batch.gone.get(&anchor_for("t1", "g2")).map(String::as_str),
            Some("filter"),
            "group_filters: a Microsoft 365 group is filtered out"
        );
        assert_eq!(
            batch.gone.get(&anchor_for("t1", "g3")).map(String::as_str),
            Some("no_email")
        );
        batch.commit(&mut checkpoint, Utc::now());
        assert!(checkpoint.extra.contains_key(GROUPS_DELTA_KEY));

        // Incremental: only the renamed group comes back.
        directory.put_mail_group(
            json!({"id": "g1", "displayName": "Sales EMEA", "mail": "sales@acme.com",
                                        "mailEnabled": true, "groupTypes": []}),
        );
        let batch = read(&scope, &directory, &checkpoint).await;
        assert!(!batch.full);
        assert_eq!(batch.desired.len(), 1);
        assert_eq!(batch.desired[&sales].get(Field::DisplayName), "Sales EMEA");
        assert_eq!(directory.group_reads(), vec![true, false]);
        batch.commit(&mut checkpoint, Utc::now());

        // An expired groups/delta token reads everything again in full.
        directory.expire_group_delta_links();
        let batch = read(&scope, &directory, &checkpoint).await;
        assert!(batch.full);
        assert!(batch.desired.contains_key(&anchor_for("t1", "u1")));
        assert!(batch.desired.contains_key(&sales));
        batch.commit(&mut checkpoint, Utc::now());

        // Groups switched off: a full read without them, and the stored link is dropped.
        let batch = read(&rules(false), &directory, &checkpoint).await;
        assert!(batch.full);
        assert!(!batch.desired.contains_key(&sales));
        batch.commit(&mut checkpoint, Utc::now());
        assert!(!checkpoint.extra.contains_key(GROUPS_DELTA_KEY));
        let batch = read(&rules(false), &directory, &checkpoint).await;
        assert!(!batch.full, "settled again");
    }
}
