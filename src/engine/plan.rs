//! The [`Plan`] of one run: data, not code (docs/architecture.md, "One sync run", step 6). It says which checkpoint it starts from and which it
//! moves to, and every intended change: creates (full field set), field-level updates (`{field, old, new}` for changed
//! fields only), removals (delete or hide, by the link's `on_delete`), adoptions, conflicts, records to forget, and
//! the removals held back by the safety threshold. It serialises to JSON (dry runs, golden tests) and prints as a
//! human table. The same plan is produced for every target kind; the applier interprets it.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::entry::{Entry, Field};
use crate::report::PlanCounts;

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: Field,
    pub old: String,
    pub new: String,
}

/// A new object to create, with everything it should hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub anchor: String,
    /// The target's unique name (Exchange `Name`, ≤ 64 characters, unique per tenant).
    pub name: String,
    pub entry: Entry,
}

/// A managed object whose fields (or name, or hidden flag) must change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub anchor: String,
    pub target_id: String,
    /// `Some` when the unique name changes (old, new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<(String, String)>,
    pub changes: Vec<FieldChange>,
    /// The object was hidden by the `hide` policy and is back in scope.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unhide: bool,
    /// The whole entry after the update (what the checkpoint remembers).
    pub entry: Entry,
    /// The unique name after the update.
    pub name: String,
}

/// An existing, unanchored object with the same address that the link takes over (opt-in `adopt_existing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    pub anchor: String,
    pub target_id: String,
    pub name: String,
    pub changes: Vec<FieldChange>,
    pub entry: Entry,
}

/// What a removal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalAction {
    Delete,
    Hide,
}

/// A managed object whose source is gone or out of scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub anchor: String,
    pub target_id: String,
    pub display_name: String,
    pub action: RemovalAction,
    /// Why: `removed`, `out_of_scope`, `orphaned` (anchored in the target, unknown to the source).
    pub reason: String,
}

/// Kinds of conflict that need a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// The address belongs to another recipient (mailbox, group, guest, unanchored contact).
    Address,
    /// The unique name could not be resolved.
    Name,
}

impl ConflictKind {
    /// The `Failure::kind` of the run report.
    pub fn failure_kind(self) -> &'static str {
        match self {
            ConflictKind::Address => "conflict_address",
            ConflictKind::Name => "conflict_name",
        }
    }
}

/// A change that cannot be made without a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub anchor: String,
    pub kind: ConflictKind,
    pub detail: String,
}

/// How a target that writes into many mailboxes (`personal_contacts`) spreads the plan: every change above applies
/// to each selected mailbox (the changes are per person, not per mailbox).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxFanOut {
    /// Mailboxes the link writes into.
    pub selected: u64,
    /// Mailboxes new to the selection: they get every contact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joining: Vec<String>,
    /// Mailboxes leaving the selection: their contacts go or stay, by the link's policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaving: Vec<String>,
    /// Contacts recorded per mailbox (a purge's listing).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub recorded: std::collections::BTreeMap<String, u64>,
}

