//! Runs of a link against in-memory doubles: what ends up in the target, the checkpoint and the report.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::engine::diff::{DiffPolicy, OnDelete};
use crate::engine::entry::Field;
use crate::engine::lifecycle::{LinkRunner, RunError};
use crate::engine::mapping::Mapping;
use crate::engine::safety::SafetyLimits;
use crate::engine::scope::ScopeRules;
use crate::engine::spec::MailContactOptions;
use crate::engine::spec::{LinkSpec, TargetSpec};
use crate::engine::testing::{FakeDirectory, FakeExchange, MemStore};
use crate::report::{RunMode, RunOptions, RunOutcome, RunReport};
use crate::state::StateStore;

const TENANT: &str = "11111111-1111-4111-8111-111111111111";

struct World {
    store: Arc<MemStore>,
    source: Arc<FakeDirectory>,
    target: Arc<FakeExchange>,
    runner: LinkRunner,
    contacts: MailContacts,
    link: LinkSpec,
}

fn user(id: &str, name: &str, title: &str) -> serde_json::Value {
    let (given, surname) = name.split_once(' ').unwrap_or((name, ""));
    json!({
        "id": id, "displayName": name, "givenName": given, "surname": surname,
        "mail": format!("{}@acme.com", given.to_lowercase()), "jobTitle": title, "department": "Build",
        "companyName": "Acme", "officeLocation": "HQ", "businessPhones": ["+1 555 0100"], "mobilePhone": "+1 555 0199",
        "streetAddress": "1 Main St", "city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US",
        "accountEnabled": true, "userType": "Member"
    })
}

fn world() -> World {
    let store = Arc::new(MemStore::default());
    let source = Arc::new(FakeDirectory::new(TENANT));
    let target = Arc::new(FakeExchange::default());
    for (id, name, title) in [
        ("u1", "Ada Lovelace", "Analyst"),
        ("u2", "Bob Smith", "Clerk"),
        ("u3", "Carol King", "Chief"),
    ] {
        source.put_user(user(id, name, title));
    }
    let runner = LinkRunner {
        store: store.clone(),
        source: source.clone(),
        counters: None,
        holder: "test:1".into(),
        lease_ttl: chrono::Duration::seconds(60),
    };
    let link = LinkSpec {
        name: "acme-to-northern".into(),
        source_tenant: "acme".into(),
        target_tenant: "northern".into(),
        scope: ScopeRules::default(),
        mapping: Mapping::defaults(),
        overrides: BTreeMap::new(),
        target: TargetSpec::MailContact(MailContactOptions {
            anchor_attribute: 15,
            policy: DiffPolicy::default(),
        }),
        safety: SafetyLimits {
            max_deletes: 50,
            max_delete_percent: 100,
        },
        interval: chrono::Duration::minutes(15),
        full_reconcile_every: chrono::Duration::hours(24),
        max_concurrency: 4,
    };
    World {
        store,
        source,
        contacts: MailContacts {
            port: target.clone(),
            options: MailContactOptions {
                anchor_attribute: 15,
                policy: DiffPolicy::default(),
            },
        },
        target,
        runner,
        link,
    }
}

impl World {
    async fn run(&self) -> RunReport {
        self.run_with(RunOptions::default()).await
    }

    async fn run_with(&self, options: RunOptions) -> RunReport {
        self.runner
            .sync(&self.contacts, &self.link, &options)
            .await
            .unwrap()
    }

    fn contact(&self, address: &str) -> crate::engine::testing::FakeContact {
        self.target
            .by_address(address)
            .unwrap_or_else(|| panic!("no contact {address}"))
    }
}

#[tokio::test]
async fn first_run_creates_every_contact_with_every_field_and_anchor() {
    let w = world();
    let report = w.run().await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    assert_eq!(report.mode, RunMode::Full);
    assert_eq!(report.applied.creates, 3);
    let ada = w.contact("ada@acme.com");
    assert_eq!(ada.name, "Ada Lovelace");
    assert_eq!(
        ada.custom.get(&15).map(String::as_str),
        Some(format!("galbridge:{TENANT}:u1").as_str())
    );
    for (field, value) in [
        (Field::DisplayName, "Ada Lovelace"),
        (Field::GivenName, "Ada"),
        (Field::Surname, "Lovelace"),
        (Field::JobTitle, "Analyst"),
        (Field::Department, "Build"),
        (Field::Company, "Acme"),
        (Field::Office, "HQ"),
        (Field::BusinessPhone, "+1 555 0100"),
        (Field::MobilePhone, "+1 555 0199"),
        (Field::StreetAddress, "1 Main St"),
        (Field::City, "Springfield"),
        (Field::State, "IL"),
        (Field::PostalCode, "62701"),
        (Field::Country, "US"),
    ] {
        assert_eq!(
            ada.fields.get(&field).map(String::as_str),
            Some(value),
            "{field}"
        );
    }
    let checkpoint = w.store.load_checkpoint(&w.link.name).await.unwrap();
    assert!(checkpoint.delta_link.is_some());
    assert!(checkpoint.last_full_sync.is_some());
    assert_eq!(w.store.objects(&w.link.name).len(), 3);
    assert_eq!(
        w.store
            .list_run_records(&w.link.name, 5)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        w.store.current_lease(&w.link.name).await.unwrap().is_none(),
        "lease released"
    );
}

