//! Issue 18, end to end over the production connector and m365-sim: the source tenant's mail-enabled groups
//! (distribution lists, Microsoft 365 groups, mail-enabled security groups) reach another tenant's GAL as mail
//! contacts and the phones as personal contacts, once each, with their address, display name and the mapping's
//! company; a rename updates them; a deleted, mail-disabled or hidden group leaves per `on_delete`, and comes back
//! when shown again; groups without mail never flow; a three-tenant mesh with groups carries nothing back.

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;
mod phones_support;

use std::collections::{BTreeMap, BTreeSet};

use engine_support::{World, anchored_contacts, in_default_scope, world};
use galbridge::report::{RunMode, RunOptions, RunOutcome, RunReport};
use galbridge::sync_service::SyncService;
use m365_sim::Service;
use serde_json::{Value, json};

const LINK: &str = "acme-to-northern";

/// A one-way mail-contact link reading groups, with `on_delete` as given and the source tenant as company.
fn one_way(on_delete: &str) -> String {
    format!(
        r#"
[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
include_groups = true
[links.target]
kind = "mail_contact"
tenant = "northern"
on_delete = "{on_delete}"
[links.safety]
max_deletes = 10
max_delete_percent = 50
[links.mapping]
company = "{{sourceTenant}}"
"#
    )
}

fn users(world: &World, tenant: &str) -> Vec<Value> {
    world.sim.control().users(tenant).expect("tenant")
}

async fn run(world: &World, link: &str) -> RunReport {
    world
        .service
        .run_link(link, RunOptions::default())
        .await
        .expect("run starts")
}

fn add_group(world: &World, tenant: &str, fields: Value) -> String {
    world
        .sim
        .control()
        .add_group(tenant, fields)
        .expect("group added")
}

fn update_group(world: &World, id: &str, patch: Value) {
    world
        .sim
        .control()
        .update_group("acme", id, patch)
        .expect("group changed");
}

fn anchor(world: &World, tenant: &str, id: &str) -> String {
    format!(
        "galbridge:{}:{}",
        world.sim.tenant(tenant).expect("tenant").tenant_id,
        id.to_ascii_lowercase()
    )
}

/// The anchored mail contacts of a tenant, by anchor (a list: more than one would be a duplicate).
fn contacts_by_anchor(world: &World, tenant: &str) -> BTreeMap<String, Vec<Value>> {
    let mut by_anchor: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for contact in anchored_contacts(world, tenant) {
        let key = contact["CustomAttribute15"]
            .as_str()
            .expect("anchor")
            .to_owned();
        by_anchor.entry(key).or_default().push(contact);
    }
    by_anchor
}

/// The one contact of `anchor` in Northern, asserting there is exactly one.
fn the_contact(world: &World, anchor: &str) -> Value {
    let by_anchor = contacts_by_anchor(world, "northern");
    let found = by_anchor.get(anchor).cloned().unwrap_or_default();
    assert_eq!(found.len(), 1, "{anchor}: {found:?}");
    found[0].clone()
}

fn address(contact: &Value) -> String {
    contact["ExternalEmailAddress"]
        .as_str()
        .expect("address")
        .trim_start_matches("SMTP:")
        .to_ascii_lowercase()
}

/// The groups of the tests: (id, mail) by name.
struct Groups {
    sales: String,
    project: String,
    admins: String,
    board: String,
    old: String,
}

fn seed_groups(w: &World) -> Groups {
    Groups {
        sales: add_group(
            w,
            "acme",
            json!({"displayName": "Sales Team", "mail": "sales@acme.example"}),
        ),
        project: add_group(
            w,
            "acme",
            json!({"displayName": "Project X", "mail": "projectx@acme.example", "groupTypes": ["Unified"]}),
        ),
        admins: add_group(
            w,
            "acme",
            json!({"displayName": "IT Admins", "mail": "itadmins@acme.example", "securityEnabled": true}),
        ),
        board: add_group(
            w,
            "acme",
            json!({"displayName": "Board", "mail": "board@acme.example", "hiddenFromAddressLists": true}),
        ),
        old: add_group(
            w,
            "acme",
            json!({"displayName": "Old Newsletter", "mail": "news@acme.example"}),
        ),
    }
}

#[tokio::test]
async fn groups_appear_once_with_their_address_follow_renames_and_leave_when_deleted_mail_disabled_or_hidden()
 {
    let w = world(&[("acme", 30), ("northern", 6)], &one_way("delete")).await;
    let g = seed_groups(&w);
    let security_groups: Vec<String> = w
        .sim
        .control()
        .group_ids("acme")
        .expect("tenant")
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| ![&g.sales, &g.project, &g.admins, &g.board, &g.old].contains(&id))
        .collect();
    assert!(
        !security_groups.is_empty(),
        "the seed has groups without mail"
    );

    let first = run(&w, LINK).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    assert_eq!(first.mode, RunMode::Full);
    let people = users(&w, "acme")
        .iter()
        .filter(|u| in_default_scope(u))
        .count();
    let by_anchor = contacts_by_anchor(&w, "northern");
    assert_eq!(
        by_anchor.len(),
        people + 4,
        "people and the four shown mail-enabled groups"
    );
    for (id, name, mail) in [
        (&g.sales, "Sales Team", "sales@acme.example"),
        (&g.project, "Project X", "projectx@acme.example"),
        (&g.admins, "IT Admins", "itadmins@acme.example"),
        (&g.old, "Old Newsletter", "news@acme.example"),
    ] {
        let contact = the_contact(&w, &anchor(&w, "acme", id));
        assert_eq!(address(&contact), mail);
        assert_eq!(contact["DisplayName"], name);
        assert_eq!(contact["Company"], "acme", "the mapping's company");
        assert_eq!(contact["HiddenFromAddressListsEnabled"], false);
    }
    assert!(
        !by_anchor.contains_key(&anchor(&w, "acme", &g.board)),
        "hidden in Exchange"
    );
    for id in &security_groups {
        assert!(
            !by_anchor.contains_key(&anchor(&w, "acme", id)),
            "a group without mail is never synced"
        );
    }

    // A quiet incremental run costs one groups/delta request on top of the people's.
    w.sim.control().reset_counters();
    let quiet = run(&w, LINK).await;
    assert_eq!(quiet.outcome, RunOutcome::Succeeded, "{quiet:#?}");
    assert_eq!(quiet.mode, RunMode::Incremental);
    assert_eq!(
        quiet.applied.creates + quiet.applied.updates + quiet.applied.deletes,
        0,
        "{quiet:#?}"
    );
    assert_eq!(
        w.sim
            .control()
            .count(Service::Graph, "GET /v1.0/groups/delta", None),
        1,
        "{:?}",
        w.sim.control().counters()
    );

    // Renamed: updated in place.
    update_group(&w, &g.sales, json!({"displayName": "Sales EMEA"}));
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(
        (
            report.applied.creates,
            report.applied.updates,
            report.applied.deletes
        ),
        (0, 1, 0),
        "{report:#?}"
    );
    assert_eq!(
        the_contact(&w, &anchor(&w, "acme", &g.sales))["DisplayName"],
        "Sales EMEA"
    );

    // Deleted, mail-disabled, hidden in Exchange (no Graph change): three leavers.
    w.sim
        .control()
        .delete_group("acme", &g.old, false)
        .expect("deleted");
    update_group(&w, &g.admins, json!({"mailEnabled": false, "mail": null}));
    update_group(&w, &g.project, json!({"hiddenFromAddressLists": true}));
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(
        (report.applied.creates, report.applied.deletes),
        (0, 3),
        "{report:#?}"
    );
    let by_anchor = contacts_by_anchor(&w, "northern");
    for id in [&g.old, &g.admins, &g.project] {
        assert!(
            !by_anchor.contains_key(&anchor(&w, "acme", id)),
            "{id} left"
        );
    }
    assert_eq!(by_anchor.len(), people + 1);

    // Shown again, both the one hidden later and the one hidden from the start: back, read with GET /groups/{id}.
    update_group(&w, &g.project, json!({"hiddenFromAddressLists": false}));
    update_group(&w, &g.board, json!({"hiddenFromAddressLists": false}));
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(
        (report.applied.creates, report.applied.deletes),
        (2, 0),
        "{report:#?}"
    );
    assert_eq!(
        address(&the_contact(&w, &anchor(&w, "acme", &g.board))),
        "board@acme.example"
    );
    the_contact(&w, &anchor(&w, "acme", &g.project));

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
        .expect("run starts");
    assert_eq!(full.outcome, RunOutcome::Succeeded, "{full:#?}");
    assert_eq!(
        full.applied.creates + full.applied.updates + full.applied.deletes,
        0,
        "{full:#?}"
    );
}

