//! End-to-end runs of the engine against m365-sim and the file state store: what ends up in the target tenant.

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;

use engine_support::{anchored_contacts, in_default_scope, world};
use galbridge::report::{RunMode, RunOptions, RunOutcome};
use galbridge::sync_service::{ServiceError, SyncService};
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

fn by_address<'a>(contacts: &'a [Value], address: &str) -> Option<&'a Value> {
    contacts.iter().find(|c| {
        c["ExternalEmailAddress"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(&format!("SMTP:{address}")))
    })
}

fn users(world: &engine_support::World, tenant: &str) -> Vec<Value> {
    world.sim.control().users(tenant).expect("tenant")
}

fn full() -> RunOptions {
    RunOptions {
        full: true,
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn initial_sync_writes_every_person_in_scope_with_every_field() {
    let w = world(&[("acme", 40), ("northern", 10)], ONE_WAY).await;
    let report = w
        .service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Full);

    let expected: Vec<Value> = users(&w, "acme")
        .into_iter()
        .filter(in_default_scope)
        .collect();
    let contacts = anchored_contacts(&w, "northern");
    assert!(!expected.is_empty());
    assert_eq!(
        contacts.len(),
        expected.len(),
        "one contact per person in scope"
    );
    for user in &expected {
        let mail = user["mail"].as_str().unwrap();
        let contact =
            by_address(&contacts, mail).unwrap_or_else(|| panic!("no contact for {mail}"));
        assert_eq!(contact["DisplayName"], user["displayName"], "{mail}");
        assert_eq!(
            contact["CustomAttribute15"],
            format!(
                "galbridge:{}:{}",
                w.sim.tenant("acme").unwrap().tenant_id,
                user["id"].as_str().unwrap()
            )
        );
        for (graph, exchange) in [
            ("givenName", "FirstName"),
            ("surname", "LastName"),
            ("jobTitle", "Title"),
            ("department", "Department"),
            ("companyName", "Company"),
            ("officeLocation", "Office"),
            ("mobilePhone", "MobilePhone"),
            ("streetAddress", "StreetAddress"),
            ("city", "City"),
            ("state", "StateOrProvince"),
            ("postalCode", "PostalCode"),
            ("country", "CountryOrRegion"),
        ] {
            let want = user[graph].as_str().unwrap_or("");
            let got = contact[exchange].as_str().unwrap_or("");
            assert_eq!(got, want, "{mail}: {exchange} from {graph}");
        }
        let phone = user["businessPhones"][0].as_str().unwrap_or("");
        assert_eq!(
            contact["Phone"].as_str().unwrap_or(""),
            phone,
            "{mail}: Phone"
        );
    }
    // Nobody out of scope leaked in.
    for user in users(&w, "acme").iter().filter(|u| !in_default_scope(u)) {
        if let Some(mail) = user["mail"].as_str() {
            assert!(
                by_address(&contacts, mail).is_none(),
                "{mail} is out of scope"
            );
        }
    }
    assert!(report.requests.get("exchange").copied().unwrap_or(0) > 0);
}

#[tokio::test]
async fn incremental_runs_follow_updates_deletions_and_scope_changes() {
    let w = world(&[("acme", 30), ("northern", 10)], ONE_WAY).await;
    w.service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    let control = w.sim.control();
    let people: Vec<Value> = users(&w, "acme")
        .into_iter()
        .filter(in_default_scope)
        .collect();
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

    let report = w
        .service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Incremental);
    assert_eq!(
        (
            report.applied.creates,
            report.applied.updates,
            report.applied.deletes
        ),
        (1, 1, 2),
        "{report:#?}"
    );
    assert!(
        report.source_read <= 6,
        "only changes are read: {}",
        report.source_read
    );

    let contacts = anchored_contacts(&w, "northern");
    assert_eq!(
        by_address(&contacts, promoted["mail"].as_str().unwrap()).unwrap()["Title"],
        "Chief Builder"
    );
    assert!(by_address(&contacts, leaver["mail"].as_str().unwrap()).is_none());
    assert!(by_address(&contacts, disabled["mail"].as_str().unwrap()).is_none());
    let hire_mail = users(&w, "acme")
        .into_iter()
        .find(|u| u["id"] == hire.as_str())
        .unwrap()["mail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        by_address(&contacts, &hire_mail).unwrap()["Title"],
        "Apprentice"
    );

    let quiet = w
        .service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        quiet.applied.creates + quiet.applied.updates + quiet.applied.deletes,
        0
    );
}