#[tokio::test]
async fn incremental_runs_apply_only_changes() {
    let w = world();
    w.run().await;
    let writes_before = w.target.writes();

    w.source.set("u1", "jobTitle", json!("Engineer"));
    w.source.delete_user("u2");
    w.source.set("u3", "accountEnabled", json!(false));
    w.source.put_user(user("u4", "Dan Brown", "Driver"));
    let report = w.run().await;

    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(report.source_read, 4, "only the changed people are read");
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    assert_eq!(
        (
            report.applied.updates,
            report.applied.deletes,
            report.applied.creates
        ),
        (1, 2, 1)
    );
    assert_eq!(
        w.contact("ada@acme.com").fields[&Field::JobTitle],
        "Engineer"
    );
    assert!(
        w.target.by_address("bob@acme.com").is_none(),
        "deleted user's contact removed"
    );
    assert!(
        w.target.by_address("carol@acme.com").is_none(),
        "disabled user left the scope"
    );
    assert_eq!(w.contact("dan@acme.com").fields[&Field::JobTitle], "Driver");
    // One update (1 write) + two deletes + one create (3 writes): nothing else touched.
    assert_eq!(w.target.writes() - writes_before, 6);

    let quiet = w.run().await;
    assert_eq!(quiet.applied, crate::report::PlanCounts::default());
    assert_eq!(quiet.source_read, 0);
}

#[tokio::test]
async fn unanchored_contacts_are_never_touched() {
    let mut w = world();
    let manual = w.target.add_manual("Zed Manual", "zed@partner.com");
    w.contacts.options.policy = DiffPolicy {
        on_delete: OnDelete::Delete,
        adopt_existing: false,
    };
    w.run().await;
    w.run_with(RunOptions {
        full: true,
        ..RunOptions::default()
    })
    .await;
    let zed = w
        .target
        .contacts()
        .into_iter()
        .find(|c| c.id == manual)
        .expect("manual contact still there");
    assert!(zed.custom.is_empty());
    assert_eq!(zed.fields[&Field::DisplayName], "Zed Manual");
}

#[tokio::test]
async fn address_conflicts_are_reported_and_adoption_is_opt_in() {
    let mut w = world();
    w.target.add_manual("Ada (old)", "ada@acme.com");
    w.target.add_mailbox("bob@acme.com", "Bob Smith Mailbox");
    let report = w.run().await;
    assert_eq!(
        report.outcome,
        RunOutcome::Succeeded,
        "conflicts do not fail the run: {report:?}"
    );
    assert_eq!(report.applied.conflicts, 2);
    let kinds: Vec<&str> = report.failures.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, vec!["conflict_address", "conflict_address"]);
    assert!(
        w.contact("ada@acme.com").custom.is_empty(),
        "not adopted without opt-in"
    );

    w.contacts.options.policy.adopt_existing = true;
    let report = w
        .run_with(RunOptions {
            full: true,
            ..RunOptions::default()
        })
        .await;
    assert_eq!(report.applied.adoptions, 1);
    let ada = w.contact("ada@acme.com");
    assert_eq!(ada.custom[&15], format!("galbridge:{TENANT}:u1"));
    assert_eq!(ada.fields[&Field::DisplayName], "Ada Lovelace");
    assert_eq!(ada.fields[&Field::JobTitle], "Analyst");
}

#[tokio::test]
async fn expired_delta_link_falls_back_to_a_full_read() {
    let w = world();
    w.run().await;
    w.source.set("u1", "jobTitle", json!("Engineer"));
    w.source.expire_delta_links();
    let report = w.run().await;
    assert_eq!(report.mode, RunMode::Full);
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(report.applied.updates, 1);
    assert_eq!(report.applied.unchanged, 2);
    assert_eq!(
        w.contact("ada@acme.com").fields[&Field::JobTitle],
        "Engineer"
    );
}

