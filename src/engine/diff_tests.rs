//! Tests of the diff: what a run would do to the target for given source, checkpoint and target states.

use super::*;

const PREFIX: &str = "galbridge:src:";

fn person(id: &str, display: &str, title: &str) -> Entry {
    let mut entry = Entry::new(format!("{PREFIX}{id}"));
    entry.set(Field::DisplayName, display);
    entry.set(Field::Email, format!("{id}@acme.com"));
    entry.set(Field::JobTitle, title);
    entry
}

fn managed(entry: &Entry, name: &str) -> ManagedObject {
    ManagedObject {
        anchor: entry.anchor.clone(),
        target_id: format!("t-{}", entry.anchor),
        name: name.to_owned(),
        hidden: false,
        pending: false,
        entry: entry.clone(),
    }
}

fn target_of(entry: &Entry, name: &str) -> TargetObject {
    TargetObject {
        id: format!("t-{}", entry.anchor),
        anchor: Some(entry.anchor.clone()),
        name: name.to_owned(),
        address: entry.get(Field::Email).to_owned(),
        hidden: false,
        fields: entry.fields.clone(),
    }
}

fn source(entries: &[&Entry], complete: bool) -> SourceView {
    SourceView {
        desired: entries
            .iter()
            .map(|e| (e.anchor.clone(), (*e).clone()))
            .collect(),
        gone: BTreeMap::new(),
        complete,
    }
}

fn state(objects: &[ManagedObject]) -> BTreeMap<String, ManagedObject> {
    objects
        .iter()
        .map(|m| (m.anchor.clone(), m.clone()))
        .collect()
}

fn run(
    source: &SourceView,
    managed: &BTreeMap<String, ManagedObject>,
    target: Option<&[TargetObject]>,
    policy: DiffPolicy,
) -> Plan {
    diff(&DiffInput {
        source,
        managed,
        target,
        anchor_prefix: PREFIX,
        policy: &policy,
        names: None,
    })
}

#[test]
fn first_run_creates_everyone_with_every_field() {
    let ada = person("ada", "Ada Lovelace", "Analyst");
    let bob = person("bob", "Bob Smith", "");
    let plan = run(
        &source(&[&ada, &bob], true),
        &BTreeMap::new(),
        Some(&[]),
        DiffPolicy::default(),
    );
    assert_eq!(plan.creates.len(), 2);
    let created = plan
        .creates
        .iter()
        .find(|c| c.anchor == ada.anchor)
        .unwrap();
    assert_eq!(created.entry, ada);
    assert_eq!(created.name, "Ada Lovelace");
    assert!(plan.updates.is_empty() && plan.removals.is_empty() && plan.conflicts.is_empty());
}

#[test]
fn unchanged_entries_are_counted_and_changes_are_field_level() {
    let ada = person("ada", "Ada Lovelace", "Analyst");
    let bob = person("bob", "Bob Smith", "Clerk");
    let managed = state(&[managed(&ada, "Ada Lovelace"), managed(&bob, "Bob Smith")]);
    let promoted = person("ada", "Ada Lovelace", "Engineer");
    let plan = run(
        &source(&[&promoted, &bob], false),
        &managed,
        None,
        DiffPolicy::default(),
    );
    assert_eq!(plan.unchanged, 1);
    assert_eq!(plan.updates.len(), 1);
    let update = &plan.updates[0];
    assert_eq!(
        update.changes,
        vec![FieldChange {
            field: Field::JobTitle,
            old: "Analyst".into(),
            new: "Engineer".into()
        }]
    );
    assert_eq!(update.rename, None);
    assert_eq!(update.target_id, format!("t-{}", ada.anchor));
}