#[tokio::test]
async fn unanchored_contacts_stay_untouched_conflicts_are_reported_and_adoption_is_opt_in() {
    let adopt = ONE_WAY.replace(
        "tenant = \"northern\"",
        "tenant = \"northern\"\nadopt_existing = true",
    );
    let w = world(&[("acme", 20), ("northern", 10)], ONE_WAY).await;
    let control = w.sim.control();
    let person = users(&w, "acme")
        .into_iter()
        .find(in_default_scope)
        .unwrap();
    let mail = person["mail"].as_str().unwrap().to_owned();
    let manual = control
        .create_user_made_mail_contact("northern", "Hand Made Twin", &mail)
        .unwrap();
    let bystander = control
        .create_user_made_mail_contact("northern", "Someone Else", "someone@elsewhere.example")
        .unwrap();

    let report = w
        .service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.kind == "conflict_address" && f.reason.contains(&mail)),
        "{:#?}",
        report.failures
    );
    let all = control.mail_contacts("northern").unwrap();
    let twin = all
        .iter()
        .find(|c| c["ExternalDirectoryObjectId"] == manual.as_str())
        .unwrap();
    assert_eq!(twin["DisplayName"], "Hand Made Twin", "not modified");
    assert!(
        twin["CustomAttribute15"].as_str().unwrap_or("").is_empty(),
        "not anchored"
    );
    let other = all
        .iter()
        .find(|c| c["ExternalDirectoryObjectId"] == bystander.as_str())
        .unwrap();
    assert_eq!(other["DisplayName"], "Someone Else");

    // Opting in adopts the twin on the next run (a fresh engine over the same state and tenants).
    drop(w.service);
    let config = galbridge::config::Config::from_toml_str(
        &format!(
            "[state]\nkind = \"file\"\npath = \"{}\"\n{}{}",
            w.state_dir.path().display(),
            engine_support::tenants_toml(&w.sim, &["acme", "northern"]),
            adopt
        ),
        std::path::Path::new("galbridge.toml"),
    )
    .unwrap();
    let store = galbridge::state::FileStore::open(w.state_dir.path()).unwrap();
    let service = galbridge::engine::service::EngineService::new(
        &config,
        std::sync::Arc::new(store),
        w.connector.clone(),
    );
    let adopted = service.run_link("acme-to-northern", full()).await.unwrap();
    assert_eq!(adopted.applied.adoptions, 1, "{adopted:#?}");
    let twin = control
        .mail_contacts("northern")
        .unwrap()
        .into_iter()
        .find(|c| c["ExternalDirectoryObjectId"] == manual.as_str())
        .unwrap();
    assert!(
        twin["CustomAttribute15"]
            .as_str()
            .unwrap()
            .starts_with("galbridge:")
    );
    assert_eq!(twin["DisplayName"], person["displayName"]);
    let bystander_now = control
        .mail_contacts("northern")
        .unwrap()
        .into_iter()
        .find(|c| c["ExternalDirectoryObjectId"] == bystander.as_str())
        .unwrap();
    assert!(
        bystander_now["CustomAttribute15"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );
}

#[tokio::test]
async fn three_tenant_mesh_converges_without_contacts_of_contacts() {
    let mesh = r#"
[[meshes]]
name = "group"
tenants = ["acme", "northern", "globex"]
[meshes.source]
include_org_contacts = true
[meshes.target]
kind = "mail_contact"
"#;
    let w = world(&[("acme", 15), ("northern", 10), ("globex", 8)], mesh).await;
    for round in 0..2 {
        let reports = w.service.run_all(RunOptions::default()).await;
        assert_eq!(reports.len(), 6);
        for report in &reports {
            let report = report.as_ref().unwrap();
            assert_eq!(
                report.outcome,
                RunOutcome::Succeeded,
                "round {round}: {report:#?}"
            );
            assert!(
                report.failures.is_empty(),
                "no conflicts either (a contact of a contact would clash): {report:#?}"
            );
            if round == 1 {
                assert_eq!(
                    report.applied.creates + report.applied.deletes,
                    0,
                    "round 2 is quiet: {report:#?}"
                );
            }
        }
    }
    for tenant in ["acme", "northern", "globex"] {
        let others: usize = ["acme", "northern", "globex"]
            .iter()
            .filter(|t| **t != tenant)
            .map(|t| users(&w, t).iter().filter(|u| in_default_scope(u)).count())
            .sum();
        let contacts = anchored_contacts(&w, tenant);
        assert_eq!(
            contacts.len(),
            others,
            "{tenant} holds exactly the other tenants' people"
        );
        let own_id = w.sim.tenant(tenant).unwrap().tenant_id;
        for contact in &contacts {
            // Every anchor names a *user* of another tenant: never an org contact (a contact of a contact).
            let anchor = contact["CustomAttribute15"].as_str().unwrap();
            let (source_tenant, object) = anchor
                .trim_start_matches("galbridge:")
                .split_once(':')
                .unwrap();
            assert_ne!(source_tenant, own_id);
            let source = ["acme", "northern", "globex"]
                .into_iter()
                .find(|t| w.sim.tenant(t).unwrap().tenant_id == source_tenant)
                .unwrap();
            assert!(
                users(&w, source).iter().any(|u| u["id"] == object),
                "{anchor} is not a user of {source}"
            );
        }
    }
}