/// Every change of one run of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub link: String,
    pub target_kind: String,
    /// Whether the plan reconciles the whole source (and target) or applies changes only.
    pub full: bool,
    /// The delta link the run read from (`None` = a full read).
    pub from_checkpoint: Option<String>,
    /// The delta link the run moves to once everything applied.
    pub to_checkpoint: Option<String>,
    pub creates: Vec<Create>,
    pub updates: Vec<Update>,
    pub adoptions: Vec<Adoption>,
    pub removals: Vec<Removal>,
    /// Removals held back by the safety threshold (quarantine).
    pub held: Vec<Removal>,
    /// Anchors whose checkpoint records are dropped without touching the target (`keep` policy, object gone).
    pub forget: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub unchanged: u64,
    /// For targets that write into mailboxes: which mailboxes the changes go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailboxes: Option<MailboxFanOut>,
    /// What the target leaves out by design, for the reader of a plan (e.g. groups, which guests cannot be).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Plan {
    /// Moves the entries of a [`crate::engine::diff::diff_lean`] plan in from the source's (each leaves `desired`).
    pub fn take_entries(&mut self, desired: &mut std::collections::BTreeMap<String, Entry>) {
        let mut take = |entry: &mut Entry| {
            if let Some(full) = desired.remove(&entry.anchor) {
                *entry = full;
            }
        };
        self.creates.iter_mut().for_each(|c| take(&mut c.entry));
        self.updates.iter_mut().for_each(|u| take(&mut u.entry));
        self.adoptions.iter_mut().for_each(|a| take(&mut a.entry));
    }

    /// Counts by kind of change (held removals are not counted: they will not be applied).
    pub fn counts(&self) -> PlanCounts {
        let deletes = self
            .removals
            .iter()
            .filter(|r| r.action == RemovalAction::Delete)
            .count();
        PlanCounts {
            creates: self.creates.len() as u64,
            updates: self.updates.len() as u64,
            deletes: deletes as u64,
            hides: (self.removals.len() - deletes) as u64,
            adoptions: self.adoptions.len() as u64,
            conflicts: self.conflicts.len() as u64,
            unchanged: self.unchanged,
        }
    }

    /// Whether applying the plan would write nothing to the target.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty()
            && self.updates.is_empty()
            && self.adoptions.is_empty()
            && self.removals.is_empty()
    }

    /// The plan as JSON (dry runs put this in the report).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
    }

    /// A human table: one line per change, field-level diffs indented below updates.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let c = self.counts();
        let _ = writeln!(
            out,
            "plan for {} ({}, {}): {} create, {} update, {} delete, {} hide, {} adopt, {} conflict, {} held, {} unchanged",
            self.link,
            self.target_kind,
            if self.full { "full" } else { "incremental" },
            c.creates,
            c.updates,
            c.deletes,
            c.hides,
            c.adoptions,
            c.conflicts,
            self.held.len(),
            c.unchanged
        );
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        if let Some(mailboxes) = &self.mailboxes {
            let _ = writeln!(
                out,
                "  into {} mailboxes ({} joining, {} leaving{})",
                mailboxes.selected,
                mailboxes.joining.len(),
                mailboxes.leaving.len(),
                if mailboxes.recorded.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} contacts recorded",
                        mailboxes.recorded.values().sum::<u64>()
                    )
                }
            );
        }
        for create in &self.creates {
            let _ = writeln!(
                out,
                "  + create  {:<40} {}",
                create.name,
                create.entry.get(Field::Email)
            );
            for (field, value) in create.entry.non_blank() {
                let _ = writeln!(out, "      {:<16} {value}", field.as_str());
            }
        }
        for update in &self.updates {
            let _ = writeln!(
                out,
                "  ~ update  {:<40} {}",
                update.name,
                update.entry.get(Field::Email)
            );
            if let Some((old, new)) = &update.rename {
                let _ = writeln!(out, "      {:<16} {old:?} -> {new:?}", "name");
            }
            if update.unhide {
                let _ = writeln!(out, "      {:<16} hidden -> visible", "address_list");
            }
            for change in &update.changes {
                let _ = writeln!(
                    out,
                    "      {:<16} {:?} -> {:?}",
                    change.field.as_str(),
                    change.old,
                    change.new
                );
            }
        }
        for adoption in &self.adoptions {
            let _ = writeln!(
                out,
                "  * adopt   {:<40} {}",
                adoption.name,
                adoption.entry.get(Field::Email)
            );
            for change in &adoption.changes {
                let _ = writeln!(
                    out,
                    "      {:<16} {:?} -> {:?}",
                    change.field.as_str(),
                    change.old,
                    change.new
                );
            }
        }
        for removal in &self.removals {
            let verb = match removal.action {
                RemovalAction::Delete => "- delete",
                RemovalAction::Hide => "- hide  ",
            };
            let _ = writeln!(
                out,
                "  {verb}  {:<40} ({})",
                removal.display_name, removal.reason
            );
        }
        for held in &self.held {
            let _ = writeln!(
                out,
                "  ! held    {:<40} ({}, quarantined)",
                held.display_name, held.reason
            );
        }
        for conflict in &self.conflicts {
            let _ = writeln!(
                out,
                "  ! {:<7} {:<40} {}",
                conflict.kind.failure_kind(),
                conflict.anchor,
                conflict.detail
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Plan {
        let mut entry = Entry::new("galbridge:t:1");
        entry.set(Field::DisplayName, "Ada Lovelace");
        entry.set(Field::Email, "ada@acme.com");
        entry.set(Field::JobTitle, "");
        Plan {
            link: "acme-to-northern".into(),
            target_kind: "mail_contact".into(),
            full: true,
            creates: vec![Create {
                anchor: entry.anchor.clone(),
                name: "Ada Lovelace".into(),
                entry: entry.clone(),
            }],
            updates: vec![Update {
                anchor: "galbridge:t:2".into(),
                target_id: "c2".into(),
                rename: None,
                changes: vec![FieldChange {
                    field: Field::JobTitle,
                    old: "Analyst".into(),
                    new: "Engineer".into(),
                }],
                unhide: false,
                entry: Entry::new("galbridge:t:2"),
                name: "Bob".into(),
            }],
            removals: vec![
                Removal {
                    anchor: "galbridge:t:3".into(),
                    target_id: "c3".into(),
                    display_name: "Carol".into(),
                    action: RemovalAction::Delete,
                    reason: "removed".into(),
                },
                Removal {
                    anchor: "galbridge:t:4".into(),
                    target_id: "c4".into(),
                    display_name: "Dan".into(),
                    action: RemovalAction::Hide,
                    reason: "out_of_scope".into(),
                },
            ],
            conflicts: vec![Conflict {
                anchor: "galbridge:t:5".into(),
                kind: ConflictKind::Address,
                detail: "eve@acme.com belongs to mailbox Eve".into(),
            }],
            unchanged: 7,
            ..Plan::default()
        }
    }

    #[test]
    fn counts_split_deletes_and_hides() {
        let counts = sample().counts();
        assert_eq!(
            counts,
            PlanCounts {
                creates: 1,
                updates: 1,
                deletes: 1,
                hides: 1,
                adoptions: 0,
                conflicts: 1,
                unchanged: 7
            }
        );
    }

    #[test]
    fn json_round_trips_with_field_level_diffs() {
        let plan = sample();
        let json = plan.to_json();
        assert_eq!(
            json["updates"][0]["changes"][0],
            serde_json::json!({"field": "job_title", "old": "Analyst", "new": "Engineer"})
        );
        assert_eq!(
            json["creates"][0]["entry"]["fields"]["display_name"],
            "Ada Lovelace"
        );
        assert_eq!(json["removals"][1]["action"], "hide");
        assert_eq!(json["conflicts"][0]["kind"], "address");
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn table_shows_every_change() {
        let table = sample().to_table();
        assert!(
            table.contains("1 create, 1 update, 1 delete, 1 hide"),
            "{table}"
        );
        assert!(table.contains("+ create  Ada Lovelace"));
        assert!(
            table.contains("job_title        \"Analyst\" -> \"Engineer\""),
            "{table}"
        );
        assert!(table.contains("- delete  Carol"));
        assert!(table.contains("- hide    Dan"));
        assert!(table.contains("conflict_address"));
        assert!(
            !table.contains("job_title        \n"),
            "blank fields of a create are not listed"
        );
    }
}