#[test]
fn incremental_removals_follow_the_on_delete_policy() {
    let ada = person("ada", "Ada Lovelace", "Analyst");
    let bob = person("bob", "Bob Smith", "Clerk");
    let managed = state(&[managed(&ada, "Ada Lovelace"), managed(&bob, "Bob Smith")]);
    let mut changes = source(&[], false);
    changes.gone.insert(ada.anchor.clone(), "removed".into());
    changes
        .gone
        .insert(format!("{PREFIX}never-synced"), "out_of_scope".into());

    let plan = run(&changes, &managed, None, DiffPolicy::default());
    assert_eq!(
        plan.removals.len(),
        1,
        "only managed objects are removed; bob was not mentioned"
    );
    assert_eq!(plan.removals[0].anchor, ada.anchor);
    assert_eq!(plan.removals[0].action, RemovalAction::Delete);
    assert_eq!(plan.removals[0].display_name, "Ada Lovelace");

    let hide = run(
        &changes,
        &managed,
        None,
        DiffPolicy {
            on_delete: OnDelete::Hide,
            adopt_existing: false,
        },
    );
    assert_eq!(hide.removals[0].action, RemovalAction::Hide);

    let keep = run(
        &changes,
        &managed,
        None,
        DiffPolicy {
            on_delete: OnDelete::Keep,
            adopt_existing: false,
        },
    );
    assert!(keep.removals.is_empty());
    assert_eq!(keep.forget, vec![ada.anchor.clone()]);
}

#[test]
fn hidden_objects_stay_hidden_then_come_back() {
    let ada = person("ada", "Ada Lovelace", "Analyst");
    let mut hidden = managed(&ada, "Ada Lovelace");
    hidden.hidden = true;
    let managed_state = state(&[hidden]);
    let policy = DiffPolicy {
        on_delete: OnDelete::Hide,
        adopt_existing: false,
    };

    let still_gone = run(&source(&[], true), &managed_state, None, policy.clone());
    assert!(
        still_gone.removals.is_empty(),
        "already hidden: nothing to do"
    );

    let back = run(&source(&[&ada], false), &managed_state, None, policy);
    assert_eq!(back.updates.len(), 1);
    assert!(back.updates[0].unhide);
    assert!(back.updates[0].changes.is_empty());
}

#[test]
fn full_reconcile_repairs_drift() {
    let ada = person("ada", "Ada Lovelace", "Analyst");
    let bob = person("bob", "Bob Smith", "Clerk");
    let carol = person("carol", "Carol King", "Chief");
    let orphan = person("zed", "Zed Orphan", "");
    let managed = state(&[managed(&ada, "Ada Lovelace"), managed(&bob, "Bob Smith")]);
    // In the target: bob was deleted by a user, ada's title was edited by hand, zed is anchored but unknown,
    // an unanchored contact and another tenant's contact exist.
    let mut ada_drifted = target_of(&ada, "Ada Lovelace");
    ada_drifted
        .fields
        .insert(Field::JobTitle, "Hand edited".into());
    let unanchored = TargetObject {
        id: "manual".into(),
        anchor: None,
        name: "Manual Contact".into(),
        address: "manual@elsewhere.com".into(),
        hidden: false,
        fields: BTreeMap::new(),
    };
    let foreign = TargetObject {
        anchor: Some("galbridge:other:1".into()),
        id: "foreign".into(),
        ..unanchored.clone()
    };
    let target = vec![
        ada_drifted,
        target_of(&orphan, "Zed Orphan"),
        target_of(&carol, "Carol King"),
        unanchored,
        foreign,
    ];

    let plan = run(
        &source(&[&ada, &bob, &carol], true),
        &managed,
        Some(&target),
        DiffPolicy::default(),
    );

    assert_eq!(plan.creates.len(), 1, "bob comes back");
    assert_eq!(plan.creates[0].anchor, bob.anchor);
    let ada_update = plan
        .updates
        .iter()
        .find(|u| u.anchor == ada.anchor)
        .unwrap();
    assert_eq!(ada_update.changes[0].old, "Hand edited");
    assert_eq!(ada_update.changes[0].new, "Analyst");
    assert_eq!(
        plan.unchanged, 1,
        "carol is anchored and right, re-taken into the checkpoint"
    );
    assert_eq!(plan.removals.len(), 1);
    assert_eq!(plan.removals[0].anchor, orphan.anchor);
    assert_eq!(plan.removals[0].reason, "orphaned");
    let touched: Vec<&str> = plan
        .updates
        .iter()
        .map(|u| u.target_id.as_str())
        .chain(plan.removals.iter().map(|r| r.target_id.as_str()))
        .collect();
    assert!(
        !touched.contains(&"manual") && !touched.contains(&"foreign"),
        "never touch what is not ours"
    );
}