#[tokio::test]
async fn expired_delta_token_falls_back_to_a_full_read() {
    let w = world(&[("acme", 20), ("northern", 5)], ONE_WAY).await;
    w.service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    let person = users(&w, "acme")
        .into_iter()
        .find(in_default_scope)
        .unwrap();
    w.sim
        .control()
        .update_user(
            "acme",
            person["id"].as_str().unwrap(),
            json!({"department": "Renamed"}),
        )
        .unwrap();
    w.sim.control().expire_delta_tokens("acme").unwrap();
    let report = w
        .service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:#?}");
    assert_eq!(report.mode, RunMode::Full);
    assert_eq!(report.applied.updates, 1);
    let contacts = anchored_contacts(&w, "northern");
    assert_eq!(
        by_address(&contacts, person["mail"].as_str().unwrap()).unwrap()["Department"],
        "Renamed"
    );
}

#[tokio::test]
async fn mass_deletion_is_quarantined_then_released() {
    let w = world(&[("acme", 30), ("northern", 5)], ONE_WAY).await;
    w.service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    let before = anchored_contacts(&w, "northern").len();
    let people: Vec<Value> = users(&w, "acme")
        .into_iter()
        .filter(in_default_scope)
        .collect();
    for person in people.iter().take(11) {
        w.sim
            .control()
            .delete_user("acme", person["id"].as_str().unwrap(), true)
            .unwrap();
    }
    let held = w
        .service
        .run_link("acme-to-northern", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(held.outcome, RunOutcome::Quarantined, "{held:#?}");
    assert_eq!(held.quarantine.as_ref().unwrap().held_deletes, 11);
    assert_eq!(
        anchored_contacts(&w, "northern").len(),
        before,
        "nothing deleted"
    );
    let status = w.service.status().await.unwrap();
    assert!(status.links[0].quarantine.is_some());

    let released = w
        .service
        .run_link(
            "acme-to-northern",
            RunOptions {
                allow_deletes: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(released.outcome, RunOutcome::Succeeded, "{released:#?}");
    assert_eq!(released.applied.deletes, 11);
    assert_eq!(anchored_contacts(&w, "northern").len(), before - 11);
    assert!(
        w.service.status().await.unwrap().links[0]
            .quarantine
            .is_none()
    );
}

#[tokio::test]
async fn two_simultaneous_runs_of_one_link_one_is_refused() {
    let w = world(&[("acme", 20), ("northern", 5)], ONE_WAY).await;
    w.sim.control().update_knobs(|knobs| {
        knobs.latency.exchange = m365_sim::Latency {
            fixed_ms: 20,
            jitter_ms: 0,
        }
    });
    let (a, b) = tokio::join!(
        w.service
            .run_link("acme-to-northern", RunOptions::default()),
        w.service
            .run_link("acme-to-northern", RunOptions::default())
    );
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(ServiceError::LeaseHeld { .. })))
        .count();
    assert_eq!(refused, 1, "{a:?} / {b:?}");
    let expected = users(&w, "acme")
        .iter()
        .filter(|u| in_default_scope(u))
        .count();
    assert_eq!(
        anchored_contacts(&w, "northern").len(),
        expected,
        "no duplicates"
    );
}

#[tokio::test]
async fn heavy_throttling_and_server_errors_still_converge() {
    let w = world(&[("acme", 30), ("northern", 5)], ONE_WAY).await;
    let control = w.sim.control();
    control.add_fault(m365_sim::FaultRule {
        rate: 0.3,
        remaining: None,
        ..m365_sim::FaultRule::scripted(
            m365_sim::Fault::Throttle {
                retry_after_secs: 0,
            },
            0,
        )
    });
    control.add_fault(m365_sim::FaultRule {
        rate: 0.1,
        remaining: None,
        ..m365_sim::FaultRule::scripted(
            m365_sim::Fault::ServiceUnavailable {
                retry_after_secs: None,
            },
            0,
        )
    });
    let mut outcome = RunOutcome::Failed;
    let mut failures = Vec::new();
    for _ in 0..6 {
        let report = w
            .service
            .run_link("acme-to-northern", RunOptions::default())
            .await
            .unwrap();
        outcome = report.outcome;
        if outcome == RunOutcome::Succeeded {
            assert!(report.throttled_retries > 0 || report.applied.creates == 0);
            break;
        }
        failures.push(report.failures);
    }
    assert_eq!(
        outcome,
        RunOutcome::Succeeded,
        "failures of each run: {failures:#?}"
    );
    control.set_faults(Vec::new());
    let expected: Vec<Value> = users(&w, "acme")
        .into_iter()
        .filter(in_default_scope)
        .collect();
    let contacts = anchored_contacts(&w, "northern");
    assert_eq!(
        contacts.len(),
        expected.len(),
        "converged with no duplicates and nothing lost"
    );
    for user in &expected {
        let contact = by_address(&contacts, user["mail"].as_str().unwrap()).unwrap();
        assert_eq!(
            contact["Title"].as_str().unwrap_or(""),
            user["jobTitle"].as_str().unwrap_or("")
        );
    }
}
