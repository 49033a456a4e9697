//! Sync benchmark of the real binary (`galbridge sync`, production path: m365 clients over TLS, file state) against
//! m365-sim running in this process: N source people into an empty target, then 1% of them changed. Prints wall
//! time, requests per object, retries, the galbridge process's peak memory (VmHWM, simulator not included), and the
//! incremental run's requests per change for two directory sizes (it must not grow with the directory).
//! `GALBRIDGE_BENCH_PEOPLE` sets N (default 5000; the small size is N/10), `GALBRIDGE_BENCH_CHANGES` the number of
//! people changed before the incremental run (default 1% of each size). Run: `cargo bench --bench sync_bench`.
//! The simulator models no network latency here: wall times are galbridge's and the simulator's CPU on this machine.

#[path = "support/binary.rs"]
mod binary;

use binary::{Run, count, requests, sync};
use serde_json::json;

struct Figures {
    people: usize,
    full: Run,
    changes: usize,
    incremental: Run,
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
    let dir = std::env::temp_dir().join(format!("galbridge-bench-{}-{people}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let (config, secrets) = binary::one_way_config(&sim, &dir, 8);

    let full = sync(&config, &secrets).await;

    let control = sim.control();
    let users = control.users("acme").expect("users");
    let changes = changes_for(people);
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
    let incremental = sync(&config, &secrets).await;
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
    Figures {
        people,
        full,
        changes,
        incremental,
    }
}

/// How many people the incremental run changes: `GALBRIDGE_BENCH_CHANGES`, else 1% of `people`.
fn changes_for(people: usize) -> usize {
    std::env::var("GALBRIDGE_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(people / 100)
        .max(1)
}

fn mib(run: &Run) -> String {
    run.peak_mib
        .map(|m| format!("{m:.0} MiB"))
        .unwrap_or_else(|| "n/a".into())
}

fn print(figures: &Figures) {
    let full = &figures.full.report;
    let written = count(full, "applied", "creates").max(1);
    println!(
        "{} source people ({} created), empty target:",
        figures.people,
        count(full, "applied", "creates")
    );
    println!(
        "  full run:   {:>7.2} s, {} requests {}, {:.2} requests per object, {} retries, peak memory {}, outcome {}",
        figures.full.secs,
        requests(full),
        full["requests"],
        requests(full) as f64 / written as f64,
        full["throttled_retries"].as_u64().unwrap_or(0),
        mib(&figures.full),
        full["outcome"]
    );
    let inc = &figures.incremental.report;
    println!(
        "  {} changed: {:>7.2} s, {} requests {}, {:.2} requests per change, {} updates, {} retries, peak memory {}",
        figures.changes,
        figures.incremental.secs,
        requests(inc),
        inc["requests"],
        requests(inc) as f64 / figures.changes as f64,
        count(inc, "applied", "updates"),
        inc["throttled_retries"].as_u64().unwrap_or(0),
        mib(&figures.incremental)
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
    let per_change = |f: &Figures| requests(&f.incremental.report) as f64 / f.changes as f64;
    println!(
        "incremental requests per change: {:.2} at {} people, {:.2} at {} people (flat = cost follows changes, not size)",
        per_change(&small),
        small.people,
        per_change(&large),
        large.people
    );
}
