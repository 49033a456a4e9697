//! `guest_user` links end to end through the real binary against m365-sim over TLS (state in Table Storage on
//! Azurite): what ends up in the target tenant's directory and GAL. Guests are invited, anchored, filled and shown
//! in the GAL; leavers are blocked or deleted; unanchored guests are left alone unless adoption is on; a link moves
//! from mail contacts to guests without two GAL entries for anyone; a mesh gives each person one guest per tenant.

#[path = "support/azurite.rs"]
mod azurite;
#[path = "engine_support/cli.rs"]
mod cli;

use cli::{Bed, in_default_scope, is_anchored};
use serde_json::{Value, json};

fn guest_link(extra: &str) -> String {
    format!(
        r#"
[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
[links.target]
kind = "guest_user"
tenant = "northern"
{extra}
[links.safety]
max_deletes = 10
max_delete_percent = 50
"#
    )
}

/// The tenant's own people in the default scope (guests, galbridge's included, are not its people).
fn people(bed: &Bed, tenant: &str) -> Vec<Value> {
    bed.in_scope(tenant)
        .into_iter()
        .filter(|u| !text(u, "userPrincipalName").contains("#EXT#"))
        .collect()
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

/// Users of `tenant` carrying a galbridge anchor in extensionAttribute15.
fn anchored_guests(bed: &Bed, tenant: &str) -> Vec<Value> {
    bed.sim
        .control()
        .users(tenant)
        .expect("tenant")
        .into_iter()
        .filter(|u| {
            u["onPremisesExtensionAttributes"]["extensionAttribute15"]
                .as_str()
                .is_some_and(|a| a.starts_with("galbridge:"))
        })
        .collect()
}

fn guest_for<'a>(guests: &'a [Value], address: &str) -> Option<&'a Value> {
    guests.iter().find(|g| {
        g["otherMails"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m.as_str().is_some_and(|m| m.eq_ignore_ascii_case(address)))
        })
    })
}

/// How many entries of the target's GAL carry `address`: guests shown in it, and mail contacts not hidden.
fn gal_entries(bed: &Bed, tenant: &str, address: &str) -> usize {
    let control = bed.sim.control();
    let users = control
        .users(tenant)
        .expect("tenant")
        .into_iter()
        .filter(|u| {
            text(u, "mail").eq_ignore_ascii_case(address) && u["hiddenFromAddressLists"] == false
        })
        .count();
    let contacts = control
        .mail_contacts(tenant)
        .expect("tenant")
        .into_iter()
        .filter(|c| {
            text(c, "ExternalEmailAddress").eq_ignore_ascii_case(&format!("SMTP:{address}"))
                && c["HiddenFromAddressListsEnabled"] != true
        })
        .count();
    users + contacts
}

