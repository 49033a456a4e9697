//! Sync benchmark against the in-process m365-sim: N source people into an empty target, then 1% of them changed.
//! Prints wall time, requests per object, retries, peak memory, and the incremental run's requests per change for
//! two directory sizes (it must not grow with the directory). `GALBRIDGE_BENCH_PEOPLE` sets N (default 5000).
//! Run: `cargo bench --bench sync_bench` (peak memory includes the simulator, which runs in the same process).

use std::sync::Arc;
use std::time::Instant;

use galbridge::config::Config;
use galbridge::engine::adapters::simulated::SimConnector;
use galbridge::engine::service::EngineService;
use galbridge::report::{RunOptions, RunReport};
use galbridge::service::SyncService;
use galbridge::state::FileStore;
use serde_json::json;

struct Figures {
    people: usize,
    full: RunReport,
    full_secs: f64,
    changes: usize,
    incremental: RunReport,
    incremental_secs: f64,
}

fn requests(report: &RunReport) -> u64 {
    report.requests.values().sum()
}

async fn measure(people: usize) -> Figures {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", people),
            m365_sim::TenantSeed::new("northern", 5),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let state =
        std::env::temp_dir().join(format!("galbridge-bench-{}-{people}", std::process::id()));
    let mut toml = format!(
        "[service]\nmax_concurrency = 8\n[state]\nkind = \"file\"\npath = {:?}\n",
        state.display().to_string()
    );
    for name in ["acme", "northern"] {
        let info = sim.tenant(name).expect("seeded");
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{}\"\nclient_id = \"{}\"\ncredential = {{ env = \"UNUSED\" }}\n\
             [tenants.{name}.endpoints]\nlogin = \"{b}\"\ngraph = \"{b}\"\nexchange = \"{b}\"\n",
            info.tenant_id,
            info.client_id,
            b = sim.base_url()
        ));
    }
    toml.push_str(
        "[[links]]\nname = \"bench\"\n[links.source]\ntenant = \"acme\"\n[links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n",
    );
    let config = Config::from_toml_str(&toml, std::path::Path::new("bench.toml"))
        .expect("valid configuration");
    let connector =
        Arc::new(SimConnector::new(&sim, &["acme", "northern"]).expect("simulator reachable"));
    let service = EngineService::new(
        &config,
        Arc::new(FileStore::open(&state).expect("state")),
        connector,
    );

    let clock = Instant::now();
    let full = service
        .run_link("bench", RunOptions::default())
        .await
        .expect("full run");
    let full_secs = clock.elapsed().as_secs_f64();

    let control = sim.control();
    let users = control.users("acme").expect("users");
    let changes = (people / 100).max(1);
    for (i, user) in users
        .iter()
        .filter(|u| u["accountEnabled"] == true && u["userType"] == "Member")
        .take(changes)
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
    let clock = Instant::now();
    let incremental = service
        .run_link("bench", RunOptions::default())
        .await
        .expect("incremental run");
    let incremental_secs = clock.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&state);
    sim.shutdown().await;
    Figures {
        people,
        full,
        full_secs,
        changes,
        incremental,
        incremental_secs,
    }
}

fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn print(figures: &Figures) {
    let full = &figures.full;
    let written = full.applied.creates.max(1);
    println!(
        "{} source people ({} in scope), empty target:",
        figures.people,
        full.applied.creates + full.applied.conflicts
    );
    println!(
        "  full run:        {:>7.2} s, {} requests ({:?}), {:.2} requests per object, {} retries, outcome {:?}",
        figures.full_secs,
        requests(full),
        full.requests,
        requests(full) as f64 / written as f64,
        full.throttled_retries,
        full.outcome
    );
    let inc = &figures.incremental;
    println!(
        "  1% changed ({} people): {:>7.2} s, {} requests ({:?}), {:.2} requests per change, {} updates, {} retries",
        figures.changes,
        figures.incremental_secs,
        requests(inc),
        inc.requests,
        requests(inc) as f64 / figures.changes as f64,
        inc.applied.updates,
        inc.throttled_retries
    );
}

#[tokio::main]
async fn main() {
    let people: usize = std::env::var("GALBRIDGE_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let small = measure((people / 10).max(100)).await;
    print(&small);
    let large = measure(people).await;
    print(&large);
    let per_change = |f: &Figures| requests(&f.incremental) as f64 / f.changes as f64;
    println!(
        "incremental requests per change: {:.2} at {} people, {:.2} at {} people (flat = cost follows changes, not size)",
        per_change(&small),
        small.people,
        per_change(&large),
        large.people
    );
    if let Some(mib) = peak_memory_mib() {
        println!("peak memory (process, simulator included): {mib:.0} MiB");
    }
}
