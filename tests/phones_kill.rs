//! Crash safety of GAL to phones with the real binary: `galbridge sync` is killed with SIGKILL in the middle of
//! writing new people into mailboxes that already have their list (twice, at different points), then run again
//! to the end: every mailbox's folder holds each person exactly once (no duplicates of the contacts the killed runs
//! created without recording them, nobody missing).

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;
mod phones_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use phones_support::{anchor_of, folder_by_anchor, writable_mailboxes};

const FOLDER: &str = "Acme Directory";

fn managed_count(sim: &m365_sim::SimHandle, mailboxes: &[serde_json::Value]) -> usize {
    mailboxes
        .iter()
        .map(|m| {
            folder_by_anchor(sim, "northern", m["id"].as_str().expect("id"), FOLDER)
                .iter()
                .filter(|(anchor, _)| !anchor.is_empty())
                .map(|(_, copies)| copies.len())
                .sum::<usize>()
        })
        .sum()
}

#[tokio::test]
async fn sigkill_mid_run_then_rerun_leaves_no_duplicates() {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", 70),
            m365_sim::TenantSeed::new("northern", 12),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    // Slow Graph down so that a kill lands while mailboxes are being filled.
    sim.control().update_knobs(|knobs| {
        knobs.latency.graph = m365_sim::Latency {
            fixed_ms: 15,
            jitter_ms: 5,
        }
    });
    let state = tempfile::tempdir().expect("temp dir");
    let mut toml = format!(
        "[service]\nmailboxes_in_flight = 2\nextra_ca_file = {:?}\n[state]\nkind = \"file\"\npath = {:?}\n",
        sim.ca_pem_path().display().to_string(),
        state.path().display().to_string()
    );
    let mut secrets = Vec::new();
    for name in ["acme", "northern"] {
        let info = sim.tenant(name).expect("seeded");
        let variable = format!("GALBRIDGE_TEST_{}_SECRET", name.to_uppercase());
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{}\"\ninitial_domain = \"{}\"\nclient_id = \"{}\"\ncredential = {{ env = \"{variable}\" }}\n\
             [tenants.{name}.endpoints]\nlogin = \"{b}\"\ngraph = \"{b}\"\nexchange = \"{b}\"\n",
            info.tenant_id,
            info.initial_domain,
            info.client_id,
            b = sim.base_url()
        ));
        secrets.push((variable, info.client_secret.clone()));
    }
    toml.push_str(&format!(
        "[[links]]\nname = \"acme-phones\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{FOLDER}\"\n"
    ));
    let config_path = state.path().join("galbridge.toml");
    std::fs::write(&config_path, toml).expect("config written");
    let command = move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_galbridge"));
        command
            .arg("--config")
            .arg(&config_path)
            .args(["sync", "--link", "acme-phones"])
            .env("GALBRIDGE_LEASE_TTL_SECS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (variable, secret) in &secrets {
            command.env(variable, secret);
        }
        command
    };
    let mailboxes = writable_mailboxes(&sim.control().users("northern").expect("northern"));

    // A first run completes: every mailbox has its folder and its records.
    let mut first = command();
    let output = tokio::task::spawn_blocking(move || first.output().expect("galbridge runs"))
        .await
        .expect("joins");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let before = managed_count(&sim, &mailboxes);

    // New people arrive; the incremental runs that create them are killed mid-flight (SIGKILL: no cleanup, no
    // records of what landed, the lease stays until it expires).
    for i in 0..50 {
        sim.control()
            .add_user(
                "acme",
                serde_json::json!({"displayName": format!("New Hire {i}"), "jobTitle": "Engineer"}),
            )
            .expect("new hire");
    }
    let people: Vec<serde_json::Value> = sim
        .control()
        .users("acme")
        .expect("acme")
        .into_iter()
        .filter(engine_support::in_default_scope)
        .collect();
    let full_count = mailboxes.len() * people.len();
    // Kill on observed progress, not after a sleep (a loaded machine starts slowly): once the run has written
    // a few of the new contacts, then once it is about half way through what is left.
    let mut killed_mid_run = 0;
    for round in 0..2 {
        let start = managed_count(&sim, &mailboxes);
        let remaining = full_count.saturating_sub(start);
        let threshold = start + if round == 0 { 10 } else { remaining / 2 };
        let mut child = command().spawn().expect("galbridge starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut written = start;
        while written < threshold
            && child.try_wait().expect("child status").is_none()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
            written = managed_count(&sim, &mailboxes);
        }
        let running = child.try_wait().expect("child status").is_none();
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let written = managed_count(&sim, &mailboxes);
        if running && written > before && written < full_count {
            killed_mid_run += 1;
        }
        // Let the dead run's lease (1 s) expire.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    assert!(
        killed_mid_run == 2,
        "both kills landed while the new people were being written ({killed_mid_run})"
    );

    // The rerun completes and converges.
    let mut rerun = command();
    let output = tokio::task::spawn_blocking(move || rerun.output().expect("galbridge runs"))
        .await
        .expect("joins");
    assert!(
        output.status.success(),
        "rerun failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let acme_id = sim.tenant("acme").expect("acme").tenant_id;
    let expected: BTreeSet<String> = people.iter().map(|p| anchor_of(&acme_id, p)).collect();
    for mailbox in &mailboxes {
        let folder = folder_by_anchor(
            &sim,
            "northern",
            mailbox["id"].as_str().expect("id"),
            FOLDER,
        );
        let anchors: BTreeSet<String> = folder.keys().filter(|a| !a.is_empty()).cloned().collect();
        assert_eq!(
            anchors, expected,
            "{} holds everyone",
            mailbox["userPrincipalName"]
        );
        for (anchor, copies) in folder.iter().filter(|(a, _)| !a.is_empty()) {
            assert_eq!(
                copies.len(),
                1,
                "{anchor} once in {}",
                mailbox["userPrincipalName"]
            );
        }
    }
    assert_eq!(managed_count(&sim, &mailboxes), full_count);
}
