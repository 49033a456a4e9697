//! m365-sim throughput and footprint, in release: `cargo bench -p m365-sim --bench throughput`.
//! Prints simple Graph GETs per second, `$batch` contact writes per second, and the resident memory of a large
//! seeded tenant with mailboxes full of contacts. Scale with M365SIM_BENCH_SECS (GET phase), M365SIM_BENCH_BATCHES
//! (batches of 20 creates per mailbox, 32 mailboxes), M365SIM_BENCH_LATENCY_MS (Graph latency of a second, shorter
//! `$batch` phase; default 20 as in the phones benchmark) and M365SIM_BENCH_USERS / _MAILBOXES / _CONTACTS (footprint).
//!
//! The simulator runs on its own runtime (threads named `m365-sim`) and the load generator on another
//! (`bench-client`), so the CPU time each side burns is read per thread from /proc (`schedstat`). Besides the wall
//! clock rate (which depends on whatever else this shared machine runs), the bench prints requests per
//! simulator CPU-second: what one uncontended core of the simulator serves, the figure that says whether the sim
//! can be the bottleneck of galbridge's benchmarks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use m365_sim::{SimConfig, SimHandle, TenantSeed};
use serde_json::{Value, json};

/// The allocator the `m365-sim` binary uses (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client(sim: &SimHandle) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(sim.ca_pem_path()).expect("CA PEM");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

async fn token(http: &reqwest::Client, sim: &SimHandle, scope: &str) -> String {
    let t = sim.tenant("acme").expect("acme");
    let body: Value = http
        .post(t.token_url.clone())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("client_secret", &t.client_secret),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    body["access_token"].as_str().expect("token").to_string()
}

/// Nanoseconds of CPU the threads of this process whose name starts with `prefix` have used so far.
fn thread_cpu_ns(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim_end().starts_with(prefix))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU seconds used by the simulator's and the client's threads between two points.
struct CpuMeter {
    sim: u64,
    client: u64,
}

impl CpuMeter {
    fn start() -> Self {
        CpuMeter {
            sim: thread_cpu_ns(SIM_THREADS),
            client: thread_cpu_ns(CLIENT_THREADS),
        }
    }

    /// (simulator CPU-s, client CPU-s) since `start`.
    fn stop(&self) -> (f64, f64) {
        (
            (thread_cpu_ns(SIM_THREADS).saturating_sub(self.sim)) as f64 / 1e9,
            (thread_cpu_ns(CLIENT_THREADS).saturating_sub(self.client)) as f64 / 1e9,
        )
    }
}