#[test]
fn full_reconcile_forgets_records_already_gone() {
    let ada = person("ada", "Ada Lovelace", "Analyst");
    let managed = state(&[managed(&ada, "Ada Lovelace")]);
    let plan = run(
        &source(&[], true),
        &managed,
        Some(&[]),
        DiffPolicy::default(),
    );
    assert!(plan.removals.is_empty());
    assert_eq!(plan.forget, vec![ada.anchor.clone()]);
}

#[test]
fn same_address_is_adopted_only_when_opted_in() {
    let ada = person("ada", "Ada Lovelace", "Analyst");
    let existing = TargetObject {
        id: "pre-existing".into(),
        anchor: None,
        name: "Ada L".into(),
        address: "ADA@acme.com".into(),
        hidden: false,
        fields: BTreeMap::from([(Field::DisplayName, "Ada L".to_owned())]),
    };
    let target = vec![existing];
    let refused = run(
        &source(&[&ada], true),
        &BTreeMap::new(),
        Some(&target),
        DiffPolicy::default(),
    );
    assert!(refused.creates.is_empty() && refused.adoptions.is_empty());
    assert_eq!(refused.conflicts.len(), 1);
    assert_eq!(refused.conflicts[0].kind, ConflictKind::Address);
    assert!(refused.conflicts[0].detail.contains("adopt_existing"));

    let adopted = run(
        &source(&[&ada], true),
        &BTreeMap::new(),
        Some(&target),
        DiffPolicy {
            on_delete: OnDelete::Delete,
            adopt_existing: true,
        },
    );
    assert_eq!(adopted.adoptions.len(), 1);
    assert_eq!(adopted.adoptions[0].target_id, "pre-existing");
    assert!(
        adopted.adoptions[0]
            .changes
            .iter()
            .any(|c| c.field == Field::DisplayName && c.new == "Ada Lovelace")
    );
    assert!(adopted.creates.is_empty());
}

#[test]
fn namesakes_get_distinct_stable_names_that_do_not_flap() {
    let first = person("js1", "John Smith", "");
    let second = person("js2", "John Smith", "");
    let plan = run(
        &source(&[&first, &second], true),
        &BTreeMap::new(),
        Some(&[]),
        DiffPolicy::default(),
    );
    let names: BTreeSet<&str> = plan.creates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains("John Smith"));

    // Next run: both are managed under their names; nothing changes, nobody is renamed.
    let managed = state(
        &plan
            .creates
            .iter()
            .map(|c| managed(&c.entry, &c.name))
            .collect::<Vec<_>>(),
    );
    let again = run(
        &source(&[&first, &second], false),
        &managed,
        None,
        DiffPolicy::default(),
    );
    assert_eq!(again.unchanged, 2);
    assert!(again.updates.is_empty());

    // A third John Smith arrives: the existing two keep their names.
    let third = person("js3", "John Smith", "");
    let later = run(
        &source(&[&third], false),
        &managed,
        None,
        DiffPolicy::default(),
    );
    assert_eq!(later.creates.len(), 1);
    assert!(!names.contains(later.creates[0].name.as_str()));
}

#[test]
fn display_name_change_renames() {
    let ada = person("ada", "Ada Lovelace", "");
    let managed = state(&[managed(&ada, "Ada Lovelace")]);
    let renamed = person("ada", "Ada King", "");
    let plan = run(
        &source(&[&renamed], false),
        &managed,
        None,
        DiffPolicy::default(),
    );
    assert_eq!(
        plan.updates[0].rename,
        Some(("Ada Lovelace".into(), "Ada King".into()))
    );
}

#[test]
fn unanchored_namesake_in_target_forces_a_suffix() {
    let ada = person("ada", "Ada Lovelace", "");
    let manual = TargetObject {
        id: "manual".into(),
        anchor: None,
        name: "Ada Lovelace".into(),
        address: "ada.l@elsewhere.com".into(),
        hidden: false,
        fields: BTreeMap::new(),
    };
    let plan = run(
        &source(&[&ada], true),
        &BTreeMap::new(),
        Some(&[manual]),
        DiffPolicy::default(),
    );
    assert_eq!(plan.creates.len(), 1);
    assert_ne!(plan.creates[0].name, "Ada Lovelace");
    assert!(plan.creates[0].name.starts_with("Ada Lovelace "));
}
