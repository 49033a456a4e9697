//! GAL to phones through the shard queue (issue 17): one `personal_contacts` run dispatched once, its shards consumed
//! by 1, 2 and 4 `galbridge serve` processes (the release binary), each fed by its own stand-in for the Functions
//! host's queue trigger (`tests/handler_support/queue_host.rs`, host.json's settings: one message at a time per
//! instance). m365-sim runs in this process over TLS with a fixed Graph latency and Outlook's limits on (4
//! concurrent requests and 10,000 requests per 10 minutes per mailbox); the state (Table Storage) and the shard
//! queue are in Azurite. Each run gets a fresh simulator, table and queue.
//!
//! Per run it prints the time from dispatch (`SyncHttp`) until every shard completed, contacts per second and the
//! ratio to one consumer; each consumer's peak RSS and CPU apart from the simulator's (this process: simulator plus
//! queue triggers) and Azurite's; the target app's busiest 10 s of Graph requests and its 429s. Every mailbox is
//! checked in the simulator: every person exactly once, no duplicate. Then the same with the simulator's per-app
//! limit (`graph_app_requests_per_10_s`) set low enough to bind: first with galbridge's budget at its default (the
//! limit binds through 429s and `Retry-After`), then with galbridge's `[service] graph_requests_per_10s` set to the
//! same value (the budget the processes share through the state store, no 429s): the ratio flattens and nothing
//! fails.
//!
//! The consumers are meant to be latency-bound, as in production: a consumer has `mailboxes_per_shard` mailboxes in
//! flight (one shard at a time, `mailboxes_in_flight` as large), each at most 4 requests deep, so its rate is set by
//! the latency, not by this machine's 2 cores; the CPU figures printed show how far from CPU-bound each run was.
//!
//! Knobs: `GALBRIDGE_BENCH_MAILBOXES` (Northern users seeded, default 400 → ~350 mailboxes), `GALBRIDGE_BENCH_PEOPLE`
//! (Acme users seeded, default 150 → ~125 people in scope), `GALBRIDGE_BENCH_LATENCY_MS` (Graph latency, default
//! 100), `GALBRIDGE_BENCH_PER_SHARD` (mailboxes per shard = mailboxes in flight per consumer, default 10),
//! `GALBRIDGE_BENCH_CONSUMERS` (default `1,2,4`), `GALBRIDGE_BENCH_LIMITED_CONSUMERS` (simulator limit only, default
//! `2,4`), `GALBRIDGE_BENCH_PACED_CONSUMERS` (simulator limit and galbridge's budget, default `4`; `0` skips either),
//! `GALBRIDGE_BENCH_APP_LIMIT` (requests per 10 s; default 1.5 × the one-consumer run's average rate),
//! `GALBRIDGE_BENCH_TIMEOUT_SECS` (per run, default 1800).
//!
//! Needs Azurite (`bash .ci/azurite.sh`). Run: `cargo bench --bench phones_queue`.

#[path = "../tests/support/azurite.rs"]
mod azurite;
#[path = "../tests/handler_support/mod.rs"]
mod handler_support;
#[path = "../tests/phones_support/mod.rs"]
mod phones_support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use galbridge::queue::azure::{AzureQueue, AzureQueueConfig, MessageEncoding};
use galbridge::state::table::{ConnectionString, RetryPolicy};
use handler_support::queue_host::{Delivery, Outcome, QueueTrigger, QueueTriggerSettings};
use handler_support::{
    Sim, TestApp, invoke, res, spawn_app_logging_to, status_payload, sync_payload,
};
use phones_support::{assert_every_mailbox_complete, writable_mailboxes};
use serde_json::json;