#[tokio::test]
async fn a_deleted_group_is_hidden_with_on_delete_hide() {
    let w = world(&[("acme", 10), ("northern", 4)], &one_way("hide")).await;
    let g = seed_groups(&w);
    let first = run(&w, LINK).await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");

    w.sim
        .control()
        .delete_group("acme", &g.sales, true)
        .expect("deleted");
    let report = run(&w, LINK).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.applied.hides, 1, "{report:#?}");
    let kept = the_contact(&w, &anchor(&w, "acme", &g.sales));
    assert_eq!(kept["HiddenFromAddressListsEnabled"], true, "{kept}");
    assert_eq!(
        the_contact(&w, &anchor(&w, "acme", &g.project))["HiddenFromAddressListsEnabled"],
        false
    );
}

#[tokio::test]
async fn a_three_tenant_mesh_with_groups_carries_nothing_back() {
    let mesh = r#"
[[meshes]]
name = "group"
tenants = ["acme", "northern", "globex"]
[meshes.source]
include_org_contacts = true
include_groups = true
[meshes.target]
kind = "mail_contact"
"#;
    let tenants = ["acme", "northern", "globex"];
    let w = world(&[("acme", 12), ("northern", 8), ("globex", 6)], mesh).await;
    let mut groups: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for tenant in tenants {
        let domain = w.sim.tenant(tenant).expect("tenant").mail_domain;
        for name in ["all", "sales"] {
            let id = add_group(
                &w,
                tenant,
                json!({"displayName": format!("{tenant} {name}"), "mail": format!("{name}@{domain}")}),
            );
            groups.entry(tenant).or_default().insert(id);
        }
    }
    for round in 0..2 {
        let reports = w.service.run_all(RunOptions::default()).await;
        assert_eq!(reports.len(), 6);
        for report in &reports {
            let report = report.as_ref().expect("run starts");
            assert_eq!(
                report.outcome,
                RunOutcome::Succeeded,
                "round {round}: {report:#?}"
            );
            assert!(report.failures.is_empty(), "{report:#?}");
            if round == 1 {
                assert_eq!(
                    report.applied.creates + report.applied.updates + report.applied.deletes,
                    0,
                    "round 2 is quiet: {report:#?}"
                );
            }
        }
    }
    for tenant in tenants {
        let own_id = w.sim.tenant(tenant).expect("tenant").tenant_id;
        let mut expected = BTreeSet::new();
        for other in tenants.iter().filter(|t| **t != tenant) {
            for user in users(&w, other).iter().filter(|u| in_default_scope(u)) {
                expected.insert(anchor(&w, other, user["id"].as_str().expect("id")));
            }
            for id in &groups[other] {
                expected.insert(anchor(&w, other, id));
            }
        }
        let by_anchor = contacts_by_anchor(&w, tenant);
        let held: BTreeSet<String> = by_anchor.keys().cloned().collect();
        assert_eq!(
            held, expected,
            "{tenant} holds exactly the other tenants' people and groups, nothing carried back"
        );
        assert!(by_anchor.values().all(|c| c.len() == 1), "no duplicates");
        assert!(held.iter().all(|a| !a.contains(&own_id)));
    }
}

