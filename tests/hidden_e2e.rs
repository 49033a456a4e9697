//! Issue 12, end to end over the production connector and m365-sim: people hidden from the address lists in the
//! source tenant's Exchange (`HiddenFromAddressListsEnabled`; Graph's `showInAddressList` stays null, and hiding
//! is no Graph change) never reach another tenant's GAL nor any phone; hiding someone later removes them per
//! `on_delete`, counted by the deletion threshold; un-hiding brings them back; an incremental run costs one Exchange
//! `Get-Recipient` whatever changed; `hidden = "include"` keeps them; a source app without Exchange permission fails
//! the run with what to grant.

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;
mod phones_support;

use std::collections::BTreeSet;

use engine_support::{World, anchored_contacts, in_default_scope, world};
use galbridge::report::{RunMode, RunOptions, RunOutcome, RunReport};
use galbridge::sync_service::SyncService;
use m365_sim::Service;
use serde_json::{Value, json};

const ONE_WAY: &str = r#"
[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
[links.target]
kind = "mail_contact"
tenant = "northern"
[links.safety]
max_deletes = 10
max_delete_percent = 50
"#;

const LINK: &str = "acme-to-northern";

fn users(world: &World, tenant: &str) -> Vec<Value> {
    world.sim.control().users(tenant).expect("tenant")
}

/// Whether `user` would be in the default scope if it were not hidden.
fn in_scope_but_for_hidden(user: &Value) -> bool {
    let mut shown = user.clone();
    shown["hiddenFromAddressLists"] = json!(false);
    in_default_scope(&shown)
}

fn addresses(contacts: &[Value]) -> BTreeSet<String> {
    contacts
        .iter()
        .filter_map(|c| c["ExternalEmailAddress"].as_str())
        .map(|a| a.trim_start_matches("SMTP:").to_ascii_lowercase())
        .collect()
}

fn mail(user: &Value) -> String {
    user["mail"].as_str().expect("mail").to_ascii_lowercase()
}

fn id(user: &Value) -> &str {
    user["id"].as_str().expect("id")
}

async fn run(world: &World, link: &str) -> RunReport {
    world
        .service
        .run_link(link, RunOptions::default())
        .await
        .expect("run starts")
}

fn hide(world: &World, user: &Value, hidden: bool) {
    world
        .sim
        .control()
        .update_user("acme", id(user), json!({"hiddenFromAddressLists": hidden}))
        .expect("user");
}

/// Requests the simulator served since the last reset: (Exchange `Get-Recipient`, every service).
fn served(world: &World) -> (u64, u64) {
    let control = world.sim.control();
    let get_recipient = control.count(Service::Exchange, "Get-Recipient", None);
    let total = control
        .counters()
        .iter()
        .filter(|row| row.service != Service::Control)
        .map(|row| row.count)
        .sum();
    (get_recipient, total)
}

#[tokio::test]
async fn hidden_people_stay_out_of_the_gal_leave_when_hidden_and_come_back_when_shown() {
    let w = world(&[("acme", 40), ("northern", 10)], ONE_WAY).await;
    let acme = users(&w, "acme");
    let seeded_hidden: Vec<&Value> = acme
        .iter()
        .filter(|u| u["hiddenFromAddressLists"] == true && in_scope_but_for_hidden(u))
        .collect();
    assert!(
        !seeded_hidden.is_empty(),
        "the seed hides some people who are otherwise in scope"
    );
    // Graph does not tell: the flag lives in Exchange only (docs/microsoft-facts.md, "Hidden from address lists").
    assert!(acme.iter().all(|u| u["showInAddressList"] != false));

    let first = run(&w, LINK).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    assert_eq!(first.mode, RunMode::Full);
    let expected: BTreeSet<String> = acme
        .iter()
        .filter(|u| in_default_scope(u))
        .map(mail)
        .collect();
    let contacts = addresses(&anchored_contacts(&w, "northern"));
    assert_eq!(contacts, expected, "exactly the people in scope");
    for hidden in &seeded_hidden {
        assert!(
            !contacts.contains(&mail(hidden)),
            "{} is hidden",
            mail(hidden)
        );
    }

    // Hidden later: a leaver (on_delete = delete), noticed by an incremental run although Graph's delta is silent.
    let shown: Vec<&Value> = acme.iter().filter(|u| in_default_scope(u)).collect();
    let later = shown[0];
    hide(&w, later, true);
    w.sim.control().reset_counters();
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(
        (report.applied.creates, report.applied.deletes),
        (0, 1),
        "{report:#?}"
    );
    assert!(!addresses(&anchored_contacts(&w, "northern")).contains(&mail(later)));
    assert_eq!(served(&w).0, 1, "one Get-Recipient per incremental run");

    // Un-hidden: back, both the one hidden later and one hidden from the start.
    hide(&w, later, false);
    hide(&w, seeded_hidden[0], false);
    w.sim.control().reset_counters();
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(
        (report.applied.creates, report.applied.deletes),
        (2, 0),
        "{report:#?}"
    );
    let contacts = addresses(&anchored_contacts(&w, "northern"));
    assert!(contacts.contains(&mail(later)));
    assert!(contacts.contains(&mail(seeded_hidden[0])));
    assert_eq!(served(&w).0, 1);
    assert_eq!(
        w.sim
            .control()
            .count(Service::Graph, "GET /v1.0/users/{id}", None),
        2,
        "the people shown again are read from Graph one by one: {:?}",
        w.sim.control().counters()
    );

    // A full reconcile agrees with the incremental runs.
    let full = w
        .service
        .run_link(
            LINK,
            RunOptions {
                full: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(full.outcome, RunOutcome::Succeeded, "{full:#?}");
    assert_eq!(
        full.applied.creates + full.applied.updates + full.applied.deletes,
        0,
        "{full:#?}"
    );
}

#[tokio::test]
async fn an_incremental_run_costs_one_exchange_request_with_zero_or_five_changes() {
    let w = world(&[("acme", 60), ("northern", 10)], ONE_WAY).await;
    let first = run(&w, LINK).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");

    w.sim.control().reset_counters();
    let quiet = run(&w, LINK).await;
    assert_eq!(quiet.outcome, RunOutcome::Succeeded, "{quiet:#?}");
    assert_eq!(quiet.mode, RunMode::Incremental);
    let (get_recipient, total) = served(&w);
    eprintln!(
        "incremental run, 0 changes: Get-Recipient {get_recipient}, requests {total}: {:?}",
        w.sim.control().counters()
    );
    assert_eq!(get_recipient, 1, "no change still asks Exchange once");
    assert_eq!(total, 2, "users/delta and one Get-Recipient");
    assert_eq!(
        w.sim.control().count(Service::Exchange, "", None),
        1,
        "and nothing else of Exchange"
    );
    let quiet_total = total;

    let people: Vec<Value> = users(&w, "acme")
        .into_iter()
        .filter(in_default_scope)
        .take(5)
        .collect();
    for (n, person) in people.iter().enumerate() {
        w.sim
            .control()
            .update_user(
                "acme",
                id(person),
                json!({"jobTitle": format!("Title {n}")}),
            )
            .unwrap();
    }
    w.sim.control().reset_counters();
    let five = run(&w, LINK).await;
    assert_eq!(five.outcome, RunOutcome::Succeeded, "{five:#?}");
    assert_eq!(five.mode, RunMode::Incremental);
    assert_eq!(five.applied.updates, 5, "{five:#?}");
    let (get_recipient, total) = served(&w);
    eprintln!(
        "incremental run, 5 changes: Get-Recipient {get_recipient}, requests {total}: {:?}",
        w.sim.control().counters()
    );
    assert_eq!(
        get_recipient, 1,
        "five changed people are asked about in the same request"
    );
    assert_eq!(
        w.sim
            .control()
            .count(Service::Graph, "GET /v1.0/users/{id}", None),
        0,
        "nobody was shown again: no per-person Graph read"
    );
    // The five writes (Set-Contact), and nothing proportional to the tenant's size.
    assert_eq!(
        total,
        quiet_total + 5,
        "{total} requests for 5 changes (quiet run: {quiet_total})"
    );
}

#[tokio::test]
async fn sixty_changed_people_are_asked_about_in_two_requests_of_at_most_fifty() {
    let w = world(&[("acme", 120), ("northern", 5)], ONE_WAY).await;
    assert_eq!(run(&w, LINK).await.outcome, RunOutcome::Succeeded);
    let people: Vec<Value> = users(&w, "acme")
        .into_iter()
        .filter(in_default_scope)
        .take(60)
        .collect();
    assert_eq!(people.len(), 60);
    for person in &people {
        w.sim
            .control()
            .update_user("acme", id(person), json!({"department": "Moved"}))
            .unwrap();
    }
    w.sim.control().reset_counters();
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(report.applied.updates, 60, "{report:#?}");
    assert_eq!(served(&w).0, 2, "50 + 10 ids");
}

#[tokio::test]
async fn hiding_many_people_at_once_is_held_by_the_deletion_threshold() {
    let w = world(&[("acme", 60), ("northern", 10)], ONE_WAY).await;
    let first = run(&w, LINK).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    let shown: Vec<Value> = users(&w, "acme")
        .into_iter()
        .filter(in_default_scope)
        .take(12)
        .collect();
    for person in &shown {
        hide(&w, person, true);
    }
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Quarantined, "{report:#?}");
    assert_eq!(report.quarantine.as_ref().unwrap().held_deletes, 12);
    let contacts = addresses(&anchored_contacts(&w, "northern"));
    assert!(shown.iter().all(|p| contacts.contains(&mail(p))), "held");

    let released = w
        .service
        .run_link(
            LINK,
            RunOptions {
                allow_deletes: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(released.outcome, RunOutcome::Succeeded, "{released:#?}");
    assert_eq!(released.applied.deletes, 12, "{released:#?}");
    let contacts = addresses(&anchored_contacts(&w, "northern"));
    assert!(shown.iter().all(|p| !contacts.contains(&mail(p))));
}

#[tokio::test]
async fn on_delete_hide_hides_the_contact_of_someone_hidden_later() {
    let link = ONE_WAY.replace(
        "tenant = \"northern\"\n",
        "tenant = \"northern\"\non_delete = \"hide\"\n",
    );
    let w = world(&[("acme", 30), ("northern", 10)], &link).await;
    assert_eq!(run(&w, LINK).await.outcome, RunOutcome::Succeeded);
    let person = users(&w, "acme")
        .into_iter()
        .find(in_default_scope)
        .unwrap();
    hide(&w, &person, true);
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.applied.hides, 1, "{report:#?}");
    let contact = anchored_contacts(&w, "northern")
        .into_iter()
        .find(|c| addresses(std::slice::from_ref(c)).contains(&mail(&person)))
        .expect("kept, hidden");
    assert_eq!(contact["HiddenFromAddressListsEnabled"], true);
}

#[tokio::test]
async fn include_keeps_hidden_people_and_needs_no_exchange_permission_in_the_source() {
    let link = ONE_WAY.replace(
        "tenant = \"acme\"\n",
        "tenant = \"acme\"\nhidden = \"include\"\n",
    );
    let w = world(&[("acme", 40), ("northern", 10)], &link).await;
    let without_exchange: Vec<&str> = m365_sim::DEFAULT_PERMISSIONS
        .iter()
        .copied()
        .filter(|p| *p != "Exchange.ManageAsApp")
        .collect();
    w.sim
        .control()
        .set_permissions("acme", &without_exchange)
        .unwrap();
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    let expected: BTreeSet<String> = users(&w, "acme")
        .iter()
        .filter(|u| in_scope_but_for_hidden(u))
        .map(mail)
        .collect();
    assert!(
        users(&w, "acme")
            .iter()
            .any(|u| u["hiddenFromAddressLists"] == true && in_scope_but_for_hidden(u))
    );
    assert_eq!(addresses(&anchored_contacts(&w, "northern")), expected);
}

#[tokio::test]
async fn graph_mode_warns_in_every_report() {
    let link = ONE_WAY.replace(
        "tenant = \"acme\"\n",
        "tenant = \"acme\"\nhidden = \"graph\"\n",
    );
    let w = world(&[("acme", 20), ("northern", 5)], &link).await;
    for _ in 0..2 {
        let report = run(&w, LINK).await;
        assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
        assert!(
            report.summary.contains("warning: hidden = \"graph\""),
            "{}",
            report.summary
        );
    }
}

#[tokio::test]
async fn without_exchange_permission_in_the_source_the_run_and_the_plan_fail_saying_what_to_grant()
{
    let w = world(&[("acme", 20), ("northern", 5)], ONE_WAY).await;
    let without_exchange: Vec<&str> = m365_sim::DEFAULT_PERMISSIONS
        .iter()
        .copied()
        .filter(|p| *p != "Exchange.ManageAsApp")
        .collect();
    w.sim
        .control()
        .set_permissions("acme", &without_exchange)
        .unwrap();
    for dry_run in [true, false] {
        let report = w
            .service
            .run_link(
                LINK,
                RunOptions {
                    dry_run,
                    ..RunOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(report.outcome, RunOutcome::Failed, "{report:#?}");
        let reason = &report.failures[0].reason;
        for needle in [
            "\"acme\"",
            "Exchange.ManageAsApp",
            "View-Only Recipients",
            "hidden = \"include\"",
        ] {
            assert!(reason.contains(needle), "{needle} in {reason}");
        }
    }
    assert!(
        anchored_contacts(&w, "northern").is_empty(),
        "nobody synced"
    );
}

// ---- phones -------------------------------------------------------------------------------------------------

const FOLDER: &str = "Acme Directory";

const PHONES: &str = r#"
[[links]]
name = "acme-phones"
[links.source]
tenant = "acme"
[links.target]
kind = "personal_contacts"
tenant = "northern"
mailboxes = { all = true }
folder = "Acme Directory"
[links.safety]
max_deletes = 1000
max_delete_percent = 100
"#;

/// Asserts every writable Northern mailbox's folder holds exactly `expected` (anchors).
fn assert_every_phone_holds(w: &World, expected: &BTreeSet<String>, context: &str) {
    let northern = users(w, "northern");
    let mailboxes = phones_support::writable_mailboxes(&northern);
    assert!(!mailboxes.is_empty());
    for mailbox in &mailboxes {
        let folder = phones_support::folder_by_anchor(&w.sim, "northern", id(mailbox), FOLDER);
        let held: BTreeSet<String> = folder.keys().filter(|a| !a.is_empty()).cloned().collect();
        assert_eq!(
            &held, expected,
            "{context}: mailbox {}",
            mailbox["userPrincipalName"]
        );
    }
}

#[tokio::test]
async fn hidden_people_never_reach_a_phone_leave_every_phone_when_hidden_and_come_back() {
    let w = world(&[("acme", 30), ("northern", 6)], PHONES).await;
    let acme_id = w.sim.tenant("acme").unwrap().tenant_id;
    let anchors = |w: &World| -> BTreeSet<String> {
        users(w, "acme")
            .iter()
            .filter(|u| in_default_scope(u))
            .map(|u| phones_support::anchor_of(&acme_id, u))
            .collect()
    };
    assert!(
        users(&w, "acme")
            .iter()
            .any(|u| u["hiddenFromAddressLists"] == true && in_scope_but_for_hidden(u))
    );
    let first = run(&w, "acme-phones").await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    assert_every_phone_holds(&w, &anchors(&w), "first run");

    let person = users(&w, "acme")
        .into_iter()
        .find(in_default_scope)
        .unwrap();
    hide(&w, &person, true);
    w.sim.control().reset_counters();
    let report = run(&w, "acme-phones").await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    let (get_recipient, total) = served(&w);
    eprintln!(
        "phones incremental run hiding 1 person: Get-Recipient {get_recipient}, requests {total}"
    );
    assert_eq!(get_recipient, 1);
    let now = anchors(&w);
    assert!(!now.contains(&phones_support::anchor_of(&acme_id, &person)));
    assert_every_phone_holds(&w, &now, "hidden later");

    hide(&w, &person, false);
    let report = run(&w, "acme-phones").await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    let now = anchors(&w);
    assert!(now.contains(&phones_support::anchor_of(&acme_id, &person)));
    assert_every_phone_holds(&w, &now, "shown again");

    w.sim.control().reset_counters();
    let quiet = run(&w, "acme-phones").await;
    assert_eq!(quiet.outcome, RunOutcome::Succeeded, "{quiet:#?}");
    let (get_recipient, total) = served(&w);
    eprintln!("phones incremental run, 0 changes: Get-Recipient {get_recipient}, requests {total}");
    assert_eq!(get_recipient, 1);
}
