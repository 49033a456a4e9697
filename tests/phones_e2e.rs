//! GAL to phones end to end against m365-sim (issue 5): Acme's people in every Northern mailbox's "Acme Directory"
//! folder, field by field and with photos; the owner's own contacts untouched; incremental fan-out (one write per
//! mailbox per changed person, no mailbox read); drift repaired by the full reconcile (a deleted contact comes back,
//! a duplicate goes); mailboxes joining and leaving the selection; per-mailbox concurrency never above 4 (from the
//! simulator's counters); heavy throttling converges.

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;
mod phones_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use galbridge::m365::BatchRequest;
use galbridge::report::{RunOptions, RunOutcome};
use galbridge::sync_service::SyncService;
use m365_sim::{Fault, FaultRule, Service};
use phones_support::counting_store::CountingStore;
use phones_support::{
    ANCHOR_PROPERTY, anchor_of, assert_contact_matches, folder_by_anchor, selected,
    writable_mailboxes,
};
use serde_json::{Value, json};

const FOLDER: &str = "Acme Directory";

fn link_toml(mailboxes: &str, extra: &str) -> String {
    link_toml_with(mailboxes, extra, "")
}

fn link_toml_with(mailboxes: &str, extra: &str, link_settings: &str) -> String {
    format!(
        "[[links]]\nname = \"acme-phones\"\n{link_settings}[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {mailboxes}\nfolder = \"{FOLDER}\"\n{extra}\
         [links.safety]\nmax_deletes = 1000\nmax_delete_percent = 100\n"
    )
}

fn people(world: &engine_support::World) -> Vec<Value> {
    world
        .sim
        .control()
        .users("acme")
        .expect("acme")
        .into_iter()
        .filter(engine_support::in_default_scope)
        .collect()
}

/// Asserts every writable Northern mailbox's folder holds exactly the Acme people, field by field (photos too).
fn assert_folders_match(world: &engine_support::World, photos: bool) -> usize {
    let acme_id = world.sim.tenant("acme").expect("acme").tenant_id;
    let people = people(world);
    let users = world.sim.control().users("northern").expect("northern");
    let mailboxes = writable_mailboxes(&users);
    assert!(!mailboxes.is_empty());
    for mailbox in &mailboxes {
        let id = mailbox["id"].as_str().expect("id");
        let folder = folder_by_anchor(&world.sim, "northern", id, FOLDER);
        let managed: BTreeSet<&String> = folder.keys().filter(|a| !a.is_empty()).collect();
        let expected: BTreeSet<String> = people.iter().map(|p| anchor_of(&acme_id, p)).collect();
        assert_eq!(
            managed,
            expected.iter().collect(),
            "mailbox {} holds exactly the people in scope",
            mailbox["userPrincipalName"]
        );
        for person in &people {
            let anchor = anchor_of(&acme_id, person);
            let copies = &folder[&anchor];
            assert_eq!(copies.len(), 1, "no duplicate of {anchor} in {id}");
            let context = format!(
                "{} in {}",
                person["displayName"], mailbox["userPrincipalName"]
            );
            assert_contact_matches(&copies[0].fields, person, "acme-phones", &context);
            if photos {
                assert_eq!(
                    copies[0].photo_sha256.as_deref(),
                    person["photoSha256"].as_str(),
                    "{context}: photo"
                );
            }
        }
    }
    mailboxes.len()
}

async fn run(world: &engine_support::World, options: RunOptions) -> galbridge::report::RunReport {
    world
        .service
        .run_link("acme-phones", options)
        .await
        .expect("the run starts")
}

fn contact_requests(world: &engine_support::World, method: &str) -> u64 {
    world
        .sim
        .control()
        .counters()
        .iter()
        .filter(|row| row.service == Service::Graph)
        .filter(|row| row.endpoint.starts_with(method) && row.endpoint.contains("/contacts"))
        .map(|row| row.count)
        .sum()
}