#[tokio::test]
async fn mass_deletion_is_quarantined_until_released() {
    let mut w = world();
    w.link.safety = SafetyLimits {
        max_deletes: 1,
        max_delete_percent: 100,
    };
    w.run().await;
    w.source.delete_user("u1");
    w.source.delete_user("u2");
    w.source.set("u3", "jobTitle", json!("CEO"));
    let report = w.run().await;
    assert_eq!(report.outcome, RunOutcome::Quarantined);
    assert_eq!(report.quarantine.as_ref().map(|q| q.held_deletes), Some(2));
    assert_eq!(report.applied.updates, 1, "the rest of the plan applies");
    assert!(
        w.target.by_address("ada@acme.com").is_some()
            && w.target.by_address("bob@acme.com").is_some()
    );
    assert_eq!(w.contact("carol@acme.com").fields[&Field::JobTitle], "CEO");

    let again = w.run().await;
    assert_eq!(
        again.outcome,
        RunOutcome::Quarantined,
        "still held on the next run"
    );
    assert_eq!(
        again.quarantine.as_ref().map(|q| q.since),
        report.quarantine.as_ref().map(|q| q.since)
    );

    let released = w
        .run_with(RunOptions {
            allow_deletes: true,
            ..RunOptions::default()
        })
        .await;
    assert_eq!(released.outcome, RunOutcome::Succeeded);
    assert_eq!(released.applied.deletes, 2);
    assert!(w.target.by_address("ada@acme.com").is_none());
    assert!(
        w.store
            .load_checkpoint(&w.link.name)
            .await
            .unwrap()
            .quarantine
            .is_none()
    );
}

#[tokio::test]
async fn a_source_that_returns_nobody_never_empties_the_target() {
    let mut w = world();
    w.link.safety = SafetyLimits {
        max_deletes: 1000,
        max_delete_percent: 100,
    };
    w.run().await;
    for id in ["u1", "u2", "u3"] {
        w.source.delete_user(id);
    }
    let report = w
        .run_with(RunOptions {
            full: true,
            ..RunOptions::default()
        })
        .await;
    assert_eq!(report.outcome, RunOutcome::Quarantined);
    assert_eq!(w.target.contacts().len(), 3);
}

#[tokio::test]
async fn an_unreachable_source_fails_the_run_and_touches_nothing() {
    let w = world();
    w.run().await;
    w.source.set_unreachable(true);
    let writes = w.target.writes();
    let report = w
        .run_with(RunOptions {
            full: true,
            ..RunOptions::default()
        })
        .await;
    assert_eq!(report.outcome, RunOutcome::Failed);
    assert_eq!(report.failures[0].kind, "source_unreadable");
    assert_eq!(w.target.writes(), writes);
    assert!(w.store.current_lease(&w.link.name).await.unwrap().is_none());
}

#[tokio::test]
async fn a_second_run_of_the_same_link_is_refused() {
    let w = world();
    let lease = w
        .store
        .acquire_lease(&w.link.name, "other-host:9", chrono::Duration::seconds(60))
        .await
        .unwrap();
    let refused = w
        .runner
        .sync(&w.contacts, &w.link, &RunOptions::default())
        .await;
    assert!(
        matches!(refused, Err(RunError::LeaseHeld { ref holder, .. }) if holder == "other-host:9"),
        "{refused:?}"
    );
    assert!(w.target.contacts().is_empty());
    w.store.release_lease(&lease).await.unwrap();
    assert_eq!(w.run().await.outcome, RunOutcome::Succeeded);
}

#[tokio::test]
async fn two_simultaneous_runs_one_is_refused() {
    let w = world();
    w.source.set_latency(std::time::Duration::from_millis(50));
    let options = RunOptions::default();
    let (a, b) = tokio::join!(
        w.runner.sync(&w.contacts, &w.link, &options),
        w.runner.sync(&w.contacts, &w.link, &options)
    );
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(RunError::LeaseHeld { .. })))
        .count();
    assert_eq!(refused, 1, "{a:?} {b:?}");
    assert_eq!(w.target.contacts().len(), 3, "no duplicates");
}

#[tokio::test]
async fn a_crash_between_new_and_set_is_resolved_without_duplicates() {
    let w = world();
    // Set-MailContact fails right after the first New-MailContact: the contact exists without its anchor.
    w.target.fail_next_set_mail_contact(1);
    let first = w.run().await;
    assert_eq!(first.outcome, RunOutcome::PartiallyFailed);
    assert_eq!(w.target.contacts().len(), 3);
    assert!(
        w.store
            .load_checkpoint(&w.link.name)
            .await
            .unwrap()
            .delta_link
            .is_none(),
        "delta link did not advance"
    );

    let second = w.run().await;
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{second:?}");
    let contacts = w.target.contacts();
    assert_eq!(contacts.len(), 3, "no duplicate");
    for contact in &contacts {
        assert!(
            contact
                .custom
                .get(&15)
                .is_some_and(|a| a.starts_with("galbridge:")),
            "{contact:?}"
        );
        assert_eq!(
            contact.fields.get(&Field::Department).map(String::as_str),
            Some("Build"),
            "{contact:?}"
        );
    }
    assert!(
        w.store
            .objects(&w.link.name)
            .iter()
            .all(|r| !r.target_id.is_empty())
    );
}