/// The simulator's allocator is the binary's (src/main.rs), as in the other phones benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LINK: &str = "acme-phones";
const FOLDER: &str = "Acme Directory";
const TABLE_ENV: &str = "GALBRIDGE_BENCH_TABLE_CONNECTION";
const QUEUE_ENV: &str = "GALBRIDGE_BENCH_QUEUE_CONNECTION";
/// Contacts per `$batch` galbridge sends, and how many of them Outlook runs at once per mailbox.
const BATCH: f64 = 20.0;
const OUTLOOK_CONCURRENCY: f64 = 4.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect()
}

/// A field of `/proc/{pid}/status` in MiB (`VmHWM`: peak resident set; `VmRSS`: current).
fn status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system) a process used so far, from `/proc/{pid}/stat` (100 clock ticks per second).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The 1-minute load average of the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The node process serving Azurite on `port` (the watchdog shell around it carries the same arguments).
fn azurite_pid(port: u16) -> Option<String> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_node = args.first().is_some_and(|a| a.ends_with("node"));
            (is_node && args.iter().any(|a| a.contains("azurite")) && args.contains(&port))
                .then_some(pid)
        })
}

/// Azurite's table and queue services (one node process each), shared by every run of the benchmark.
struct Storage {
    tables: azurite::Azurite,
    queues: azurite::Azurite,
}

impl Storage {
    fn pids(&self) -> Vec<String> {
        [self.tables.port, self.queues.port]
            .into_iter()
            .filter_map(azurite_pid)
            .collect()
    }

    fn cpu(&self) -> f64 {
        self.pids().iter().filter_map(|p| cpu_seconds(p)).sum()
    }

    fn queue(&self, name: &str) -> AzureQueue {
        let parsed =
            ConnectionString::parse(&self.queues.queue_connection_string()).expect("parses");
        let http = galbridge::m365::http::build_http_client(
            &galbridge::m365::http::HttpSettings::default(),
        )
        .expect("the HTTP client builds");
        AzureQueue::new(
            AzureQueueConfig {
                endpoint: parsed.queue_endpoint,
                name: name.to_owned(),
                auth: parsed.auth,
                retry: RetryPolicy::default(),
                encoding: MessageEncoding::Base64,
            },
            http,
        )
        .expect("a valid queue")
    }
}

/// What one run is made of.
#[derive(Clone, Copy)]
struct Shape {
    mailboxes_seeded: usize,
    people_seeded: usize,
    latency_ms: u64,
    per_shard: u32,
}

/// One run's figures.
struct Figures {
    consumers: usize,
    app_limit: Option<u32>,
    budget: Option<u32>,
    contacts: usize,
    mailboxes: usize,
    people: usize,
    shards: usize,
    dispatch_secs: f64,
    secs: f64,
    consumer_peaks_mib: Vec<f64>,
    consumer_cpu: Vec<f64>,
    sim_peak_mib: f64,
    sim_start_mib: f64,
    sim_cpu: f64,
    azurite_peaks_mib: Vec<f64>,
    azurite_cpu: f64,
    busiest_10_s: u32,
    app_requests: u64,
    app_throttled: u64,
    all_throttled: u64,
    retried: usize,
    load_before: String,
    load_after: String,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.contacts as f64 / self.secs.max(1e-9)
    }
}

fn completed(deliveries: &[Delivery]) -> BTreeSet<String> {
    deliveries
        .iter()
        .filter(|d| d.outcome == Outcome::Completed)
        .map(|d| d.text.clone())
        .collect()
}