const SIM_THREADS: &str = "m365-sim";
const CLIENT_THREADS: &str = "bench-client";

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn simple_gets(
    sim: &SimHandle,
    http: &reqwest::Client,
    tok: &str,
    ids: &[String],
    workers: usize,
    secs: u64,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let ids = Arc::new(ids.to_vec());
    let base = sim.base_url().as_str().trim_end_matches('/').to_string();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (http, tok, ids, done, errors, base) = (
            http.clone(),
            tok.to_string(),
            Arc::clone(&ids),
            Arc::clone(&done),
            Arc::clone(&errors),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let id = &ids[i % ids.len()];
                i += workers;
                match http
                    .get(format!(
                        "{base}/v1.0/users/{id}?$select=id,displayName,mail"
                    ))
                    .bearer_auth(&tok)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "  ({n} ok, {} errors, {workers} connections)",
        errors.load(Ordering::Relaxed)
    );
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

async fn batch_writes(
    sim: &SimHandle,
    http: &reqwest::Client,
    tok: &str,
    mailboxes: &[String],
    batches_per_mailbox: usize,
) -> (f64, u64) {
    let base = sim.base_url().as_str().trim_end_matches('/').to_string();
    let start = Instant::now();
    let created = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // One worker per mailbox: a mailbox takes 4 concurrent requests, which one batch already uses.
    for (m, mailbox) in mailboxes.iter().enumerate() {
        let (http, tok, base, mailbox, created) = (
            http.clone(),
            tok.to_string(),
            base.clone(),
            mailbox.clone(),
            Arc::clone(&created),
        );
        tasks.push(tokio::spawn(async move {
            for b in 0..batches_per_mailbox {
                let requests: Vec<Value> = (0..20)
                    .map(|i| json!({"id": i.to_string(), "method": "POST", "url": format!("/users/{mailbox}/contacts"), "headers": {"Content-Type": "application/json"},
                        "body": {"displayName": format!("Bench {m}-{b}-{i}"), "emailAddresses": [{"address": format!("b{m}.{b}.{i}@bench.example")}], "categories": ["Bench"]}}))
                    .collect();
                let resp: Value = http.post(format!("{base}/v1.0/$batch")).bearer_auth(&tok).json(&json!({"requests": requests})).send().await.expect("batch").json().await.expect("json");
                let ok = resp["responses"].as_array().map_or(0, |r| r.iter().filter(|x| x["status"] == 201).count());
                created.fetch_add(ok as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = created.load(Ordering::Relaxed);
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SIM_THREADS)
        .enable_all()
        .build()
        .expect("simulator runtime");
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .expect("client runtime");
    let sim = sim_runtime
        .block_on(m365_sim::start(SimConfig {
            tenants: vec![TenantSeed::new("acme", 2_000)],
            // Measure the server, not Microsoft's directory budget (8,000 units / 10 s would cap GETs at 800/s).
            knobs: m365_sim::Knobs {
                directory_budget: false,
                ..m365_sim::Knobs::default()
            },
            ..SimConfig::default()
        }))
        .expect("start");
    client_runtime.block_on(throughput(&sim));
    sim_runtime.block_on(sim.shutdown());
    sim_runtime.block_on(footprint());
}

async fn throughput(sim: &SimHandle) {
    let sim = sim.clone();
    let secs = env_usize("M365SIM_BENCH_SECS", 5) as u64;
    let http = client(&sim);
    let graph = token(&http, &sim, "https://graph.microsoft.com/.default").await;
    let users = sim.control().users("acme").expect("users");
    let ids: Vec<String> = users
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect();
    println!(
        "m365-sim throughput ({} cores, shared by the client, the simulator and whatever else runs here)",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let meter = CpuMeter::start();
    let (rate, n) = simple_gets(&sim, &http, &graph, &ids, 64, secs).await;
    let (sim_cpu, client_cpu) = meter.stop();
    println!(
        "simple Graph GET /v1.0/users/{{id}}: {rate:.0} req/s wall; {:.0} req per simulator CPU-second (sim {sim_cpu:.1} CPU-s, client {client_cpu:.1} CPU-s)",
        n as f64 / sim_cpu.max(1e-9)
    );

    let mailboxes: Vec<String> = users
        .iter()
        .filter(|u| u["mailbox"] == "user" && u["restEnabled"] == true)
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .take(32)
        .collect();
    let meter = CpuMeter::start();
    let batches = env_usize("M365SIM_BENCH_BATCHES", 40);
    let (rate, n) = batch_writes(&sim, &http, &graph, &mailboxes, batches).await;
    let (sim_cpu, client_cpu) = meter.stop();
    println!(
        "$batch contact creates: {rate:.0} contacts/s wall ({n} created, batches of 20, {} mailboxes in parallel); {:.0} contacts per simulator CPU-second (sim {sim_cpu:.1} CPU-s, client {client_cpu:.1} CPU-s)",
        mailboxes.len(),
        n as f64 / sim_cpu.max(1e-9)
    );

    // The same writes with Graph latency on (the phones benchmark runs with 20 ms): what the timers and the held
    // Outlook slots add to the simulator's CPU per contact. Fresh mailboxes, so each starts empty.
    let latency_ms = env_usize("M365SIM_BENCH_LATENCY_MS", 20) as u64;
    let slow_mailboxes: Vec<String> = users
        .iter()
        .filter(|u| u["mailbox"] == "user" && u["restEnabled"] == true)
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .skip(mailboxes.len())
        .take(32)
        .collect();
    sim.control().update_knobs(|k| {
        k.latency.graph = m365_sim::Latency {
            fixed_ms: latency_ms,
            jitter_ms: 0,
        }
    });
    let meter = CpuMeter::start();
    let (rate, n) = batch_writes(&sim, &http, &graph, &slow_mailboxes, batches.div_ceil(4)).await;
    let (sim_cpu, client_cpu) = meter.stop();
    println!(
        "$batch contact creates with {latency_ms} ms Graph latency: {rate:.0} contacts/s wall ({n} created, {} mailboxes in parallel); {:.0} contacts per simulator CPU-second (sim {sim_cpu:.1} CPU-s, client {client_cpu:.1} CPU-s)",
        slow_mailboxes.len(),
        n as f64 / sim_cpu.max(1e-9)
    );
    let throttled = sim.control().throttled_count();
    println!("429s sent during the run: {throttled}");
}

async fn footprint() {
    let users_n = env_usize("M365SIM_BENCH_USERS", 100_000);
    let mailboxes_n = env_usize("M365SIM_BENCH_MAILBOXES", 1_000);
    let contacts_n = env_usize("M365SIM_BENCH_CONTACTS", 1_000);
    let before = rss_mib();
    let started = Instant::now();
    let big = m365_sim::start(SimConfig {
        tenants: vec![TenantSeed {
            photo_rate: 0.6,
            ..TenantSeed::new("acme", users_n)
        }],
        ..SimConfig::default()
    })
    .await
    .expect("start");
    let seeded = started.elapsed();
    let after_users = rss_mib();
    let control = big.control();
    let owners: Vec<String> = control
        .users("acme")
        .expect("users")
        .iter()
        .filter(|u| u["mailbox"] == "user")
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .take(mailboxes_n)
        .collect();
    for owner in &owners {
        for c in 0..contacts_n {
            let fields = json!({"givenName": "Ada", "surname": format!("Lovelace{c}"), "displayName": format!("Ada Lovelace{c}"), "emailAddresses": [{"name": "Ada", "address": format!("ada{c}@northern.example")}],
                "businessPhones": ["+44 20 7946 0000"], "mobilePhone": "+44 7700 900000", "jobTitle": "Analyst", "companyName": "Northern", "department": "Research",
                "businessAddress": {"street": "1 Main St", "city": "London", "postalCode": "EC1", "countryOrRegion": "UK"}, "categories": ["Northern Directory"]});
            control
                .create_user_made_contact("acme", owner, None, fields)
                .expect("contact");
        }
    }
    let after_contacts = rss_mib();
    let total = owners.len() * contacts_n;
    println!(
        "footprint: {users_n} users seeded in {:.1}s, +{:.0} MiB; {} mailboxes x {contacts_n} contacts = {total} contacts, +{:.0} MiB ({:.0} bytes/contact); RSS {:.0} MiB",
        seeded.as_secs_f64(),
        after_users - before,
        owners.len(),
        after_contacts - after_users,
        (after_contacts - after_users) * 1024.0 * 1024.0 / total.max(1) as f64,
        after_contacts
    );
    big.shutdown().await;
}
