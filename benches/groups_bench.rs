//! Incremental cost of mail-enabled groups as sources (issue 18), with the real binary (`galbridge sync --json`,
//! production path) against m365-sim in this process: a link with `include_groups = true` over N people and G
//! mail-enabled groups, synced into an empty target; then an incremental run with nothing changed, one with 5 groups
//! renamed, and one with 5 people changed for comparison. Prints requests per service for each run (from the run
//! report) and the simulator's count of `groups/delta` requests. `GALBRIDGE_BENCH_PEOPLE` sets N (default 2000),
//! `GALBRIDGE_BENCH_GROUPS` sets G (default 200). Run: `cargo bench --bench groups_bench`.

#[path = "support/binary.rs"]
mod binary;

use binary::{Run, count, requests, sync};
use m365_sim::Service;
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn line(label: &str, run: &Run, groups_delta: u64) {
    let report = &run.report;
    println!(
        "  {label:<22} {:>6.2} s, {:>5} requests {}, creates {}, updates {}, deletes {}, groups/delta {groups_delta}, outcome {}",
        run.secs,
        requests(report),
        report["requests"],
        count(report, "applied", "creates"),
        count(report, "applied", "updates"),
        count(report, "applied", "deletes"),
        report["outcome"]
    );
}

#[tokio::main]
async fn main() {
    let people = env_or("GALBRIDGE_BENCH_PEOPLE", 2000);
    let groups = env_or("GALBRIDGE_BENCH_GROUPS", 200);
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", people),
            m365_sim::TenantSeed::new("northern", 5),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let control = sim.control();
    let domain = sim.tenant("acme").expect("seeded").mail_domain;
    let mut group_ids = Vec::new();
    for i in 0..groups {
        group_ids.push(
            control
                .add_group(
                    "acme",
                    json!({"displayName": format!("Team {i:04}"), "mail": format!("team{i:04}@{domain}")}),
                )
                .expect("group"),
        );
    }
    let dir = std::env::temp_dir().join(format!("galbridge-groups-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let (config, secrets) = binary::one_way_config(&sim, &dir, 8);
    let text = std::fs::read_to_string(&config).expect("configuration");
    std::fs::write(
        &config,
        text.replace(
            "[links.source]\n",
            "[links.source]\ninclude_groups = true\n",
        ),
    )
    .expect("configuration written");
    let groups_delta = || control.count(Service::Graph, "GET /v1.0/groups/delta", None);

    println!(
        "{people} source people, {groups} mail-enabled groups (+ the seed's security groups), include_groups = true:"
    );
    control.reset_counters();
    let full = sync(&config, &secrets).await;
    line("full, empty target", &full, groups_delta());

    control.reset_counters();
    let quiet = sync(&config, &secrets).await;
    line("incremental, 0 changes", &quiet, groups_delta());

    for (i, id) in group_ids.iter().take(5).enumerate() {
        control
            .update_group(
                "acme",
                id,
                json!({"displayName": format!("Renamed team {i}")}),
            )
            .expect("rename");
    }
    control.reset_counters();
    let renamed = sync(&config, &secrets).await;
    line("5 groups renamed", &renamed, groups_delta());

    let users = control.users("acme").expect("users");
    for (i, user) in users
        .iter()
        .filter(|u| {
            u["accountEnabled"] == true
                && u["userType"] == "Member"
                && u["hiddenFromAddressLists"] == false
                && u["mail"].is_string()
        })
        .take(5)
        .enumerate()
    {
        control
            .update_user(
                "acme",
                user["id"].as_str().unwrap_or_default(),
                json!({"jobTitle": format!("Changed {i}")}),
            )
            .expect("update");
    }
    control.reset_counters();
    let people_changed = sync(&config, &secrets).await;
    line("5 people changed", &people_changed, groups_delta());
    println!(
        "  requests per group change: {:.2} (the quiet run's fixed cost: {})",
        (requests(&renamed.report) - requests(&quiet.report)) as f64 / 5.0,
        requests(&quiet.report)
    );
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}