/// One run: a fresh simulator, table and queue; `consumers` serving processes with a trigger each; one dispatch;
/// waits for every shard, checks every mailbox, collects the figures.
fn run(
    storage: &Storage,
    shape: Shape,
    consumers: usize,
    app_limit: Option<u32>,
    budget: Option<u32>,
    timeout: Duration,
) -> Figures {
    // This process's peak from here on: the simulator of this run (and the triggers), not the previous run's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let sim_start_mib = status_mib("self", "VmRSS:").unwrap_or(f64::NAN);
    let mut knobs = m365_sim::Knobs::default();
    knobs.latency.graph = m365_sim::Latency {
        fixed_ms: shape.latency_ms,
        jitter_ms: 0,
    };
    knobs.outlook_concurrency_per_mailbox = 4;
    knobs.outlook_requests_per_10_min = 10_000;
    knobs.graph_app_requests_per_10_s = app_limit;
    let sim = Sim::start_sized(shape.people_seeded, shape.mailboxes_seeded, knobs);
    let control = sim.handle.control();
    let people = sim.users_in_scope("acme");
    let mailboxes = writable_mailboxes(&sim.users("northern")).len();
    let northern_app = sim
        .handle
        .tenant("northern")
        .expect("seeded")
        .client_id
        .to_ascii_lowercase();

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("gb{run_id}")[..24].to_owned();
    let queue_name = format!("phones-{}", &run_id[..12]);
    let links = format!(
        "[[links]]\nname = \"{LINK}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{FOLDER}\"\n\
         mailboxes_per_shard = {}\n",
        shape.per_shard
    );
    let placeholder = std::path::Path::new("/nonexistent-state");
    let (toml, mut env) = sim.config(placeholder, &links);
    let file_state = format!(
        "[state]\nkind = \"file\"\npath = {:?}\n",
        placeholder.display().to_string()
    );
    assert!(toml.contains(&file_state), "the support's state section");
    let mut service = format!("[service]\nmailboxes_in_flight = {}\n", shape.per_shard);
    if let Some(budget) = budget {
        service.push_str(&format!("graph_requests_per_10s = {budget}\n"));
    }
    let toml = toml.replacen("[service]\n", &service, 1).replace(
        &file_state,
        &format!(
            "[state]\nkind = \"table\"\ntable = \"{table}\"\nauth = {{ connection_string_env = \"{TABLE_ENV}\" }}\n\
             [service.shard_queue]\nname = \"{queue_name}\"\nauth = {{ connection_string_env = \"{QUEUE_ENV}\" }}\n"
        ),
    );
    env.push((TABLE_ENV.to_owned(), storage.tables.connection_string()));
    env.push((
        QUEUE_ENV.to_owned(),
        storage.queues.queue_connection_string(),
    ));
    env.push(("GALBRIDGE_LOG".to_owned(), "warn".to_owned()));

    let queue = storage.queue(&queue_name);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(queue.create_if_missing())
        .expect("the queue is created");
    let logs = tempfile::tempdir().expect("temp dir");
    let apps: Vec<TestApp> = (0..consumers)
        .map(|n| {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = std::fs::File::create(logs.path().join(format!("consumer-{n}.log")))
                .expect("a log file");
            spawn_app_logging_to(dir, &toml, &env, Stdio::from(log))
        })
        .collect();
    // host.json's settings (one message at a time per instance, 5 tries, 30 s before a retry); an empty queue is
    // polled every 200 ms (the host backs off from shorter up to maxPollingInterval, 2 s).
    let settings = QueueTriggerSettings {
        poll_interval: Duration::from_millis(200),
        ..QueueTriggerSettings::from_host_json()
    };
    let triggers: Vec<QueueTrigger> = apps
        .iter()
        .map(|app| {
            QueueTrigger::start(
                queue.clone(),
                app.port,
                "PhonesShard",
                "shard",
                settings.clone(),
            )
        })
        .collect();
    let pids: Vec<String> = apps.iter().map(|a| a.child.id().to_string()).collect();
    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(p).unwrap_or(0.0)).collect();
    let sim_cpu_before = cpu_seconds("self").unwrap_or(0.0);
    let azurite_cpu_before = storage.cpu();
    let load_before = load_average();

    let clock = Instant::now();
    let (status, envelope) = invoke(apps[0].port, "SyncHttp", &sync_payload(LINK, json!({})));
    assert_eq!(status, 200, "{envelope}");
    let (code, report) = res(&envelope);
    assert_eq!(code, 200, "{report:#}");
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    let dispatch_secs = clock.elapsed().as_secs_f64();
    let (_, envelope) = invoke(apps[0].port, "Status", &status_payload());
    let shards = res(&envelope).1["links"][0]["shards"]["shards"]
        .as_u64()
        .expect("the shard count in status") as usize;

    let deadline = clock + timeout;
    let all = |triggers: &[QueueTrigger]| -> Vec<Delivery> {
        triggers.iter().flat_map(QueueTrigger::deliveries).collect()
    };
    while completed(&all(&triggers)).len() < shards {
        let deliveries = all(&triggers);
        assert!(
            Instant::now() < deadline,
            "{consumers} consumers: {} of {shards} shards completed after {timeout:?}",
            completed(&deliveries).len()
        );
        assert!(
            deliveries.iter().all(|d| d.outcome != Outcome::Poisoned),
            "a shard was poisoned: {deliveries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deliveries = all(&triggers);
    let finished = deliveries
        .iter()
        .filter(|d| d.outcome == Outcome::Completed)
        .map(|d| d.finished)
        .max()
        .expect("completed deliveries");
    let secs = finished.duration_since(clock).as_secs_f64();
    let consumer_peaks_mib: Vec<f64> = pids
        .iter()
        .map(|p| status_mib(p, "VmHWM:").unwrap_or(f64::NAN))
        .collect();
    let consumer_cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu_seconds(p).unwrap_or(0.0) - before)
        .collect();
    let sim_cpu = cpu_seconds("self").unwrap_or(0.0) - sim_cpu_before;
    let azurite_cpu = storage.cpu() - azurite_cpu_before;
    let load_after = load_average();
    let ports: BTreeSet<u16> = deliveries.iter().map(|d| d.handler_port).collect();
    assert_eq!(ports.len(), consumers, "every consumer took shards");
    let retried = deliveries
        .iter()
        .filter(|d| d.outcome != Outcome::Completed)
        .count();

    let (_, envelope) = invoke(apps[0].port, "Status", &status_payload());
    let (_, status) = res(&envelope);
    let set = &status["links"][0]["shards"];
    assert_eq!(set["done"].as_u64(), Some(shards as u64), "{set:#}");
    assert_eq!(set["failed"].as_u64(), Some(0), "{set:#}");
    for trigger in triggers {
        trigger.stop();
    }
    drop(apps);

    // What a user would check: every mailbox holds every person once, nothing else, no duplicate.
    assert_every_mailbox_complete(&sim.handle, FOLDER, &people);
    let loads = control.app_loads();
    let target = loads
        .iter()
        .find(|l| l.app_id.eq_ignore_ascii_case(&northern_app))
        .expect("the target app's load");
    let sim_peak_mib = status_mib("self", "VmHWM:").unwrap_or(f64::NAN);
    let azurite_peaks_mib = storage
        .pids()
        .iter()
        .map(|p| status_mib(p, "VmHWM:").unwrap_or(f64::NAN))
        .collect();
    Figures {
        consumers,
        app_limit,
        budget,
        contacts: people.len() * mailboxes,
        mailboxes,
        people: people.len(),
        shards,
        dispatch_secs,
        secs,
        consumer_peaks_mib,
        consumer_cpu,
        sim_peak_mib,
        sim_start_mib,
        sim_cpu,
        azurite_peaks_mib,
        azurite_cpu,
        busiest_10_s: target.max_in_any_10_s,
        app_requests: target.requests,
        app_throttled: target.throttled,
        all_throttled: control.throttled_count(),
        retried,
        load_before,
        load_after,
    }
}

