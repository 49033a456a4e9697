//! The diff: from what the source says (entries in scope, anchors gone), what the checkpoint remembers (managed
//! objects) and, on a full reconcile, what the target holds (its contacts), to a [`Plan`].
//!
//! Rules: only objects carrying our anchor are ever modified or removed; adoption of an unanchored object with the
//! same address is the only way in, and only when the link opts in. On a full reconcile drift is repaired: a managed
//! object a user deleted is created again, an anchored object nobody owns any more goes, changed fields are reset.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::entry::{Entry, Field};
use super::names::unique_name;
use super::plan::{
    Adoption, Conflict, ConflictKind, Create, FieldChange, Plan, Removal, RemovalAction, Update,
};

/// What the link does with an object whose source is gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    #[default]
    Delete,
    Hide,
    Keep,
}

/// Target policy the diff needs.
#[derive(Debug, Clone, Default)]
pub struct DiffPolicy {
    pub on_delete: OnDelete,
    pub adopt_existing: bool,
}

/// What the checkpoint remembers about one managed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedObject {
    pub anchor: String,
    /// Target id; empty while only an intent to create exists.
    pub target_id: String,
    /// The unique name given to the object.
    pub name: String,
    /// Hidden by the `hide` policy.
    #[serde(default)]
    pub hidden: bool,
    /// A create was about to be sent (crash safety); resolved at the start of the next run.
    #[serde(default)]
    pub pending: bool,
    /// The entry as last written.
    pub entry: Entry,
}

/// One object of the target as read during a full reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetObject {
    pub id: String,
    /// The anchor it carries, if any.
    pub anchor: Option<String>,
    pub name: String,
    /// The primary external address.
    pub address: String,
    pub hidden: bool,
    /// Its current values, as entry fields.
    pub fields: BTreeMap<Field, String>,
}

/// What the source says in this run.
#[derive(Debug, Clone, Default)]
pub struct SourceView {
    /// Entries in scope, by anchor: all of them on a full read, the changed ones on an incremental read.
    pub desired: BTreeMap<String, Entry>,
    /// Anchors read in this run that are removed or out of scope (incremental reads).
    pub gone: BTreeMap<String, String>,
    /// `desired` is the whole source: managed anchors missing from it are gone.
    pub complete: bool,
}

/// Names in use in the target, as 64-bit hashes of their lowercase form (Exchange compares names
/// case-insensitively): a few bytes per name, so a run can know every name of a large directory.
#[derive(Debug, Clone, Default)]
pub struct TakenNames(HashSet<u64>);

impl TakenNames {
    fn key(name: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        name.to_lowercase().hash(&mut hasher);
        hasher.finish()
    }

    pub fn insert(&mut self, name: &str) {
        self.0.insert(Self::key(name));
    }

    fn remove(&mut self, name: &str) {
        self.0.remove(&Self::key(name));
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains(&Self::key(name))
    }
}

/// Inputs of the diff.
pub struct DiffInput<'a> {
    pub source: &'a SourceView,
    pub managed: &'a BTreeMap<String, ManagedObject>,
    /// The target's objects (full reconcile only); `None` on incremental runs.
    pub target: Option<&'a [TargetObject]>,
    /// Anchor prefix of this link's source tenant (`galbridge:{tenantId}:`): anchored target objects with it are ours.
    pub anchor_prefix: &'a str,
    pub policy: &'a DiffPolicy,
    /// Names of managed objects `managed` does not hold (a run that loaded only the objects it touches); `None`
    /// when `managed` holds them all.
    pub names: Option<&'a TakenNames>,
}

/// The plan of a purge: every object of the target carrying an anchor of `anchor_prefix` (this link's source
/// tenant) is deleted, whatever the link's `on_delete`; managed records with no such object in the target are
/// forgotten. Unanchored objects and other tenants' anchors are never in it.
pub fn purge_plan(
    target: &[TargetObject],
    anchor_prefix: &str,
    managed: &BTreeMap<String, ManagedObject>,
) -> Plan {
    let mut plan = Plan::default();
    for object in target {
        let Some(anchor) = object
            .anchor
            .as_deref()
            .filter(|anchor| anchor.starts_with(anchor_prefix))
        else {
            continue;
        };
        plan.removals.push(Removal {
            anchor: anchor.to_owned(),
            target_id: object.id.clone(),
            display_name: object
                .fields
                .get(&Field::DisplayName)
                .cloned()
                .unwrap_or_else(|| object.name.clone()),
            action: RemovalAction::Delete,
            reason: "purge".into(),
        });
    }
    let in_target: HashSet<&str> = plan.removals.iter().map(|r| r.anchor.as_str()).collect();
    plan.forget = managed
        .keys()
        .filter(|anchor| !in_target.contains(anchor.as_str()))
        .cloned()
        .collect();
    plan
}