#[tokio::test]
async fn full_reconcile_repairs_deleted_and_edited_contacts() {
    let w = world();
    w.run().await;
    let ada = w.contact("ada@acme.com");
    w.target.delete(&w.contact("bob@acme.com").id);
    w.target.edit(&ada.id, Field::JobTitle, "Hand edited");
    let incremental = w.run().await;
    assert_eq!(
        incremental.applied.creates + incremental.applied.updates,
        0,
        "incremental runs trust the checkpoint"
    );
    let report = w
        .run_with(RunOptions {
            full: true,
            ..RunOptions::default()
        })
        .await;
    assert_eq!((report.applied.creates, report.applied.updates), (1, 1));
    assert!(w.target.by_address("bob@acme.com").is_some());
    assert_eq!(
        w.contact("ada@acme.com").fields[&Field::JobTitle],
        "Analyst"
    );
}

#[tokio::test]
async fn dry_run_writes_nothing_and_returns_the_plan() {
    let w = world();
    let report = w
        .run_with(RunOptions {
            dry_run: true,
            ..RunOptions::default()
        })
        .await;
    assert_eq!(report.outcome, RunOutcome::Planned);
    assert_eq!(report.mode, RunMode::DryRun);
    assert_eq!(report.planned.creates, 3);
    let plan = report.plan.expect("plan in the report");
    assert_eq!(plan["creates"].as_array().map(Vec::len), Some(3));
    assert!(w.target.contacts().is_empty());
    assert!(w.store.objects(&w.link.name).is_empty());
    assert!(
        w.store
            .load_checkpoint(&w.link.name)
            .await
            .unwrap()
            .delta_link
            .is_none()
    );
}

#[tokio::test]
async fn hide_policy_hides_then_unhides() {
    let mut w = world();
    w.contacts.options.policy.on_delete = OnDelete::Hide;
    w.run().await;
    w.source.set("u1", "accountEnabled", json!(false));
    let hidden = w.run().await;
    assert_eq!(hidden.applied.hides, 1);
    assert!(w.contact("ada@acme.com").hidden);
    w.source.set("u1", "accountEnabled", json!(true));
    let back = w.run().await;
    assert_eq!(back.applied.updates, 1);
    assert!(!w.contact("ada@acme.com").hidden);
}

#[tokio::test]
async fn group_scope_changes_are_noticed() {
    let mut w = world();
    w.link.scope.groups = vec!["g1".into()];
    w.source.set_group("g1", &["u1", "u2"]);
    w.run().await;
    assert_eq!(w.target.contacts().len(), 2);
    w.source.set_group("g1", &["u1", "u3"]);
    let report = w.run().await;
    assert_eq!((report.applied.creates, report.applied.deletes), (1, 1));
    assert!(w.target.by_address("carol@acme.com").is_some());
    assert!(w.target.by_address("bob@acme.com").is_none());
}

#[tokio::test]
async fn purge_lists_then_removes_only_what_the_link_manages() {
    let w = world();
    w.run().await;
    let manual = w.target.add_manual("Zed Manual", "zed@partner.com");
    let preview = w.runner.purge(&w.contacts, &w.link, false).await.unwrap();
    assert_eq!(preview.outcome, RunOutcome::Planned);
    assert_eq!(preview.planned.deletes, 3);
    assert_eq!(w.target.contacts().len(), 4, "a dry run removes nothing");

    let purged = w.runner.purge(&w.contacts, &w.link, true).await.unwrap();
    assert_eq!(purged.outcome, RunOutcome::Succeeded, "{purged:?}");
    let left = w.target.contacts();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, manual);
    assert!(w.store.objects(&w.link.name).is_empty());
    assert!(
        w.store
            .load_checkpoint(&w.link.name)
            .await
            .unwrap()
            .delta_link
            .is_none()
    );
}

#[tokio::test]
async fn an_incremental_run_names_a_newcomer_around_people_it_did_not_load() {
    let w = world();
    w.run().await;
    // A second "Ada Lovelace" arrives; the first is not among the changes, so her record is not loaded, yet her
    // name is taken.
    let mut twin = user("u5", "Ada Lovelace", "Analyst");
    twin["mail"] = json!("ada.l@acme.com");
    w.source.put_user(twin);
    let report = w.run().await;
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(report.applied.creates, 1, "{report:?}");
    assert_eq!(w.contact("ada@acme.com").name, "Ada Lovelace");
    let newcomer = w.contact("ada.l@acme.com").name;
    assert!(
        newcomer.starts_with("Ada Lovelace ") && newcomer.len() > "Ada Lovelace ".len(),
        "{newcomer}"
    );
}
