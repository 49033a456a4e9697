//! GAL-to-phones benchmark against the in-process m365-sim with Outlook's limits on (4 concurrent requests and
//! 10,000 per 10 minutes per mailbox) and a fixed Graph latency (20 ms): ~500 people into ~200 mailboxes, then 1%
//! of the people changed.
//!
//! Prints wall time; the lower bound the limits allow, max(per-mailbox: its requests / 4 × latency, all requests /
//! Graph's 13,000 requests per second per app); their ratio; inner requests per contact written; 429s; peak memory;
//! and for the incremental run, requests ÷ (changes × mailboxes).
//!
//! Knobs: `GALBRIDGE_BENCH_PEOPLE` (source users seeded, default 600 → ~500 in scope), `GALBRIDGE_BENCH_MAILBOXES`
//! (target users seeded, default 235 → ~200 writable mailboxes), `GALBRIDGE_BENCH_BUDGET` (`service.mailboxes_in_flight`,
//! default: the configuration's default), `GALBRIDGE_BENCH_LATENCY_MS`.
//! Run: `cargo bench --bench phones` (peak memory includes the simulator, which runs in the same process).

use std::sync::Arc;
use std::time::Instant;

use galbridge::config::{Config, ServiceSettings};
use galbridge::engine::adapters::simulated::sim_connector;
use galbridge::engine::service::EngineService;
use galbridge::report::{RunOptions, RunReport};
use galbridge::state::FileStore;
use galbridge::sync_service::SyncService;
use m365_sim::{Control, Service};
use serde_json::json;

/// The binary's allocator (src/main.rs), so the benchmark measures what runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Graph's global limit: 130,000 requests per 10 s per app (docs/microsoft-facts.md §4).
const GRAPH_REQUESTS_PER_SEC: f64 = 13_000.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) the process used so far (the simulator included), from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks: 100 per second on Linux.
    Some((utime + stime) / 100.0)
}

fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Mailbox requests (inner requests to contacts and contact folders) seen by the simulator, per mailbox id.
struct MailboxTraffic {
    per_mailbox: Vec<u64>,
    total: u64,
    batches: u64,
    throttled: u64,
}

fn traffic(control: &Control) -> MailboxTraffic {
    let rows = control.counters();
    let mailbox_rows = rows.iter().filter(|row| {
        row.service == Service::Graph
            && (row.endpoint.contains("/contacts") || row.endpoint.contains("/contactFolders"))
    });
    let total = mailbox_rows.map(|row| row.count).sum();
    let batches = rows
        .iter()
        .filter(|row| row.endpoint.contains("$batch"))
        .map(|row| row.count)
        .sum();
    // The simulator counts per route, not per mailbox: every mailbox gets the same work here, so spread evenly.
    let loads = control.mailbox_loads();
    let per_mailbox = if loads.is_empty() {
        Vec::new()
    } else {
        vec![total / loads.len() as u64; loads.len()]
    };
    MailboxTraffic {
        per_mailbox,
        total,
        batches,
        throttled: control.throttled_count(),
    }
}

fn lower_bound_secs(traffic: &MailboxTraffic, latency_ms: u64) -> f64 {
    let latency = latency_ms as f64 / 1000.0;
    let per_mailbox = traffic
        .per_mailbox
        .iter()
        .map(|n| (*n as f64 / 4.0).ceil() * latency)
        .fold(0.0, f64::max);
    per_mailbox.max(traffic.total as f64 / GRAPH_REQUESTS_PER_SEC)
}