/// Computes the plan (without link name, checkpoints or safety, which the runner fills in).
pub fn diff(input: &DiffInput<'_>) -> Plan {
    diff_with(input, Entries::Copied)
}

/// [`diff`] without copying the source's entries into the plan: its creates, updates and adoptions carry an entry
/// with the anchor only, until [`Plan::take_entries`] moves the source's own in. A full run of a large tenant then
/// holds each person's entry once, not twice.
pub fn diff_lean(input: &DiffInput<'_>) -> Plan {
    diff_with(input, Entries::Moved)
}

/// Whether the plan gets copies of the source's entries or waits for them to be moved in.
#[derive(Clone, Copy)]
enum Entries {
    Copied,
    Moved,
}

impl Entries {
    fn of(self, entry: &Entry) -> Entry {
        match self {
            Entries::Copied => entry.clone(),
            Entries::Moved => Entry::new(entry.anchor.clone()),
        }
    }
}

fn diff_with(input: &DiffInput<'_>, entries: Entries) -> Plan {
    let mut plan = Plan::default();
    let target_by_anchor: HashMap<&str, &TargetObject> = input
        .target
        .unwrap_or_default()
        .iter()
        .filter_map(|object| object.anchor.as_deref().map(|anchor| (anchor, object)))
        .collect();
    let target_by_address: HashMap<String, &TargetObject> = input
        .target
        .unwrap_or_default()
        .iter()
        .map(|object| (object.address.to_ascii_lowercase(), object))
        .collect();
    let mut names = NameBook::new(input);

    for (anchor, entry) in &input.source.desired {
        let managed = input.managed.get(anchor).filter(|m| !m.pending);
        let in_target = target_by_anchor.get(anchor.as_str()).copied();
        match (input.target.is_some(), managed, in_target) {
            // Full reconcile: the target's own state is the truth for "old".
            (true, _, Some(object)) => {
                let current = ManagedObject {
                    anchor: anchor.clone(),
                    target_id: object.id.clone(),
                    name: object.name.clone(),
                    hidden: object.hidden,
                    pending: false,
                    entry: Entry {
                        anchor: anchor.clone(),
                        fields: object.fields.clone(),
                    },
                };
                let stored_name = managed.map(|m| m.name.as_str()).unwrap_or(&object.name);
                plan_update(
                    &mut plan,
                    &mut names,
                    (entry, entries),
                    &current,
                    stored_name,
                    managed.map(|m| &m.entry),
                );
            }
            // Managed but gone from the target (a user deleted it): create it again.
            (true, Some(_), None) | (true, None, None) => {
                plan_new(
                    &mut plan,
                    &mut names,
                    (entry, entries),
                    &target_by_address,
                    input,
                );
            }
            (false, Some(current), _) => {
                plan_update(
                    &mut plan,
                    &mut names,
                    (entry, entries),
                    current,
                    &current.name,
                    Some(&current.entry),
                );
            }
            (false, None, _) => plan_new(
                &mut plan,
                &mut names,
                (entry, entries),
                &target_by_address,
                input,
            ),
        }
    }

    // Removals of managed objects whose source is gone or out of scope.
    let mut removed: BTreeSet<&str> = BTreeSet::new();
    let gone: Vec<(&String, &str)> = if input.source.complete {
        input
            .managed
            .keys()
            .filter(|anchor| !input.source.desired.contains_key(*anchor))
            .map(|anchor| {
                (
                    anchor,
                    input
                        .source
                        .gone
                        .get(anchor)
                        .map(String::as_str)
                        .unwrap_or("removed"),
                )
            })
            .collect()
    } else {
        input
            .source
            .gone
            .iter()
            .filter(|(anchor, _)| input.managed.contains_key(*anchor))
            .map(|(anchor, reason)| (anchor, reason.as_str()))
            .collect()
    };
    for (anchor, reason) in gone {
        let Some(managed) = input.managed.get(anchor) else {
            continue;
        };
        removed.insert(anchor);
        if managed.pending {
            plan.forget.push(anchor.clone());
            continue;
        }
        let in_target = target_by_anchor.get(anchor.as_str()).copied();
        if input.target.is_some() && in_target.is_none() {
            // Already gone from the target: nothing to remove, just forget it.
            plan.forget.push(anchor.clone());
            continue;
        }
        let target_id = in_target
            .map(|o| o.id.clone())
            .unwrap_or_else(|| managed.target_id.clone());
        let hidden = in_target.map(|o| o.hidden).unwrap_or(managed.hidden);
        push_removal(
            &mut plan,
            input.policy.on_delete,
            anchor,
            &target_id,
            managed.entry.get(Field::DisplayName),
            hidden,
            reason,
        );
    }

    // Full reconcile: anchored objects of our source tenant that nobody owns any more.
    if let Some(target) = input.target {
        for object in target {
            let Some(anchor) = object.anchor.as_deref() else {
                continue;
            };
            if !anchor.starts_with(input.anchor_prefix)
                || input.source.desired.contains_key(anchor)
                || removed.contains(anchor)
            {
                continue;
            }
            let display = object
                .fields
                .get(&Field::DisplayName)
                .map(String::as_str)
                .unwrap_or(&object.name);
            push_removal(
                &mut plan,
                input.policy.on_delete,
                anchor,
                &object.id,
                display,
                object.hidden,
                "orphaned",
            );
        }
    }
    plan
}

