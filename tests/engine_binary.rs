//! End to end through the real binary (`galbridge sync`, `plan --json`, `status --json`, `purge`) against m365-sim
//! over TLS, with the state in Table Storage on Azurite: what ends up in the target tenant, what the operator reads
//! and which exit code the scheduler sees. (The same flows run in-process, with more detail, in `engine_e2e.rs`.)

#[path = "support/azurite.rs"]
mod azurite;
#[path = "engine_support/cli.rs"]
mod cli;

use cli::{Bed, assert_every_field, by_address, is_anchored};
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

fn mail_of(user: &Value) -> &str {
    user["mail"]
        .as_str()
        .expect("a person in scope has an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_sync_then_incremental_changes_then_status() {
    let Some(bed) = Bed::start(&[("acme", 40), ("northern", 10)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    let bystander = control
        .create_user_made_mail_contact("northern", "Hand Made", "hand.made@elsewhere.example")
        .unwrap();
    let people = bed.in_scope("acme");

    // plan: every person is a create; nothing is written.
    let planned = bed.run(&["plan", "--json"]).await;
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    let plan = planned.report();
    assert_eq!(plan["outcome"], "planned");
    assert_eq!(plan["planned"]["creates"], people.len());
    assert_eq!(
        plan["plan"]["creates"].as_array().unwrap().len(),
        people.len()
    );
    assert!(bed.anchored("northern").is_empty(), "a plan writes nothing");

    // The first sync: a full read, every person with every field.
    let first = bed.sync_expecting(0, &[]).await;
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    assert_eq!(first["mode"], "full");
    let contacts = bed.anchored("northern");
    assert_eq!(
        contacts.len(),
        people.len(),
        "one contact per person in scope"
    );
    assert_every_field(&contacts, &people);

    // Changes in the source: a promotion, a leaver, an account disabled (out of scope), a new hire.
    let (promoted, leaver, disabled) = (&people[0], &people[1], &people[2]);
    control
        .update_user(
            "acme",
            promoted["id"].as_str().unwrap(),
            json!({"jobTitle": "Chief Builder"}),
        )
        .unwrap();
    control
        .delete_user("acme", leaver["id"].as_str().unwrap(), false)
        .unwrap();
    control
        .update_user(
            "acme",
            disabled["id"].as_str().unwrap(),
            json!({"accountEnabled": false}),
        )
        .unwrap();
    let hire = control
        .add_user(
            "acme",
            json!({"displayName": "Nina New", "jobTitle": "Apprentice", "department": "Build"}),
        )
        .unwrap();

    // plan --json shows each change with its field-level diff, and still writes nothing.
    let planned = bed.run(&["plan", "--json"]).await;
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    let plan = planned.report();
    assert_eq!(
        (
            &plan["planned"]["creates"],
            &plan["planned"]["updates"],
            &plan["planned"]["deletes"]
        ),
        (&json!(1), &json!(1), &json!(2)),
        "{plan:#}"
    );
    let update = &plan["plan"]["updates"][0];
    assert!(
        update["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "job_title"
                && c["old"] == promoted["jobTitle"]
                && c["new"] == "Chief Builder"),
        "{update:#}"
    );
    let unchanged =
        by_address(&bed.anchored("northern"), mail_of(promoted)).unwrap()["Title"].clone();
    assert_eq!(unchanged, promoted["jobTitle"], "a plan writes nothing");

    // The incremental sync applies exactly those changes.
    let second = bed.sync_expecting(0, &[]).await;
    assert_eq!(second["mode"], "incremental", "{second:#}");
    assert_eq!(
        (
            &second["applied"]["creates"],
            &second["applied"]["updates"],
            &second["applied"]["deletes"]
        ),
        (&json!(1), &json!(1), &json!(2)),
        "{second:#}"
    );
    let contacts = bed.anchored("northern");
    assert_eq!(
        by_address(&contacts, mail_of(promoted)).unwrap()["Title"],
        "Chief Builder"
    );
    assert!(by_address(&contacts, mail_of(leaver)).is_none());
    assert!(by_address(&contacts, mail_of(disabled)).is_none());
    let hire = control
        .users("acme")
        .unwrap()
        .into_iter()
        .find(|u| u["id"] == hire.as_str())
        .unwrap();
    assert_eq!(
        by_address(&contacts, mail_of(&hire)).unwrap()["Title"],
        "Apprentice"
    );
    assert_eq!(contacts.len(), bed.in_scope("acme").len());

    // The unanchored contact was never touched.
    let hand_made = control
        .mail_contacts("northern")
        .unwrap()
        .into_iter()
        .find(|c| c["ExternalDirectoryObjectId"] == bystander.as_str())
        .expect("still there");
    assert_eq!(hand_made["DisplayName"], "Hand Made");
    assert!(!is_anchored(&hand_made));

    // status --json: the last run, the managed objects, no quarantine, nothing running.
    let status = bed.run(&["status", "--json"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status = status.json();
    let link = &status["links"][0];
    assert_eq!(link["link"], "acme-to-northern");
    assert_eq!(link["managed_objects"], contacts.len());
    assert_eq!(link["last_run"]["run_id"], second["run_id"]);
    assert_eq!(link["last_run"]["outcome"], "succeeded");
    assert!(link["quarantine"].is_null());
    assert!(link["running"].is_null());

    // Nothing left: a quiet run.
    let quiet = bed.sync_expecting(0, &[]).await;
    for kind in ["creates", "updates", "deletes"] {
        assert_eq!(quiet["applied"][kind], 0, "{quiet:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_reported_and_adoption_is_opt_in() {
    let Some(mut bed) = Bed::start(&[("acme", 20), ("northern", 10)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    let person = bed.in_scope("acme").remove(0);
    let twin = control
        .create_user_made_mail_contact("northern", "Hand Made Twin", mail_of(&person))
        .unwrap();

    // The address is taken by an unanchored contact: a reported conflict, not a failed run.
    let report = bed.sync_expecting(0, &[]).await;
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert!(
        report["failures"].as_array().unwrap().iter().any(|f| {
            f["kind"] == "conflict_address"
                && f["reason"].as_str().unwrap().contains(mail_of(&person))
        }),
        "{report:#}"
    );
    let find_twin = || {
        control
            .mail_contacts("northern")
            .unwrap()
            .into_iter()
            .find(|c| c["ExternalDirectoryObjectId"] == twin.as_str())
            .expect("the twin")
    };
    assert_eq!(find_twin()["DisplayName"], "Hand Made Twin", "not modified");
    assert!(!is_anchored(&find_twin()));
    assert_eq!(
        bed.anchored("northern").len(),
        bed.in_scope("acme").len() - 1
    );

    // Opting in adopts it.
    bed.set_links(&ONE_WAY.replace(
        "tenant = \"northern\"",
        "tenant = \"northern\"\nadopt_existing = true",
    ));
    let adopted = bed.sync_expecting(0, &["--full"]).await;
    assert_eq!(adopted["applied"]["adoptions"], 1, "{adopted:#}");
    let twin_now = find_twin();
    assert!(is_anchored(&twin_now));
    assert_eq!(twin_now["DisplayName"], person["displayName"]);
    assert_eq!(bed.anchored("northern").len(), bed.in_scope("acme").len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_sync_shows_each_side_the_other_and_never_echoes_back() {
    let two_way = r#"
[[meshes]]
name = "pair"
tenants = ["acme", "northern"]
[meshes.source]
include_org_contacts = true
[meshes.target]
kind = "mail_contact"
"#;
    let Some(bed) = Bed::start(&[("acme", 12), ("northern", 9)], two_way).await else {
        return;
    };
    let first = bed.run(&["sync", "--json"]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        first.json().as_array().unwrap().len(),
        2,
        "a mesh of two is two links"
    );
    // A change on one side travels across once; the contacts it made are never read back as people.
    let person = bed.in_scope("northern").remove(0);
    bed.sim
        .control()
        .update_user(
            "northern",
            person["id"].as_str().unwrap(),
            json!({"jobTitle": "Night Shift Lead"}),
        )
        .unwrap();
    let second = bed.run(&["sync", "--json"]).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    for report in second.json().as_array().unwrap() {
        let expected_updates = u64::from(report["link"] == "pair.northern-to-acme");
        assert_eq!(report["applied"]["updates"], expected_updates, "{report:#}");
        assert_eq!(report["applied"]["creates"], 0, "no echo: {report:#}");
    }
    for (tenant, other) in [("acme", "northern"), ("northern", "acme")] {
        let contacts = bed.anchored(tenant);
        let people = bed.in_scope(other);
        assert_eq!(
            contacts.len(),
            people.len(),
            "{tenant} holds {other}'s people, nothing of its own"
        );
        assert_every_field(&contacts, &people);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenant_mesh_converges_without_loops() {
    let mesh = r#"
[[meshes]]
name = "group"
tenants = ["acme", "northern", "globex"]
[meshes.source]
include_org_contacts = true
[meshes.target]
kind = "mail_contact"
"#;
    let Some(bed) = Bed::start(&[("acme", 15), ("northern", 10), ("globex", 8)], mesh).await else {
        return;
    };
    for round in 0..2 {
        let finished = bed.run(&["sync", "--json"]).await;
        assert_eq!(finished.code, 0, "round {round}: {}", finished.stderr);
        let reports = finished.json();
        let reports = reports.as_array().unwrap();
        assert_eq!(reports.len(), 6, "3 tenants: 6 links");
        for report in reports {
            assert_eq!(report["outcome"], "succeeded", "{report:#}");
            assert!(
                report["failures"].as_array().unwrap().is_empty(),
                "{report:#}"
            );
            if round == 1 {
                assert_eq!(
                    report["applied"]["creates"], 0,
                    "round 2 is quiet: {report:#}"
                );
                assert_eq!(
                    report["applied"]["deletes"], 0,
                    "round 2 is quiet: {report:#}"
                );
            }
        }
    }
    let tenants = ["acme", "northern", "globex"];
    for tenant in tenants {
        let others: Vec<Value> = tenants
            .iter()
            .filter(|t| **t != tenant)
            .flat_map(|t| bed.in_scope(t))
            .collect();
        let contacts = bed.anchored(tenant);
        assert_eq!(
            contacts.len(),
            others.len(),
            "{tenant} holds exactly the other tenants' people, no contact of a contact"
        );
        assert_every_field(&contacts, &others);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_delta_token_resyncs_with_a_full_read() {
    let Some(bed) = Bed::start(&[("acme", 20), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    bed.sync_expecting(0, &[]).await;
    let person = bed.in_scope("acme").remove(3);
    let control = bed.sim.control();
    control
        .update_user(
            "acme",
            person["id"].as_str().unwrap(),
            json!({"department": "Renamed"}),
        )
        .unwrap();
    control.expire_delta_tokens("acme").unwrap();
    let report = bed.sync_expecting(0, &[]).await;
    assert_eq!(report["mode"], "full", "410 → a full read: {report:#}");
    assert_eq!(report["applied"]["updates"], 1, "{report:#}");
    assert_eq!(report["applied"]["creates"], 0, "no duplicates: {report:#}");
    assert_eq!(
        by_address(&bed.anchored("northern"), mail_of(&person)).unwrap()["Department"],
        "Renamed"
    );
    assert_eq!(bed.anchored("northern").len(), bed.in_scope("acme").len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletion_quarantines_with_exit_code_3_until_allowed() {
    let Some(bed) = Bed::start(&[("acme", 30), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    bed.sync_expecting(0, &[]).await;
    let before = bed.anchored("northern").len();
    let people = bed.in_scope("acme");
    let changed = &people[12];
    let control = bed.sim.control();
    for person in people.iter().take(11) {
        control
            .delete_user("acme", person["id"].as_str().unwrap(), true)
            .unwrap();
    }
    control
        .update_user(
            "acme",
            changed["id"].as_str().unwrap(),
            json!({"jobTitle": "Still Applied"}),
        )
        .unwrap();

    let held = bed.sync_expecting(3, &[]).await;
    assert_eq!(held["outcome"], "quarantined", "{held:#}");
    assert_eq!(held["quarantine"]["held_deletes"], 11);
    assert_eq!(bed.anchored("northern").len(), before, "nothing deleted");
    assert_eq!(
        by_address(&bed.anchored("northern"), mail_of(changed)).unwrap()["Title"],
        "Still Applied",
        "the rest applies"
    );
    let status = bed.run(&["status", "--json"]).await.json();
    assert!(!status["links"][0]["quarantine"].is_null());
    // Still held on the next run.
    bed.sync_expecting(3, &[]).await;
    assert_eq!(bed.anchored("northern").len(), before);

    let released = bed.sync_expecting(0, &["--allow-deletes"]).await;
    assert_eq!(released["outcome"], "succeeded", "{released:#}");
    assert_eq!(released["applied"]["deletes"], 11);
    assert_eq!(bed.anchored("northern").len(), before - 11);
    let status = bed.run(&["status", "--json"]).await.json();
    assert!(status["links"][0]["quarantine"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_processes_one_is_refused() {
    let Some(bed) = Bed::start(&[("acme", 25), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    bed.sim.control().update_knobs(|knobs| {
        knobs.latency.exchange = m365_sim::Latency {
            fixed_ms: 20,
            jitter_ms: 0,
        }
    });
    let (a, b) = tokio::join!(bed.run(&["sync", "--json"]), bed.run(&["sync", "--json"]));
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(codes, [0, 1], "one ran, one was refused:\n{a:#?}\n{b:#?}");
    let refused = if a.code == 1 { &a } else { &b };
    assert!(
        refused.stderr.contains("already running"),
        "the refusal says why: {}",
        refused.stderr
    );
    assert_eq!(
        bed.anchored("northern").len(),
        bed.in_scope("acme").len(),
        "no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_throttling_and_server_errors_converge() {
    let Some(bed) = Bed::start(&[("acme", 20), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    control.add_fault(m365_sim::FaultRule::rated(
        m365_sim::Fault::Throttle {
            retry_after_secs: 0,
        },
        0.3,
    ));
    control.add_fault(m365_sim::FaultRule::rated(
        // With a Retry-After (of 0 s): the production backoff without one starts at 3 s, too slow for a test
        // (exponential backoff itself is tested in src/m365/retry.rs).
        m365_sim::Fault::ServiceUnavailable {
            retry_after_secs: Some(0),
        },
        0.1,
    ));
    // Exchange's transient errors (an HTTP 500 naming the exception) and Graph 503s, on a few requests for sure.
    control.add_fault(
        m365_sim::FaultRule::scripted(
            m365_sim::Fault::ExchangeTransient {
                status: 500,
                exception: "ServerBusyException".into(),
            },
            2,
        )
        .on_service(m365_sim::Service::Exchange),
    );
    control.add_fault(
        m365_sim::FaultRule::scripted(
            m365_sim::Fault::ServiceUnavailable {
                retry_after_secs: Some(0),
            },
            2,
        )
        .on_service(m365_sim::Service::Graph),
    );
    let mut last = None;
    for _ in 0..6 {
        let finished = bed.run(&["sync", "--json"]).await;
        let done = finished.code == 0;
        last = Some(finished);
        if done {
            break;
        }
    }
    let last = last.expect("ran");
    assert_eq!(last.code, 0, "converged: {}\n{}", last.stdout, last.stderr);
    for (service, status) in [
        (m365_sim::Service::Exchange, 429),
        (m365_sim::Service::Exchange, 503),
        (m365_sim::Service::Exchange, 500),
        (m365_sim::Service::Graph, 503),
    ] {
        assert!(
            control.count(service, "", Some(status)) > 0,
            "{service:?} served {status}s: {:?}",
            control.counters()
        );
    }
    control.set_faults(Vec::new());
    let people = bed.in_scope("acme");
    let contacts = bed.anchored("northern");
    assert_eq!(
        contacts.len(),
        people.len(),
        "no duplicates, nobody missing"
    );
    assert_every_field(&contacts, &people);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_lists_first_then_removes_only_what_the_link_manages() {
    let Some(bed) = Bed::start(&[("acme", 15), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    let bystander = control
        .create_user_made_mail_contact("northern", "Hand Made", "hand.made@elsewhere.example")
        .unwrap();
    bed.sync_expecting(0, &[]).await;
    let managed = bed.anchored("northern").len();
    assert!(managed > 0);

    let dry = bed
        .run(&["purge", "--link", "acme-to-northern", "--json"])
        .await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(dry.json()["planned"]["deletes"], managed, "{}", dry.stdout);
    assert_eq!(
        bed.anchored("northern").len(),
        managed,
        "a dry run removes nothing"
    );

    let unknown = bed
        .run(&["purge", "--link", "acme-to-northen", "--yes"])
        .await;
    assert_eq!(unknown.code, 2, "an unknown link is bad input");
    assert!(
        unknown.stderr.contains("acme-to-northern"),
        "suggests the name: {}",
        unknown.stderr
    );

    let done = bed
        .run(&["purge", "--link", "acme-to-northern", "--yes", "--json"])
        .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(
        done.json()["applied"]["deletes"],
        managed,
        "{}",
        done.stdout
    );
    assert!(bed.anchored("northern").is_empty());
    let left = control.mail_contacts("northern").unwrap();
    assert!(
        left.iter()
            .any(|c| c["ExternalDirectoryObjectId"] == bystander.as_str()),
        "the unanchored contact stays"
    );
    let status = bed.run(&["status", "--json"]).await.json();
    assert_eq!(status["links"][0]["managed_objects"], 0, "state forgotten");
    // A sync afterwards starts over from scratch.
    let again = bed.sync_expecting(0, &[]).await;
    assert_eq!(again["mode"], "full", "{again:#}");
    assert_eq!(bed.anchored("northern").len(), managed);
}
