//! `galbridge demo`, the README's first command, run as the real binary: it finishes, syncs both ways, then only
//! the three changes, and its closing summary counts what a user would count in each GAL. The small companies
//! (`GALBRIDGE_DEMO_SMALL=1`: 120 and 40 people) keep it quick in a debug build; the story is the same.

// `galbridge demo`: the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A row of the demo's run table: link, mode, read, created, updated, deleted, requests, time.
fn row<'a>(section: &'a str, link: &str) -> Vec<&'a str> {
    section
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&link))
        .unwrap_or_else(|| panic!("no row for {link} in:\n{section}"))
}

fn in_default_scope(user: &Value) -> bool {
    user["userType"] == "Member"
        && user["accountEnabled"] == true
        && user["mail"].as_str().is_some_and(|m| m.contains('@'))
        && user["hiddenFromAddressLists"] != true
}

#[tokio::test]
async fn the_demo_runs_end_to_end_and_counts_what_landed() {
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_galbridge"))
            .arg("demo")
            .env("GALBRIDGE_DEMO_SMALL", "1")
            .env_remove("GALBRIDGE_LOG")
            .env_remove("GALBRIDGE_CONFIG")
            .output()
            .expect("galbridge runs")
    })
    .await
    .expect("joined");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        elapsed < Duration::from_secs(60),
        "the demo took {elapsed:?}"
    );
    assert!(
        !stderr.contains("INFO"),
        "no log lines in the middle of the tour: {stderr}"
    );

    // The same companies, seeded the same way, tell us what to expect.
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", 120),
            m365_sim::TenantSeed::new("northern", 40),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let acme: Vec<Value> = sim.control().users("acme").unwrap();
    let northern: Vec<Value> = sim.control().users("northern").unwrap();
    let acme_in_scope = acme.iter().filter(|u| in_default_scope(u)).count();
    let northern_in_scope = northern.iter().filter(|u| in_default_scope(u)).count();

    let (first, rest) = stdout
        .split_once("2. Meanwhile")
        .expect("the tour's second step");
    let (_, second) = rest
        .split_once("3. Second sync")
        .expect("the tour's third step");
    let acme_first = row(first, "demo.acme-to-northern");
    assert_eq!(acme_first[1], "full");
    assert_eq!(acme_first[3], acme_in_scope.to_string(), "created: {first}");
    let northern_first = row(first, "demo.northern-to-acme");
    assert_eq!(
        northern_first[3],
        northern_in_scope.to_string(),
        "created: {first}"
    );

    // A hire and a leaver at Acme, a promotion at Northern: exactly three writes.
    let acme_second = row(second, "demo.acme-to-northern");
    assert_eq!(
        &acme_second[1..6],
        &["incremental", "2", "1", "0", "1"],
        "{second}"
    );
    let northern_second = row(second, "demo.northern-to-acme");
    assert_eq!(
        &northern_second[1..6],
        &["incremental", "1", "0", "1", "0"],
        "{second}"
    );

    assert!(
        stdout.contains(&format!(
            "Acme's GAL now lists {northern_in_scope} Northern people, Northern's lists {acme_in_scope} Acme people"
        )),
        "the summary counts one contact per person (a hire replaced a leaver):\n{stdout}"
    );

    // The export mailbox chain: every Acme person in scope (the export mailbox's own user too) reaches the export
    // folder, then the Operations phones; one title change is read once and written once per phone.
    let (_, export) = stdout
        .split_once("6. An export mailbox")
        .expect("the export mailbox step");
    let exported = acme_in_scope + 1;
    let mut lines = export
        .lines()
        .filter(|line| line.contains(" read ") && line.contains(" created "));
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first_export = cells(lines.next().expect("first export run"));
    let first_phones = cells(lines.next().expect("first phones run"));
    let northern_ops = northern
        .iter()
        .filter(|u| {
            u["department"] == "Operations" && u["restEnabled"] == true && in_default_scope(u)
        })
        .count();
    assert!(northern_ops > 0, "Northern has an Operations team");
    let number = |cells: &[String], after: &str| -> u64 {
        let at = cells
            .iter()
            .position(|c| c == after)
            .expect("a labelled number");
        cells[at + 1].parse().expect("a number")
    };
    assert_eq!(
        number(&first_export, "created"),
        exported as u64,
        "{export}"
    );
    assert_eq!(number(&first_phones, "read"), exported as u64, "{export}");
    let _ = lines.next().expect("second export run");
    let second_phones = cells(lines.next().expect("second phones run"));
    assert_eq!(
        number(&second_phones, "read"),
        1,
        "one change read: {export}"
    );
    assert!(
        export.contains(&format!("{exported} contacts in the export folder reach")),
        "{export}"
    );
}