fn mib_list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_run(figures: &Figures, base_rate: Option<f64>) {
    let limit = match (figures.app_limit, figures.budget) {
        (None, _) => "no per-app limit".to_owned(),
        (Some(l), None) => {
            format!("simulator's per-app limit {l} / 10 s, galbridge's budget the default")
        }
        (Some(l), Some(b)) => {
            format!("simulator's per-app limit {l} / 10 s, galbridge's graph_requests_per_10s {b}")
        }
    };
    let ratio = base_rate.map_or_else(String::new, |base| {
        format!(", ratio to one consumer {:.2}", figures.rate() / base)
    });
    println!(
        "{} consumer(s), {limit}: {} shards, {:.1} s ({:.1} s dispatch), {:.0} contacts/s{ratio}",
        figures.consumers,
        figures.shards,
        figures.secs,
        figures.dispatch_secs,
        figures.rate()
    );
    let consumer_cores: f64 = figures.consumer_cpu.iter().sum::<f64>() / figures.secs;
    println!(
        "  peak RSS: consumers {} MiB; simulator process {:.0} MiB ({:.0} MiB at the run's start, held over \
         from earlier runs: the run's own share is the difference); Azurite (table / queue, one process each for \
         every run) {} MiB",
        mib_list(&figures.consumer_peaks_mib),
        figures.sim_peak_mib,
        figures.sim_start_mib,
        mib_list(&figures.azurite_peaks_mib)
    );
    println!(
        "  CPU: consumers {} s ({consumer_cores:.2} cores), simulator process {:.1} s ({:.2} cores), Azurite {:.1} s \
         ({:.2} cores); load average {} -> {}",
        figures
            .consumer_cpu
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(" / "),
        figures.sim_cpu,
        figures.sim_cpu / figures.secs,
        figures.azurite_cpu,
        figures.azurite_cpu / figures.secs,
        figures.load_before,
        figures.load_after
    );
    let average = figures.app_requests as f64 / figures.secs;
    let of_limit = figures.app_limit.map_or_else(String::new, |limit| {
        format!(
            " = {:.0}% of the limit",
            average * 1000.0 / f64::from(limit)
        )
    });
    println!(
        "  target app: {} Graph requests ({average:.0}/s on average{of_limit}), busiest 10 s {} ({:.0}/s), {} \
         per-app 429s; all 429s {}; deliveries not completed (retried) {}",
        figures.app_requests,
        figures.busiest_10_s,
        f64::from(figures.busiest_10_s) / 10.0,
        figures.app_throttled,
        figures.all_throttled,
        figures.retried
    );
}