fn push_removal(
    plan: &mut Plan,
    on_delete: OnDelete,
    anchor: &str,
    target_id: &str,
    display_name: &str,
    hidden: bool,
    reason: &str,
) {
    let action = match on_delete {
        OnDelete::Delete => RemovalAction::Delete,
        OnDelete::Hide if hidden => {
            plan.unchanged += 1;
            return;
        }
        OnDelete::Hide => RemovalAction::Hide,
        OnDelete::Keep => {
            plan.forget.push(anchor.to_owned());
            return;
        }
    };
    plan.removals.push(Removal {
        anchor: anchor.to_owned(),
        target_id: target_id.to_owned(),
        display_name: display_name.to_owned(),
        action,
        reason: reason.to_owned(),
    });
}

/// Changed synced fields (fields the entry does not carry are not synced and never compared).
pub fn field_changes(old: &BTreeMap<Field, String>, new: &Entry) -> Vec<FieldChange> {
    new.fields
        .iter()
        .filter_map(|(field, value)| {
            let old_value = old.get(field).map(String::as_str).unwrap_or("");
            (old_value != value).then(|| FieldChange {
                field: *field,
                old: old_value.to_owned(),
                new: value.clone(),
            })
        })
        .collect()
}

fn plan_update(
    plan: &mut Plan,
    names: &mut NameBook,
    (entry, entries): (&Entry, Entries),
    current: &ManagedObject,
    stored_name: &str,
    last_written: Option<&Entry>,
) {
    let changes = field_changes(&current.entry.fields, entry);
    let display_unchanged =
        last_written.is_some_and(|w| w.get(Field::DisplayName) == entry.get(Field::DisplayName));
    let name = if display_unchanged && !stored_name.is_empty() {
        names.claim(stored_name);
        stored_name.to_owned()
    } else {
        names.assign(entry, Some(stored_name))
    };
    let rename = (name != current.name).then(|| (current.name.clone(), name.clone()));
    if changes.is_empty() && rename.is_none() && !current.hidden {
        plan.unchanged += 1;
        return;
    }
    plan.updates.push(Update {
        anchor: entry.anchor.clone(),
        target_id: current.target_id.clone(),
        rename,
        changes,
        unhide: current.hidden,
        entry: entries.of(entry),
        name,
    });
}

fn plan_new(
    plan: &mut Plan,
    names: &mut NameBook,
    (entry, entries): (&Entry, Entries),
    target_by_address: &HashMap<String, &TargetObject>,
    input: &DiffInput<'_>,
) {
    let existing = entry
        .email_key()
        .and_then(|address| target_by_address.get(&address).copied());
    match existing {
        Some(object) if object.anchor.is_none() && input.policy.adopt_existing => {
            names.claim(&object.name);
            plan.adoptions.push(Adoption {
                anchor: entry.anchor.clone(),
                target_id: object.id.clone(),
                name: object.name.clone(),
                changes: field_changes(&object.fields, entry),
                entry: entries.of(entry),
            });
        }
        Some(object) => {
            let owner = match &object.anchor {
                Some(anchor) => format!("contact {:?} anchored to {anchor}", object.name),
                None => format!(
                    "unanchored contact {:?} (set adopt_existing to take it over)",
                    object.name
                ),
            };
            plan.conflicts.push(Conflict {
                anchor: entry.anchor.clone(),
                kind: ConflictKind::Address,
                detail: format!("{} is already used by {owner}", entry.get(Field::Email)),
            });
        }
        None => {
            let name = names.assign(entry, None);
            plan.creates.push(Create {
                anchor: entry.anchor.clone(),
                name,
                entry: entries.of(entry),
            });
        }
    }
}

/// Names in use in the target, to give every object a unique one.
struct NameBook {
    taken: TakenNames,
}

impl NameBook {
    fn new(input: &DiffInput<'_>) -> NameBook {
        let mut taken = input.names.cloned().unwrap_or_default();
        for object in input.target.unwrap_or_default() {
            taken.insert(&object.name);
        }
        for managed in input.managed.values() {
            taken.insert(&managed.name);
        }
        NameBook { taken }
    }

    fn claim(&mut self, name: &str) {
        self.taken.insert(name);
    }

    /// A unique name for the entry; `own` is the name it holds now (free for itself to keep).
    fn assign(&mut self, entry: &Entry, own: Option<&str>) -> String {
        if let Some(own) = own {
            self.taken.remove(own);
        }
        let name = unique_name(entry, |candidate| self.taken.contains(candidate));
        self.claim(&name);
        name
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