#[tokio::test]
async fn every_mailbox_gets_the_list_changes_fan_out_and_drift_is_repaired() {
    let mut counting = None;
    let world = engine_support::world_over(
        &[("acme", 30), ("northern", 14)],
        &link_toml("{ all = true }", "photos = true\n"),
        |store| {
            let store = Arc::new(CountingStore::new(store));
            counting = Some(store.clone());
            store
        },
    )
    .await;
    let counting = counting.expect("the store was wrapped");
    let control = world.sim.control();

    // Initial run: every writable mailbox gets the whole list; mailboxes without REST are reported, not fatal.
    let first = run(&world, RunOptions::default()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{}", first.summary);
    let mailboxes = assert_folders_match(&world, true);
    let users = control.users("northern").expect("northern");
    let not_rest = users
        .iter()
        .filter(|u| selected(u) && u["restEnabled"] == false)
        .count();
    let reported = first
        .failures
        .iter()
        .filter(|f| f.kind == "mailbox_not_rest_enabled")
        .count();
    assert_eq!(reported, not_rest, "non-REST mailboxes are reported");
    for load in control.mailbox_loads() {
        assert!(
            load.peak_concurrency <= 4,
            "mailbox {} saw {} concurrent requests",
            load.mailbox,
            load.peak_concurrency
        );
    }

    // The owner's own contacts in the same folder, one with the address of a managed person: never touched.
    let owner = writable_mailboxes(&users)[0].clone();
    let owner_id = owner["id"].as_str().expect("id").to_owned();
    let folder_id = control
        .contact_folders("northern", &owner_id)
        .expect("folders")
        .into_iter()
        .find(|(_, name, _)| name == FOLDER)
        .map(|(id, _, _)| id)
        .expect("the folder was created");
    let person = people(&world)[0].clone();
    let own_fields = json!({"displayName": "My plumber", "emailAddresses": [{"address": person["mail"], "name": "Bob"}],
        "mobilePhone": "+1 555 0000"});
    control
        .create_user_made_contact("northern", &owner_id, Some(&folder_id), own_fields.clone())
        .expect("user contact");

    // Incremental: one person changes, one leaves; each mailbox gets one write per person and no mailbox is read.
    control
        .update_user(
            "acme",
            person["id"].as_str().expect("id"),
            json!({"jobTitle": "Chief Plumber"}),
        )
        .expect("update");
    let leaver = people(&world).last().expect("someone").clone();
    control
        .delete_user("acme", leaver["id"].as_str().expect("id"), true)
        .expect("delete");
    control.reset_counters();
    counting.reset();
    let second = run(&world, RunOptions::default()).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{}", second.summary);
    // The state store side of the same promise: each mailbox reads its folder record and the records of the two
    // touched people, not its whole map of 30 (mailboxes without REST have no records at all).
    assert_eq!(
        counting.mailbox_records_read(),
        3 * mailboxes as u64,
        "records read from mailbox scopes"
    );
    assert_eq!(second.applied.updates as usize, mailboxes);
    assert_eq!(second.applied.deletes as usize, mailboxes);
    assert_eq!(
        contact_requests(&world, "DELETE"),
        mailboxes as u64,
        "one delete per mailbox"
    );
    assert_eq!(
        contact_requests(&world, "PATCH"),
        mailboxes as u64,
        "one write per mailbox"
    );
    assert_eq!(contact_requests(&world, "GET"), 0, "no mailbox is read");
    assert_eq!(contact_requests(&world, "POST"), 0);
    assert_folders_match(&world, true);

    // Drift: the owner deletes a managed contact; a crash-like duplicate of another appears.
    let acme_id = world.sim.tenant("acme").expect("acme").tenant_id;
    let folder = folder_by_anchor(&world.sim, "northern", &owner_id, FOLDER);
    let victim = people(&world)[1].clone();
    let victim_contact = folder[&anchor_of(&acme_id, &victim)][0].id.clone();
    let duplicated = anchor_of(&acme_id, &people(&world)[2]);
    let graph = world.graph("northern").await;
    let answers = graph
        .batch(
            Some(&owner_id),
            vec![
                BatchRequest::delete_contact("1", &owner_id, &victim_contact),
                BatchRequest::create_contact(
                    "2",
                    &owner_id,
                    Some(&folder_id),
                    json!({"displayName": "Dup", "singleValueExtendedProperties": [{"id": ANCHOR_PROPERTY, "value": duplicated}]}),
                ),
            ],
        )
        .await
        .expect("batch");
    assert!(answers.iter().all(|a| a.is_success()), "{answers:?}");
    let repaired = run(
        &world,
        RunOptions {
            full: true,
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(
        repaired.outcome,
        RunOutcome::Succeeded,
        "{}",
        repaired.summary
    );
    assert_folders_match(&world, true);

    // The owner's contact is still there, unchanged and unanchored.
    let own: Vec<_> = control
        .mailbox_contacts("northern", &owner_id)
        .expect("contacts")
        .into_iter()
        .filter(|c| c.user_made && c.folder_name == FOLDER)
        .collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].fields["displayName"], "My plumber");
    assert_eq!(own[0].fields["mobilePhone"], "+1 555 0000");
    assert!(own[0].extended_properties.is_empty());
}

#[tokio::test]
async fn mailboxes_join_and_leave_the_selection() {
    let world = engine_support::world(
        &[("acme", 12), ("northern", 14)],
        &link_toml(
            "{ filter = { attribute = \"department\", equals = \"Phones\" } }",
            "",
        ),
    )
    .await;
    let control = world.sim.control();
    let users = writable_mailboxes(&control.users("northern").expect("northern"));
    let (stays, joins) = (users[0].clone(), users[1].clone());
    let id = |u: &Value| u["id"].as_str().expect("id").to_owned();
    control
        .update_user("northern", &id(&stays), json!({"department": "Phones"}))
        .expect("update");
    let first = run(&world, RunOptions::default()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{}", first.summary);
    let count = |user: &Value| {
        folder_by_anchor(&world.sim, "northern", &id(user), FOLDER)
            .iter()
            .filter(|(a, _)| !a.is_empty())
            .count()
    };
    let people = people(&world).len();
    assert_eq!(count(&stays), people);
    assert_eq!(count(&joins), 0, "not selected yet");

    // Joining: the whole list arrives on an incremental run.
    control
        .update_user("northern", &id(&joins), json!({"department": "Phones"}))
        .expect("update");
    let second = run(&world, RunOptions::default()).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded, "{}", second.summary);
    assert_eq!(count(&joins), people);
    assert_eq!(second.applied.creates as usize, people);

    // Leaving: its managed contacts are removed (policy `remove`), the other mailbox keeps its list.
    control
        .update_user("northern", &id(&stays), json!({"department": "Elsewhere"}))
        .expect("update");
    let third = run(&world, RunOptions::default()).await;
    assert_eq!(third.outcome, RunOutcome::Succeeded, "{}", third.summary);
    assert_eq!(count(&stays), 0);
    assert_eq!(count(&joins), people);

    // Uninstall: a dry run counts, the purge removes galbridge's contacts only.
    let listed = world
        .service
        .purge("acme-phones", false)
        .await
        .expect("plan");
    assert_eq!(listed.planned.deletes as usize, people);
    assert_eq!(count(&joins), people, "a dry run removes nothing");
    let purged = world
        .service
        .purge("acme-phones", true)
        .await
        .expect("purge");
    assert_eq!(purged.outcome, RunOutcome::Succeeded, "{}", purged.summary);
    assert_eq!(count(&joins), 0);
}

#[tokio::test]
async fn heavy_throttling_converges_without_duplicates() {
    let world = engine_support::world(
        &[("acme", 25), ("northern", 8)],
        &link_toml("{ all = true }", ""),
    )
    .await;
    let control = world.sim.control();
    control.add_fault(
        FaultRule::rated(
            Fault::Throttle {
                retry_after_secs: 0,
            },
            0.4,
        )
        .on_service(Service::Graph)
        .on_target("/contacts"),
    );
    let mut outcome = None;
    for _ in 0..4 {
        let report = run(&world, RunOptions::default()).await;
        outcome = Some(report.outcome);
        if report.outcome == RunOutcome::Succeeded {
            break;
        }
    }
    assert!(control.throttled_count() > 0, "the fault throttled");
    control.set_faults(Vec::new());
    assert_eq!(outcome, Some(RunOutcome::Succeeded));
    assert_folders_match(&world, false);
}

#[tokio::test]
async fn the_periodic_repair_reads_each_folder_delta_not_the_whole_folder() {
    let world = engine_support::world(
        &[("acme", 20), ("northern", 8)],
        &link_toml_with("{ all = true }", "", "full_reconcile_every = \"1s\"\n"),
    )
    .await;
    let control = world.sim.control();
    let first = run(&world, RunOptions::default()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{}", first.summary);

    // The owner deletes one managed contact and edits another.
    let acme_id = world.sim.tenant("acme").expect("acme").tenant_id;
    let owner = writable_mailboxes(&control.users("northern").expect("northern"))[0].clone();
    let owner_id = owner["id"].as_str().expect("id").to_owned();
    let folder = folder_by_anchor(&world.sim, "northern", &owner_id, FOLDER);
    let everyone = people(&world);
    let deleted = folder[&anchor_of(&acme_id, &everyone[0])][0].id.clone();
    let edited = folder[&anchor_of(&acme_id, &everyone[1])][0].id.clone();
    let graph = world.graph("northern").await;
    let answers = graph
        .batch(
            Some(&owner_id),
            vec![
                BatchRequest::delete_contact("1", &owner_id, &deleted),
                BatchRequest::patch_contact("2", &owner_id, &edited, json!({"jobTitle": "Typo"})),
            ],
        )
        .await
        .expect("batch");
    assert!(answers.iter().all(|a| a.is_success()), "{answers:?}");

    // The reconcile is due: folders are read through their delta, never listed.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    control.reset_counters();
    let repair = run(&world, RunOptions::default()).await;
    assert_eq!(repair.outcome, RunOutcome::Succeeded, "{}", repair.summary);
    assert_eq!(repair.mode, galbridge::report::RunMode::Full);
    let listings: u64 = control
        .counters()
        .iter()
        .filter(|row| row.endpoint.starts_with("GET") && row.endpoint.ends_with("/contacts"))
        .map(|row| row.count)
        .sum();
    assert_eq!(listings, 0, "no folder was listed");
    assert!(contact_requests(&world, "GET") > 0, "the deltas were read");
    assert_eq!(repair.applied.creates, 1, "the deleted contact came back");
    assert_eq!(repair.applied.updates, 1, "the edited contact was reset");
    assert_folders_match(&world, false);
}

#[tokio::test]
async fn adoption_exclusions_and_the_safety_net() {
    let sim_users = [("acme", 20), ("northern", 8)];
    // The excluded mailbox and the adopted contact are chosen from the seed before the engine starts.
    let probe = m365_sim::start(m365_sim::SimConfig {
        tenants: sim_users
            .iter()
            .map(|(name, n)| m365_sim::TenantSeed::new(name, *n))
            .collect(),
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("probe");
    let excluded = writable_mailboxes(&probe.control().users("northern").expect("northern"))[1]
        ["userPrincipalName"]
        .as_str()
        .expect("upn")
        .to_owned();
    probe.shutdown().await;
    let toml = format!(
        "[[links]]\nname = \"acme-phones\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\n\
         exclude_mailboxes = [\"{excluded}\"]\nadopt_existing = true\n\
         [links.safety]\nmax_deletes = 1\nmax_delete_percent = 100\n"
    );
    let world = engine_support::world(&sim_users, &toml).await;
    let control = world.sim.control();
    let acme_id = world.sim.tenant("acme").expect("acme").tenant_id;
    let mailboxes = writable_mailboxes(&control.users("northern").expect("northern"));
    let owner_id = mailboxes[0]["id"].as_str().expect("id").to_owned();
    let excluded_id = mailboxes
        .iter()
        .find(|m| m["userPrincipalName"] == excluded.as_str())
        .and_then(|m| m["id"].as_str())
        .expect("excluded mailbox")
        .to_owned();
    let person = people(&world)[0].clone();
    let typed = control
        .create_user_made_contact(
            "northern",
            &owner_id,
            None,
            json!({"displayName": "Ada from the conference", "emailAddresses": [{"address": person["mail"]}]}),
        )
        .expect("owner's contact");
    let anchored = |mailbox: &str, anchor: &str| -> Vec<m365_sim::control::MailboxContactView> {
        control
            .mailbox_contacts("northern", mailbox)
            .expect("contacts")
            .into_iter()
            .filter(|c| {
                c.extended_properties
                    .iter()
                    .any(|(id, value)| id.eq_ignore_ascii_case(ANCHOR_PROPERTY) && value == anchor)
            })
            .collect()
    };

    // Adoption: the owner's contact with the same address becomes the managed one (no second contact).
    let first = run(&world, RunOptions::default()).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{}", first.summary);
    let anchor = anchor_of(&acme_id, &person);
    let adopted = anchored(&owner_id, &anchor);
    assert_eq!(adopted.len(), 1, "one contact for the person");
    assert_eq!(adopted[0].id, typed, "the owner's contact was adopted");
    assert_eq!(adopted[0].fields["displayName"], person["displayName"]);
    assert!(first.applied.adoptions >= 1);
    // Exclusion: the excluded mailbox gets nothing.
    assert!(anchored(&excluded_id, &anchor).is_empty());
    assert!(
        control
            .mailbox_contacts("northern", &excluded_id)
            .expect("contacts")
            .iter()
            .all(|c| c.extended_properties.is_empty())
    );

    // Safety net: three people leave at once (more than max_deletes = 1): nothing is deleted until released.
    let leavers: Vec<Value> = people(&world).into_iter().skip(1).take(3).collect();
    for leaver in &leavers {
        control
            .delete_user("acme", leaver["id"].as_str().expect("id"), true)
            .expect("delete");
    }
    let held = run(&world, RunOptions::default()).await;
    assert_eq!(held.outcome, RunOutcome::Quarantined, "{}", held.summary);
    assert_eq!(held.quarantine.as_ref().map(|q| q.held_deletes), Some(3));
    for leaver in &leavers {
        assert_eq!(
            anchored(&owner_id, &anchor_of(&acme_id, leaver)).len(),
            1,
            "kept while held"
        );
    }
    let released = run(
        &world,
        RunOptions {
            allow_deletes: true,
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(
        released.outcome,
        RunOutcome::Succeeded,
        "{}",
        released.summary
    );
    for leaver in &leavers {
        assert!(
            anchored(&owner_id, &anchor_of(&acme_id, leaver)).is_empty(),
            "removed once released"
        );
    }
}