fn main() {
    if azurite::skipped() {
        eprintln!("GALBRIDGE_SKIP_AZURITE=1: the shard-queue benchmark needs Azurite");
        return;
    }
    let shape = Shape {
        mailboxes_seeded: env_number("GALBRIDGE_BENCH_MAILBOXES", 400) as usize,
        people_seeded: env_number("GALBRIDGE_BENCH_PEOPLE", 150) as usize,
        latency_ms: env_number("GALBRIDGE_BENCH_LATENCY_MS", 100),
        per_shard: u32::try_from(env_number("GALBRIDGE_BENCH_PER_SHARD", 10))
            .expect("a small shard"),
    };
    let consumer_counts = env_list("GALBRIDGE_BENCH_CONSUMERS", "1,2,4");
    let limited_counts = env_list("GALBRIDGE_BENCH_LIMITED_CONSUMERS", "2,4");
    let paced_counts = env_list("GALBRIDGE_BENCH_PACED_CONSUMERS", "4");
    let timeout = Duration::from_secs(env_number("GALBRIDGE_BENCH_TIMEOUT_SECS", 1800));
    let storage = Storage {
        tables: azurite::Azurite::start().unwrap_or_else(|e| panic!("{e}")),
        queues: azurite::Azurite::start_queue().unwrap_or_else(|e| panic!("{e}")),
    };

    // The rate a consumer can reach at this latency: its mailboxes in flight, each sending one batch of 20 at a
    // time, which costs the envelope's round trip plus 20 / 4 rounds of inner requests.
    let round_trips = 1.0 + (BATCH / OUTLOOK_CONCURRENCY).ceil();
    let ceiling =
        f64::from(shape.per_shard) * BATCH / (round_trips * shape.latency_ms as f64 / 1e3);
    println!(
        "GAL to phones through the shard queue: Graph latency {} ms, Outlook limits on, {} mailboxes per shard = \
         mailboxes in flight per consumer, one shard at a time per consumer (host.json batchSize 1)",
        shape.latency_ms, shape.per_shard
    );
    println!(
        "  latency-bound ceiling per consumer: {} mailboxes x {BATCH} contacts per {round_trips} round trips of {} ms \
         = {ceiling:.0} contacts/s",
        shape.per_shard, shape.latency_ms
    );

    let started = Instant::now();
    let mut base_rate = None;
    let mut base_per_10_s = None;
    let mut results = Vec::new();
    for &consumers in &consumer_counts {
        let figures = run(&storage, shape, consumers, None, None, timeout);
        if results.is_empty() {
            println!(
                "  {} people x {} mailboxes = {} contacts per run (seeded {} x {})",
                figures.people,
                figures.mailboxes,
                figures.contacts,
                shape.people_seeded,
                shape.mailboxes_seeded
            );
        }
        if consumers == 1 {
            base_rate = Some(figures.rate());
            base_per_10_s = Some(figures.app_requests as f64 / figures.secs * 10.0);
        }
        print_run(&figures, base_rate);
        let waves = figures.shards.div_ceil(consumers);
        println!(
            "  shard waves: {waves} per consumer ({} shards / {consumers}): the most the ratio can be is {:.2}",
            figures.shards,
            figures.shards as f64 / waves as f64
        );
        results.push(figures);
    }

    if !limited_counts.is_empty() || !paced_counts.is_empty() {
        let limit = u32::try_from(env_number(
            "GALBRIDGE_BENCH_APP_LIMIT",
            base_per_10_s.map_or(2_000, |per_10_s| (per_10_s * 1.5) as u64),
        ))
        .expect("a limit within u32")
        .clamp(20, 130_000);
        println!(
            "with the simulator's per-app limit at {limit} requests per 10 s ({:.0}/s), galbridge's budget at its \
             default (130,000): the limit binds through 429s and Retry-After",
            f64::from(limit) / 10.0
        );
        for &consumers in &limited_counts {
            let figures = run(&storage, shape, consumers, Some(limit), None, timeout);
            print_run(&figures, base_rate);
            results.push(figures);
        }
        println!(
            "with the simulator's per-app limit and galbridge's graph_requests_per_10s both at {limit} (the budget \
             the consumers share through the state store):"
        );
        for &consumers in &paced_counts {
            let figures = run(
                &storage,
                shape,
                consumers,
                Some(limit),
                Some(limit),
                timeout,
            );
            print_run(&figures, base_rate);
            results.push(figures);
        }
    }

    println!("summary (contacts/s; ratio to one consumer):");
    for figures in &results {
        println!(
            "  {} consumer(s){}: {:.0} contacts/s{}; busiest 10 s {}; peak RSS consumers {} MiB, simulator {:.0} MiB",
            figures.consumers,
            match (figures.app_limit, figures.budget) {
                (None, _) => String::new(),
                (Some(l), None) => format!(" (simulator limit {l})"),
                (Some(l), Some(_)) => format!(" (simulator limit {l} + galbridge budget)"),
            },
            figures.rate(),
            base_rate.map_or_else(String::new, |b| format!(" ({:.2})", figures.rate() / b)),
            figures.busiest_10_s,
            mib_list(&figures.consumer_peaks_mib),
            figures.sim_peak_mib
        );
    }
    println!(
        "total {:.0} s. What limits the ratio here: the dispatch (source read and one message per shard) is serial; \
         shards finish in whole waves per consumer; one Azurite process serves every consumer's state, and it, the \
         consumers and the simulator share this machine's cores (CPU figures above).",
        started.elapsed().as_secs_f64()
    );
}
