//! Crash safety: a run stopped dead at arbitrary points (its future dropped mid-flight: no cleanup, no lease
//! release, whatever request was in the air lands or not), then run again after the lease expired, converges to the
//! right target with no duplicate contact and nobody missing. Exercises the create intents (New-MailContact cannot
//! set the anchor) and the batched checkpoint writes.

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_support::in_default_scope;
use galbridge::config::Config;
use galbridge::engine::adapters::simulated::sim_connector;
use galbridge::engine::from_config::link_spec;
use galbridge::engine::lifecycle::LinkRunner;
use galbridge::engine::service::Connector;
use galbridge::engine::spec::TargetSpec;
use galbridge::engine::targets::mail_contact::MailContacts;
use galbridge::report::{RunOptions, RunOutcome};
use galbridge::state::FileStore;
use m365_sim::Service;

#[tokio::test]
async fn runs_killed_at_random_points_converge_without_duplicates() {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", 60),
            m365_sim::TenantSeed::new("northern", 5),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    // A little Exchange latency keeps the kill close to the request that triggered it.
    sim.control().update_knobs(|knobs| {
        knobs.latency.exchange = m365_sim::Latency {
            fixed_ms: 2,
            jitter_ms: 2,
        }
    });
    let state = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[state]\nkind = \"file\"\npath = {:?}\n{}[[links]]\nname = \"a-to-n\"\n[links.source]\ntenant = \"acme\"\n\
         [links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n",
        state.path().display().to_string(),
        engine_support::tenants_toml(&sim, &["acme", "northern"])
    );
    let config =
        Config::from_toml_str(&toml, std::path::Path::new("galbridge.toml")).expect("valid");
    let link = &config.links()[0];
    let spec = link_spec(link, config.service()).expect("spec");
    let connector = sim_connector(&sim, &config).expect("connector");
    let TargetSpec::MailContact(options) = &spec.target else {
        panic!("a mail-contact link");
    };
    let contacts = MailContacts {
        port: connector
            .mail_contacts(&link.target_tenant)
            .await
            .expect("target"),
        options: options.clone(),
    };
    let runner = LinkRunner {
        store: Arc::new(FileStore::open(state.path()).expect("store")),
        source: connector.source(&link.source_tenant).await.expect("source"),
        counters: None,
        holder: "crash-test".into(),
        lease_ttl: chrono::Duration::milliseconds(300),
    };

    // Kill each of the first runs once the simulator has *seen* a given amount of its progress (requests handled
    // since the run started), never after a sleep: a kill in the source read, kills right after a `New-MailContact`
    // (before the anchor is set), and kills deep in the apply phase. Change people between kills.
    let control = sim.control();
    let people: Vec<serde_json::Value> = control
        .users("acme")
        .unwrap()
        .into_iter()
        .filter(in_default_scope)
        .collect();
    let kill_points = [
        (Service::Graph, "", 1u64),
        (Service::Exchange, "New-MailContact", 4),
        (Service::Exchange, "New-MailContact", 1),
        (Service::Exchange, "Set-MailContact", 9),
        (Service::Exchange, "New-MailContact", 13),
    ];
    let mut kills = 0;
    for (round, (service, endpoint, after)) in kill_points.into_iter().enumerate() {
        let seen_before = control.count(service, endpoint, None);
        let task = {
            let (runner, contacts, spec) = (runner.clone(), contacts.clone(), spec.clone());
            tokio::spawn(async move { runner.sync(&contacts, &spec, &RunOptions::default()).await })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while control.count(service, endpoint, None) < seen_before + after
            && !task.is_finished()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !task.is_finished() {
            kills += 1;
        }
        task.abort();
        let _ = task.await;
        let person = &people[round];
        control
            .update_user(
                "acme",
                person["id"].as_str().unwrap(),
                serde_json::json!({"jobTitle": format!("Round {round}")}),
            )
            .unwrap();
        wait_until_lease_expired(&runner, &spec.name).await;
    }
    assert_eq!(kills, kill_points.len(), "every run was killed mid-flight");

    let mut outcome = RunOutcome::Failed;
    for _ in 0..3 {
        wait_until_lease_expired(&runner, &spec.name).await;
        let report = runner
            .sync(&contacts, &spec, &RunOptions::default())
            .await
            .expect("run starts");
        outcome = report.outcome;
        if outcome == RunOutcome::Succeeded {
            break;
        }
    }
    assert_eq!(outcome, RunOutcome::Succeeded);
    let full = runner
        .sync(
            &contacts,
            &spec,
            &RunOptions {
                full: true,
                ..RunOptions::default()
            },
        )
        .await
        .expect("run starts");
    assert_eq!(
        full.applied.creates + full.applied.deletes,
        0,
        "nothing left to repair: {full:#?}"
    );

    let contacts = anchored_contacts_of(&sim);
    let expected: Vec<serde_json::Value> = control
        .users("acme")
        .unwrap()
        .into_iter()
        .filter(in_default_scope)
        .collect();
    assert_eq!(
        contacts.len(),
        expected.len(),
        "no duplicates, nobody missing"
    );
    let all = control.mail_contacts("northern").unwrap();
    assert!(
        all.iter().all(|c| c["CustomAttribute15"]
            .as_str()
            .is_some_and(|a| a.starts_with("galbridge:"))),
        "no unanchored orphan left behind by a kill between New-MailContact and Set-MailContact"
    );
    for (round, person) in people.iter().take(5).enumerate() {
        let contact = contacts
            .iter()
            .find(|c| {
                c["ExternalEmailAddress"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&format!("SMTP:{}", person["mail"].as_str().unwrap()))
            })
            .expect("contact");
        assert_eq!(contact["Title"], format!("Round {round}"));
    }
}

/// Waits until the dead run's lease expires (a kill leaves it held; a renewal already in the file store's blocking
/// pool when the run was dropped may still extend it once).
async fn wait_until_lease_expired(runner: &LinkRunner, link: &str) {
    let ttl = chrono::Duration::milliseconds(50);
    for _ in 0..100 {
        match runner.store.acquire_lease(link, "probe", ttl).await {
            Ok(lease) => {
                runner.store.release_lease(&lease).await.expect("release");
                return;
            }
            Err(galbridge::state::StateError::LeaseHeld { until, .. }) => {
                let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait + Duration::from_millis(5)).await;
            }
            Err(other) => panic!("state store: {other}"),
        }
    }
    panic!("the lease of {link} never expired");
}

fn anchored_contacts_of(sim: &m365_sim::SimHandle) -> Vec<serde_json::Value> {
    sim.control()
        .mail_contacts("northern")
        .expect("tenant")
        .into_iter()
        .filter(|c| {
            c["CustomAttribute15"]
                .as_str()
                .is_some_and(|a| a.starts_with("galbridge:"))
        })
        .collect()
}
