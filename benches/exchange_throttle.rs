//! Throughput of the real binary under an Exchange rate limit (`cargo bench --bench exchange_throttle`): m365-sim
//! refuses every `InvokeCommand` past `commands` per `window` per (app, tenant), answering 429 with `Retry-After` =
//! the rest of the window (the shape an independent Microsoft 365 double used). N people go into an empty target.
//!
//! The bound is what the limit allows. The commands a run needs (`InvokeCommand` requests the simulator served, reads
//! included; about 3 per contact) fill `ceil(served / commands)` windows, and the windows are fixed: the least time
//! the limit allows is `(windows − 1) × window` (the last window's commands go at once). The figure is that least
//! time as a ratio of the run's time (aim ≥ 0.85), with the failed objects (aim 0) and the requests refused (each
//! window should end with at most the requests already in flight, `max_concurrency`, never a stream of retries).
//! `GALBRIDGE_BENCH_PEOPLE` (default 1200), `GALBRIDGE_BENCH_WINDOW_COMMANDS` (400), `GALBRIDGE_BENCH_WINDOW_SECS` (10).

#[path = "support/binary.rs"]
mod binary;

use m365_sim::{ExchangeRateLimit, Service};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let people = env_number("GALBRIDGE_BENCH_PEOPLE", 1200) as usize;
    let commands = env_number("GALBRIDGE_BENCH_WINDOW_COMMANDS", 400);
    let window_secs = env_number("GALBRIDGE_BENCH_WINDOW_SECS", 10);
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
    control.update_knobs(|knobs| {
        knobs.exchange_rate_limit = Some(ExchangeRateLimit {
            commands: commands as u32,
            window_secs,
        })
    });
    let dir = std::env::temp_dir().join(format!("galbridge-throttle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let (config, secrets) = binary::one_way_config(&sim, &dir, 8);

    let run = binary::sync(&config, &secrets).await;
    let created = binary::count(&run.report, "applied", "creates");
    let served = control.count(Service::Exchange, "", Some(200));
    let refused = control.count(Service::Exchange, "", Some(429));
    let failed = run.report["failures"].as_array().map_or(0, Vec::len);
    let per_contact = served as f64 / created.max(1) as f64;
    let windows_needed = served.div_ceil(commands.max(1));
    let least_secs = (windows_needed.saturating_sub(1) * window_secs) as f64;
    let windows = (run.secs / window_secs as f64).ceil();
    println!(
        "{people} source people, limit {commands} commands / {window_secs} s per (app, tenant): {created} contacts in {:.1} s",
        run.secs
    );
    println!(
        "  {served} commands served ({per_contact:.2} per contact), {refused} refused with 429 over {windows} windows \
         ({:.1} per window), {failed} failed objects, outcome {}",
        refused as f64 / windows.max(1.0),
        run.report["outcome"]
    );
    println!(
        "  the limit allows it in {least_secs:.0} s ({windows_needed} windows): ratio {:.2} of the bound (aim >= 0.85)",
        least_secs / run.secs
    );
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}