#[tokio::main]
async fn main() {
    let people = env_number("GALBRIDGE_BENCH_PEOPLE", 600) as usize;
    let target_users = env_number("GALBRIDGE_BENCH_MAILBOXES", 235) as usize;
    let budget = env_number(
        "GALBRIDGE_BENCH_BUDGET",
        u64::from(ServiceSettings::default().mailboxes_in_flight),
    );
    let latency_ms = env_number("GALBRIDGE_BENCH_LATENCY_MS", 20);
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", people),
            m365_sim::TenantSeed::new("northern", target_users),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let control = sim.control();
    control.update_knobs(|knobs| {
        knobs.latency.graph = m365_sim::Latency {
            fixed_ms: latency_ms,
            jitter_ms: 0,
        };
        knobs.outlook_concurrency_per_mailbox = 4;
        knobs.outlook_requests_per_10_min = 10_000;
    });
    let state = tempfile::tempdir().expect("temp dir");
    let mut toml = format!(
        "[service]\nmailboxes_in_flight = {budget}\n[state]\nkind = \"file\"\npath = {:?}\n",
        state.path().display().to_string()
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
        "[[links]]\nname = \"phones\"\n[links.source]\ntenant = \"acme\"\n[links.target]\nkind = \"personal_contacts\"\n\
         tenant = \"northern\"\nmailboxes = { all = true }\nfolder = \"Acme Directory\"\n",
    );
    let config = Config::from_toml_str(&toml, std::path::Path::new("bench.toml"))
        .expect("valid configuration");
    let connector = Arc::new(sim_connector(&sim, &config).expect("simulator reachable"));
    let store = Arc::new(FileStore::open(state.path()).expect("file store"));
    let service = EngineService::new(&config, store, connector);

    // Initial run.
    control.reset_counters();
    let cpu_before = cpu_seconds().unwrap_or(0.0);
    let clock = Instant::now();
    let initial: RunReport = service
        .run_link("phones", RunOptions::default())
        .await
        .expect("run starts");
    let initial_secs = clock.elapsed().as_secs_f64();
    let initial_cpu = cpu_seconds().unwrap_or(0.0) - cpu_before;
    let initial_traffic = traffic(&control);
    let mailboxes = control.mailbox_loads().len();
    let peak = control
        .mailbox_loads()
        .iter()
        .map(|l| l.peak_concurrency)
        .max()
        .unwrap_or(0);
    let written = initial.applied.creates.max(1);
    let bound = lower_bound_secs(&initial_traffic, latency_ms);
    println!(
        "GAL to phones, Graph latency {latency_ms} ms, Outlook limits on, budget {budget} mailboxes in flight"
    );
    println!(
        "initial: {} people read, {} in scope x {mailboxes} mailboxes: {:?}, {} contacts written",
        initial.source_read,
        initial.applied.creates / mailboxes.max(1) as u64,
        initial.outcome,
        initial.applied.creates
    );
    println!("  wall time:            {initial_secs:.2} s");
    println!("  lower bound (limits): {bound:.2} s");
    println!(
        "  ratio:                {:.2}",
        initial_secs / bound.max(1e-9)
    );
    println!(
        "  inner requests per contact written: {:.3} ({} mailbox requests incl. folder reads, {} $batch calls)",
        initial_traffic.total as f64 / written as f64,
        initial_traffic.total,
        initial_traffic.batches
    );
    println!("  429s received:        {}", initial_traffic.throttled);
    println!("  peak per-mailbox concurrency: {peak}");
    // Mailboxes all carry the same work, so they finish in waves of `budget`; each batch of 20 costs its envelope's
    // round trip plus five rounds of 4 inner requests; and the app pacer allows 130,000 requests per 10 s.
    let waves = (mailboxes as f64 / budget.max(1) as f64).ceil();
    let per_mailbox =
        initial_traffic.batches as f64 / mailboxes.max(1) as f64 * 6.0 * latency_ms as f64 / 1000.0;
    let paced = (initial_traffic.total as f64 - 10_000.0).max(0.0) / 12_000.0;
    let design_floor = (waves * per_mailbox).max(paced);
    println!(
        "  floor of this design ({waves} waves of {budget} mailboxes x {per_mailbox:.2} s, app pacer {paced:.2} s): {design_floor:.2} s"
    );
    println!(
        "  process CPU (engine + simulator): {initial_cpu:.1} s = {:.2} cores busy on average",
        initial_cpu / initial_secs
    );
    let kinds: std::collections::BTreeMap<&str, usize> =
        initial
            .failures
            .iter()
            .fold(Default::default(), |mut kinds, failure| {
                *kinds.entry(failure.kind.as_str()).or_default() += 1;
                kinds
            });
    println!("  reported (not failures of the run: non-REST mailboxes): {kinds:?}");

    // 1% of the people change.
    let users: Vec<serde_json::Value> = control.users("acme").expect("acme");
    let changes = (initial.source_read as usize / 100).max(1);
    let mut changed = 0;
    for user in users
        .iter()
        .filter(|u| {
            u["userType"] == "Member" && u["accountEnabled"] == true && u["mail"].is_string()
        })
        .filter(|u| u["hiddenFromAddressLists"] != true)
        .take(changes)
    {
        control
            .update_user(
                "acme",
                user["id"].as_str().expect("id"),
                json!({"jobTitle": format!("Changed {changed}")}),
            )
            .expect("update");
        changed += 1;
    }
    control.reset_counters();
    let clock = Instant::now();
    let incremental = service
        .run_link("phones", RunOptions::default())
        .await
        .expect("run starts");
    let incremental_secs = clock.elapsed().as_secs_f64();
    let incremental_traffic = traffic(&control);
    let all_graph: u64 = control
        .counters()
        .iter()
        .filter(|row| row.service == Service::Graph)
        .map(|row| row.count)
        .sum();
    let fan_out = (changed * mailboxes).max(1) as f64;
    println!(
        "incremental: {changed} people changed: {:?}, {} contacts updated, {incremental_secs:.2} s",
        incremental.outcome, incremental.applied.updates
    );
    println!(
        "  mailbox requests / (changes x mailboxes): {:.3}",
        incremental_traffic.total as f64 / fan_out
    );
    println!(
        "  all Graph requests (source delta, $batch envelopes, inner) / (changes x mailboxes): {:.3}",
        all_graph as f64 / fan_out
    );
    println!("  429s received:        {}", incremental_traffic.throttled);
    if let Some(mib) = peak_memory_mib() {
        println!("peak memory (process, simulator with ~100k contacts included): {mib:.0} MiB");
    }
    sim.shutdown().await;
}
