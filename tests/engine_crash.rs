//! Crash safety: a run stopped dead at arbitrary points (its future dropped mid-flight: no cleanup, no lease
//! release, whatever request was in the air lands or not), then run again after the lease expired, converges to the
//! right target with no duplicate contact and nobody missing. Exercises the create intents (New-MailContact cannot
//! set the anchor) and the batched checkpoint writes.

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::in_default_scope;
use galbridge::config::Config;
use galbridge::engine::adapters::simulated::SimConnector;
use galbridge::engine::from_config::link_spec;
use galbridge::engine::runner::Runner;
use galbridge::engine::service::Connector;
use galbridge::report::{RunOptions, RunOutcome};
use galbridge::state::FileStore;

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
    // Slow Exchange down a little so that kills land in the middle of the apply phase.
    sim.control().update_knobs(|knobs| {
        knobs.latency.exchange = m365_sim::Latency {
            fixed_ms: 3,
            jitter_ms: 4,
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
    let connector = SimConnector::new(&sim, &["acme", "northern"]).expect("connector");
    let runner = Runner {
        store: Arc::new(FileStore::open(state.path()).expect("store")),
        source: connector.source(&link.source_tenant).await.expect("source"),
        target: connector
            .mail_contacts(&link.target_tenant)
            .await
            .expect("target"),
        counters: None,
        holder: "crash-test".into(),
        lease_ttl: chrono::Duration::milliseconds(300),
    };

    // Kill the first runs at growing (pseudo-random) points; change people between kills.
    let control = sim.control();
    let people: Vec<serde_json::Value> = control
        .users("acme")
        .unwrap()
        .into_iter()
        .filter(in_default_scope)
        .collect();
    let mut kills = 0;
    for (round, kill_after_ms) in [40u64, 90, 15, 160, 65].into_iter().enumerate() {
        let task = {
            let runner = runner.clone();
            let spec = spec.clone();
            tokio::spawn(async move { runner.run(&spec, &RunOptions::default()).await })
        };
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
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
        // Let the dead run's lease expire.
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    assert!(kills >= 3, "most runs were killed mid-flight ({kills})");

    let mut outcome = RunOutcome::Failed;
    for _ in 0..3 {
        let report = runner
            .run(&spec, &RunOptions::default())
            .await
            .expect("run starts");
        outcome = report.outcome;
        if outcome == RunOutcome::Succeeded {
            break;
        }
    }
    assert_eq!(outcome, RunOutcome::Succeeded);
    let full = runner
        .run(
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

fn anchored_contacts_of(sim: &m365_sim::SimHandle) -> Vec<serde_json::Value> {
    sim.control()
        .mail_contacts("northern")
        .unwrap()
        .into_iter()
        .filter(|c| {
            c["CustomAttribute15"]
                .as_str()
                .is_some_and(|a| a.starts_with("galbridge:"))
        })
        .collect()
}