#[tokio::test]
async fn groups_reach_every_phone_and_follow_a_rename() {
    const FOLDER: &str = "Acme Directory";
    let phones = format!(
        r#"
[[links]]
name = "acme-phones"
[links.source]
tenant = "acme"
include_groups = true
[[links.source.group_filters]]
attribute = "displayName"
starts_with = "Sales"
[links.target]
kind = "personal_contacts"
tenant = "northern"
mailboxes = {{ all = true }}
folder = "{FOLDER}"
"#
    );
    let w = world(&[("acme", 8), ("northern", 4)], &phones).await;
    let sales = add_group(
        &w,
        "acme",
        json!({"displayName": "Sales Team", "mail": "sales@acme.example"}),
    );
    let filtered_out = add_group(
        &w,
        "acme",
        json!({"displayName": "Legal", "mail": "legal@acme.example"}),
    );
    let first = run(&w, "acme-phones").await;
    assert_eq!(first.outcome, RunOutcome::Succeeded, "{first:#?}");
    let northern = users(&w, "northern");
    let mailboxes = phones_support::writable_mailboxes(&northern);
    assert!(!mailboxes.is_empty());
    let check = |w: &World, name: &str| {
        for mailbox in &mailboxes {
            let folder = phones_support::folder_by_anchor(
                &w.sim,
                "northern",
                mailbox["id"].as_str().expect("id"),
                FOLDER,
            );
            let contacts = folder
                .get(&anchor(w, "acme", &sales))
                .cloned()
                .unwrap_or_default();
            assert_eq!(contacts.len(), 1, "{}", mailbox["userPrincipalName"]);
            let fields = &contacts[0].fields;
            assert_eq!(fields["displayName"], name);
            assert_eq!(fields["emailAddresses"][0]["address"], "sales@acme.example");
            assert!(
                !folder.contains_key(&anchor(w, "acme", &filtered_out)),
                "group_filters keep Legal out"
            );
        }
    };
    check(&w, "Sales Team");

    update_group(&w, &sales, json!({"displayName": "Sales EMEA"}));
    let report = run(&w, "acme-phones").await;
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    check(&w, "Sales EMEA");
}