/// Every person has one guest, anchored, with every synced field, shown in the GAL.
fn assert_guests_match(bed: &Bed, tenant: &str, users: &[Value], user_type: &str) {
    let guests = anchored_guests(bed, tenant);
    assert_eq!(guests.len(), users.len(), "one guest per person");
    let initial = bed.sim.tenant(tenant).expect("tenant").initial_domain;
    for user in users {
        let mail = text(user, "mail");
        let guest = guest_for(&guests, mail).unwrap_or_else(|| panic!("no guest for {mail}"));
        assert!(
            text(guest, "userPrincipalName").ends_with(&format!("#EXT#@{initial}")),
            "{guest:#}"
        );
        assert_eq!(guest["userType"], user_type, "{mail}");
        assert_eq!(guest["accountEnabled"], true, "{mail}");
        assert_eq!(
            guest["hiddenFromAddressLists"], false,
            "{mail}: shown in the GAL"
        );
        for property in [
            "displayName",
            "givenName",
            "surname",
            "jobTitle",
            "department",
            "companyName",
            "officeLocation",
            "mobilePhone",
            "streetAddress",
            "city",
            "state",
            "postalCode",
            "country",
        ] {
            assert_eq!(
                text(guest, property),
                text(user, property),
                "{mail}: {property}"
            );
        }
        assert_eq!(
            guest["businessPhones"].get(0),
            user["businessPhones"].get(0),
            "{mail}: business phone"
        );
        assert_eq!(gal_entries(bed, tenant, mail), 1, "{mail}: one GAL entry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_are_invited_filled_shown_updated_and_blocked_when_people_leave() {
    let Some(bed) = Bed::start(&[("acme", 30), ("northern", 8)], &guest_link("")).await else {
        return;
    };
    let control = bed.sim.control();
    let users = people(&bed, "acme");

    let planned = bed.run(&["plan", "--json"]).await;
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    let plan = planned.report();
    assert_eq!(plan["planned"]["creates"], users.len(), "{plan:#}");
    assert_eq!(plan["plan"]["target_kind"], "guest_user");
    assert!(
        anchored_guests(&bed, "northern").is_empty(),
        "a plan writes nothing"
    );

    let first = bed.sync_expecting(0, &[]).await;
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    assert_eq!(first["applied"]["creates"], users.len(), "{first:#}");
    assert_guests_match(&bed, "northern", &users, "Member");

    // A promotion and a leaver: a field-level plan, then one update and one blocked guest.
    let (promoted, leaver) = (&users[0], &users[1]);
    control
        .update_user(
            "acme",
            text(promoted, "id"),
            json!({"jobTitle": "Chief Builder"}),
        )
        .expect("update");
    control
        .delete_user("acme", text(leaver, "id"), false)
        .expect("delete");
    let plan = bed.run(&["plan", "--json"]).await.report();
    let update = &plan["plan"]["updates"][0];
    assert_eq!(
        update["changes"],
        json!([{"field": "job_title", "old": promoted["jobTitle"], "new": "Chief Builder"}]),
        "{plan:#}"
    );
    assert_eq!(plan["plan"]["removals"][0]["action"], "hide", "{plan:#}");

    let second = bed.sync_expecting(0, &[]).await;
    assert_eq!(second["mode"], "incremental", "{second:#}");
    assert_eq!(
        (
            &second["applied"]["updates"],
            &second["applied"]["hides"],
            &second["applied"]["creates"]
        ),
        (&json!(1), &json!(1), &json!(0)),
        "{second:#}"
    );
    let guests = anchored_guests(&bed, "northern");
    assert_eq!(
        guest_for(&guests, text(promoted, "mail")).expect("guest")["jobTitle"],
        "Chief Builder"
    );
    let blocked = guest_for(&guests, text(leaver, "mail")).expect("a blocked guest stays");
    assert_eq!(blocked["accountEnabled"], false, "{blocked:#}");
    assert_eq!(blocked["hiddenFromAddressLists"], true, "{blocked:#}");

    // A full reconcile finds nothing to do; so does a quiet incremental run.
    for extra in [&["--full"][..], &[][..]] {
        let quiet = bed.sync_expecting(0, extra).await;
        for kind in ["creates", "updates", "deletes", "hides", "adoptions"] {
            assert_eq!(quiet["applied"][kind], 0, "{kind} in {quiet:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_are_deleted_with_on_delete_delete_and_guests_wait_for_exchange_to_be_shown() {
    let Some(bed) = Bed::start(
        &[("acme", 12), ("northern", 4)],
        &guest_link("on_delete = \"delete\"\nuser_type = \"Guest\""),
    )
    .await
    else {
        return;
    };
    let control = bed.sim.control();
    // Exchange learns about new guests only after a while: the first run cannot show them yet.
    control.update_knobs(|k| k.guest_mail_user_delay_ms = 3_600_000);
    let users = people(&bed, "acme");
    let first = bed.sync_expecting(0, &[]).await;
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    let guests = anchored_guests(&bed, "northern");
    assert_eq!(guests.len(), users.len());
    assert!(
        guests.iter().all(|g| g["hiddenFromAddressLists"] == true),
        "not shown before Exchange knows them"
    );
    control.advance_clock(std::time::Duration::from_secs(3_601));
    let later = bed.sync_expecting(0, &[]).await;
    assert_eq!(later["outcome"], "succeeded", "{later:#}");
    assert_guests_match(&bed, "northern", &users, "Guest");

    let leaver = &users[0];
    control
        .delete_user("acme", text(leaver, "id"), false)
        .expect("delete");
    let report = bed.sync_expecting(0, &[]).await;
    assert_eq!(report["applied"]["deletes"], 1, "{report:#}");
    let guests = anchored_guests(&bed, "northern");
    assert!(guest_for(&guests, text(leaver, "mail")).is_none());
    assert_eq!(guests.len(), users.len() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanchored_guest_with_the_address_is_untouched_unless_adoption_is_on() {
    let Some(mut bed) = Bed::start(&[("acme", 10), ("northern", 4)], &guest_link("")).await else {
        return;
    };
    let control = bed.sim.control();
    let person = people(&bed, "acme").remove(0);
    let mail = text(&person, "mail").to_owned();
    let initial = bed.sim.tenant("northern").expect("tenant").initial_domain;
    let twin = control
        .add_user(
            "northern",
            json!({
                "displayName": "Invited By Hand",
                "userPrincipalName": format!("{}#EXT#@{initial}", mail.replace('@', "_")),
                "mail": mail,
                "otherMails": [mail],
                "userType": "Guest",
                "mailbox": "none",
                "jobTitle": "Visitor",
            }),
        )
        .expect("a guest made by hand");

    let report = bed.sync_expecting(0, &[]).await;
    assert!(
        report["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .any(
                |f| f["kind"] == "conflict_address" && text(f, "reason").contains("adopt_existing")
            ),
        "{report:#}"
    );
    let hand_made = control
        .users("northern")
        .expect("tenant")
        .into_iter()
        .find(|u| u["id"] == twin.as_str())
        .expect("still there");
    assert_eq!(hand_made["jobTitle"], "Visitor", "untouched");
    assert!(hand_made["onPremisesExtensionAttributes"]["extensionAttribute15"].is_null());
    assert!(guest_for(&anchored_guests(&bed, "northern"), &mail).is_none());

    bed.set_links(&guest_link("adopt_existing = true"));
    let report = bed.sync_expecting(0, &["--full"]).await;
    assert_eq!(report["applied"]["adoptions"], 1, "{report:#}");
    let adopted = control
        .users("northern")
        .expect("tenant")
        .into_iter()
        .find(|u| u["id"] == twin.as_str())
        .expect("the same guest");
    assert!(
        text(
            &adopted["onPremisesExtensionAttributes"],
            "extensionAttribute15"
        )
        .starts_with("galbridge:")
    );
    assert_eq!(adopted["jobTitle"], person["jobTitle"]);
    assert_eq!(
        control
            .users("northern")
            .expect("tenant")
            .iter()
            .filter(|u| text(u, "mail").eq_ignore_ascii_case(&mail))
            .count(),
        1,
        "adopted, not invited again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_moves_from_mail_contacts_to_guests_with_one_gal_entry_per_person() {
    let contacts_link = r#"
[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
[links.target]
kind = "mail_contact"
tenant = "northern"
"#;
    let Some(mut bed) = Bed::start(&[("acme", 16), ("northern", 4)], contacts_link).await else {
        return;
    };
    let users = people(&bed, "acme");
    let first = bed.sync_expecting(0, &[]).await;
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    assert_eq!(bed.anchored("northern").len(), users.len());

    // The first run of the link as guest_user forgets the contacts' records (they are not guests) and makes the
    // next run read in full; without migrate_from_mail_contact, galbridge's own contacts then block the
    // invitations: reported, nothing doubled.
    bed.set_links(&guest_link(""));
    let switched = bed.sync_expecting(0, &[]).await;
    assert_eq!(switched["applied"]["creates"], 0, "{switched:#}");
    let blocked = bed.sync_expecting(0, &[]).await;
    assert_eq!(blocked["mode"], "full", "{blocked:#}");
    assert_eq!(
        blocked["failures"].as_array().expect("failures").len(),
        users.len(),
        "{blocked:#}"
    );
    assert!(text(&blocked["failures"][0], "reason").contains("migrate_from_mail_contact"));
    assert!(anchored_guests(&bed, "northern").is_empty());

    // Conflicts are reported once per change, like the mail-contact target's: a full run takes them up again.
    bed.set_links(&guest_link("migrate_from_mail_contact = true"));
    let moved = bed.sync_expecting(0, &["--full"]).await;
    assert_eq!(moved["outcome"], "succeeded", "{moved:#}");
    assert_eq!(moved["applied"]["creates"], users.len(), "{moved:#}");
    assert!(
        bed.anchored("northern").is_empty(),
        "galbridge's contacts are gone"
    );
    assert_guests_match(&bed, "northern", &users, "Member");
    let hand_made = bed
        .sim
        .control()
        .mail_contacts("northern")
        .expect("tenant")
        .into_iter()
        .filter(|c| !is_anchored(c))
        .count();
    let quiet = bed.sync_expecting(0, &["--full"]).await;
    assert_eq!(quiet["applied"]["creates"], 0, "{quiet:#}");
    assert_eq!(quiet["applied"]["deletes"], 0, "{quiet:#}");
    assert_eq!(
        bed.sim
            .control()
            .mail_contacts("northern")
            .expect("tenant")
            .len(),
        hand_made,
        "only contacts galbridge does not own remain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_of_three_gives_each_person_one_guest_per_other_tenant() {
    let mesh = r#"
[[meshes]]
name = "group"
tenants = ["acme", "northern", "southern"]
[meshes.target]
kind = "guest_user"
"#;
    let Some(bed) = Bed::start(&[("acme", 10), ("northern", 8), ("southern", 6)], mesh).await
    else {
        return;
    };
    let tenants = ["acme", "northern", "southern"];
    let own: Vec<Vec<Value>> = tenants.iter().map(|t| people(&bed, t)).collect();
    let finished = bed.run(&["sync", "--json"]).await;
    assert_eq!(finished.code, 0, "{}\n{}", finished.stdout, finished.stderr);
    // A second round: guests made by the first must not flow on (loop prevention).
    let again = bed.run(&["sync", "--json"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    for report in again.json().as_array().expect("reports") {
        assert_eq!(report["applied"]["creates"], 0, "{report:#}");
    }
    for (index, tenant) in tenants.iter().enumerate() {
        let others: Vec<Value> = own
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .flat_map(|(_, users)| users.iter().cloned())
            .collect();
        assert_guests_match(&bed, tenant, &others, "Member");
        assert!(in_default_scope(&own[index][0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_killed_between_invitation_and_anchor_converge_without_duplicate_guests() {
    let Some(bed) = Bed::start(&[("acme", 50), ("northern", 4)], &guest_link("")).await else {
        return;
    };
    let control = bed.sim.control();
    // A little Graph latency keeps the kill close to the invitation that triggered it.
    control.update_knobs(|knobs| {
        knobs.latency.graph = m365_sim::Latency {
            fixed_ms: 2,
            jitter_ms: 2,
        }
    });
    let users = people(&bed, "acme");
    // Killed right after an invitation landed (its guest is not anchored yet), and deeper in the run.
    for (round, after) in [1u64, 3, 9].into_iter().enumerate() {
        let seen_before = control.count(m365_sim::Service::Graph, "invitations", None);
        let mut child = bed
            .command(&["sync", "--json"])
            .spawn()
            .expect("galbridge starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("child status") {
                panic!("round {round}: the run ended ({status}) before its kill point");
            }
            if control.count(m365_sim::Service::Graph, "invitations", None) >= seen_before + after {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no progress"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reaped");
        // The dead process's lease (GALBRIDGE_LEASE_TTL_SECS = 2) must expire before the next run can start.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    }
    let mut finished = bed.run(&["sync", "--json"]).await;
    for _ in 0..3 {
        if finished.code == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        finished = bed.run(&["sync", "--json"]).await;
    }
    assert_eq!(finished.code, 0, "{}\n{}", finished.stdout, finished.stderr);
    let full = bed.sync_expecting(0, &["--full"]).await;
    for kind in ["creates", "adoptions", "deletes"] {
        assert_eq!(full["applied"][kind], 0, "nothing left to repair: {full:#}");
    }
    assert_guests_match(&bed, "northern", &users, "Member");
    for user in &users {
        let mail = text(user, "mail");
        let invited = control
            .users("northern")
            .expect("tenant")
            .into_iter()
            .filter(|u| guest_for(std::slice::from_ref(u), mail).is_some())
            .count();
        assert_eq!(invited, 1, "{mail}: one guest, no unanchored twin");
    }
}
