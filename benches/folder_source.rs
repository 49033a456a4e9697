//! Mailbox-folder source benchmark (issue 15) against the in-process m365-sim with Outlook's limits on (4 concurrent
//! requests and 10,000 per 10 minutes per mailbox) and a fixed Graph latency (20 ms):
//!
//! 1. the source read's cost: an export folder of 10,000 contacts read in full once, then 10 of them changed: how
//!    many requests the incremental read of the folder takes (aim: one delta round trip, not a folder re-read);
//! 2. the incremental fan-out: an export folder of ~500 contacts into ~200 phones, then 1% of the contacts changed:
//!    requests ÷ (changed contacts × mailboxes) (aim ≤ 1.05).
//!
//! Knobs: `GALBRIDGE_BENCH_FOLDER` (contacts of part 1, default 10,000), `GALBRIDGE_BENCH_CONTACTS` (contacts of part
//! 2, default 500), `GALBRIDGE_BENCH_MAILBOXES` (target users seeded, default 235 → ~200 writable mailboxes),
//! `GALBRIDGE_BENCH_LATENCY_MS`. Run: `cargo bench --bench folder_source`.

use std::sync::Arc;
use std::time::Instant;

use galbridge::config::Config;
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

const FOLDER: &str = "ACME GAL";
const DELTA_ROUTE: &str = "/contactFolders/{fid}/contacts/delta";
/// Part 1 scopes the link to the folder's first contacts (department "Sales"), so the one phone it fills stays
/// within Outlook's 10,000 requests per 10 minutes per mailbox and the figure is the source read's.
const IN_SCOPE: usize = 100;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn graph_requests(control: &Control, route: &str) -> u64 {
    control
        .counters()
        .iter()
        .filter(|row| row.service == Service::Graph && row.endpoint.contains(route))
        .map(|row| row.count)
        .sum()
}

/// An export mailbox in acme holding `contacts` contacts in its "ACME GAL" folder; returns (UPN, contact ids).
fn export_folder(control: &Control, contacts: usize) -> (String, Vec<String>) {
    let id = control
        .add_user("acme", json!({"displayName": "Acme Staff Export"}))
        .expect("export mailbox");
    let upn = control
        .users("acme")
        .expect("acme")
        .iter()
        .find(|u| u["id"] == id.as_str())
        .and_then(|u| u["userPrincipalName"].as_str().map(str::to_owned))
        .expect("upn");
    let folder = control
        .create_contact_folder("acme", &id, None, FOLDER)
        .expect("folder");
    let ids = (0..contacts)
        .map(|n| {
            control
                .create_user_made_contact(
                    "acme",
                    &id,
                    Some(&folder),
                    json!({"displayName": format!("Person {n:05}"), "givenName": "Person", "surname": format!("{n:05}"),
                           "jobTitle": "Engineer", "department": if n < IN_SCOPE { "Sales" } else { "Engineering" }, "businessPhones": [format!("+44 20 7946 {n:04}")],
                           "emailAddresses": [{"name": format!("Person {n:05}"), "address": format!("person{n:05}@acme.example")}],
                           "businessAddress": {"city": "Leeds"}}),
                )
                .expect("contact")
        })
        .collect();
    (upn, ids)
}

async fn service_for(
    sim: &m365_sim::SimHandle,
    state: &std::path::Path,
    export: &str,
    mailboxes: &str,
    source_filter: &str,
) -> EngineService {
    let mut toml = format!(
        "[state]\nkind = \"file\"\npath = {:?}\n",
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
    toml.push_str(&format!(
        "[[links]]\nname = \"export-to-phones\"\n[links.source]\nkind = \"mailbox_folder\"\ntenant = \"acme\"\n\
         mailbox = \"{export}\"\nfolder = \"{FOLDER}\"\n{source_filter}[links.target]\nkind = \"personal_contacts\"\n\
         tenant = \"northern\"\nmailboxes = {mailboxes}\nfolder = \"{FOLDER}\"\n\
         [links.safety]\nmax_deletes = 100000\nmax_delete_percent = 100\n"
    ));
    let config = Config::from_toml_str(&toml, std::path::Path::new("bench.toml"))
        .expect("valid configuration");
    let connector = Arc::new(sim_connector(sim, &config).expect("simulator reachable"));
    let store = Arc::new(FileStore::open(state).expect("file store"));
    EngineService::new(&config, store, connector)
}

async fn run(service: &EngineService) -> (RunReport, f64) {
    let clock = Instant::now();
    let report = service
        .run_link("export-to-phones", RunOptions::default())
        .await
        .expect("run starts");
    (report, clock.elapsed().as_secs_f64())
}

async fn start(target_users: usize, latency_ms: u64) -> m365_sim::SimHandle {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", 20),
            m365_sim::TenantSeed::new("northern", target_users),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    sim.control().update_knobs(|knobs| {
        knobs.latency.graph = m365_sim::Latency {
            fixed_ms: latency_ms,
            jitter_ms: 0,
        };
        knobs.outlook_concurrency_per_mailbox = 4;
        knobs.outlook_requests_per_10_min = 10_000;
    });
    sim
}

fn change(control: &Control, export: &str, ids: &[String], how_many: usize) {
    let export_id = control
        .users("acme")
        .expect("acme")
        .iter()
        .find(|u| u["userPrincipalName"] == export)
        .and_then(|u| u["id"].as_str().map(str::to_owned))
        .expect("export id");
    for (n, id) in ids.iter().take(how_many).enumerate() {
        control
            .update_mailbox_contact(
                "acme",
                &export_id,
                id,
                json!({"jobTitle": format!("Changed {n}")}),
            )
            .expect("change");
    }
}

#[tokio::main]
async fn main() {
    let folder_size = env_number("GALBRIDGE_BENCH_FOLDER", 10_000) as usize;
    let contacts = env_number("GALBRIDGE_BENCH_CONTACTS", 500) as usize;
    let target_users = env_number("GALBRIDGE_BENCH_MAILBOXES", 235) as usize;
    let latency_ms = env_number("GALBRIDGE_BENCH_LATENCY_MS", 20);
    println!("Mailbox folder as a source, Graph latency {latency_ms} ms, Outlook limits on");

    // 1. The source read of a large folder: one phone as the target, so the read dominates.
    let sim = start(target_users, latency_ms).await;
    let control = sim.control();
    let (export, ids) = export_folder(&control, folder_size);
    let phone = control
        .users("northern")
        .expect("northern")
        .iter()
        .find(|u| u["mailbox"] == "user" && u["restEnabled"] == true && u["userType"] == "Member")
        .and_then(|u| u["userPrincipalName"].as_str().map(str::to_owned))
        .expect("a phone");
    let state = tempfile::tempdir().expect("temp dir");
    let service = service_for(
        &sim,
        state.path(),
        &export,
        &format!("{{ list = [\"{phone}\"] }}"),
        "filters = [{ attribute = \"department\", equals = \"Sales\" }]\n",
    )
    .await;
    control.reset_counters();
    let (initial, initial_secs) = run(&service).await;
    let full_reads = graph_requests(&control, DELTA_ROUTE);
    println!(
        "1. folder of {folder_size} contacts ({IN_SCOPE} in the link's scope, one phone), full read: {:?}, {} read, \
         {full_reads} delta requests (pages of 100), {} contacts written, {initial_secs:.2} s",
        initial.outcome, initial.source_read, initial.applied.creates
    );
    change(&control, &export, &ids, 10);
    control.reset_counters();
    let (incremental, incremental_secs) = run(&service).await;
    let delta_requests = graph_requests(&control, DELTA_ROUTE);
    let folder_listings: u64 = control
        .counters()
        .iter()
        .filter(|row| {
            row.service == Service::Graph
                && (row.endpoint.ends_with("/contactFolders")
                    || row.endpoint.ends_with("/childFolders"))
        })
        .map(|row| row.count)
        .sum();
    println!(
        "   10 contacts changed, incremental: {:?}, {} read, {delta_requests} delta request(s), {folder_listings} folder \
         listing(s), {} contacts updated, {incremental_secs:.2} s",
        incremental.outcome, incremental.source_read, incremental.applied.updates
    );
    sim.shutdown().await;

    // 2. Fan-out: a folder of `contacts` into every phone, then 1% changed.
    let sim = start(target_users, latency_ms).await;
    let control = sim.control();
    let (export, ids) = export_folder(&control, contacts);
    let state = tempfile::tempdir().expect("temp dir");
    let service = service_for(&sim, state.path(), &export, "{ all = true }", "").await;
    let (initial, initial_secs) = run(&service).await;
    // Every phone receives the whole folder.
    let mailboxes = initial.applied.creates as usize / contacts.max(1);
    println!(
        "2. folder of {contacts} contacts into {mailboxes} phones: {:?}, {} contacts written, {initial_secs:.2} s",
        initial.outcome, initial.applied.creates
    );
    let changed = (contacts / 100).max(1);
    change(&control, &export, &ids, changed);
    control.reset_counters();
    let (incremental, incremental_secs) = run(&service).await;
    let all_graph: u64 = control
        .counters()
        .iter()
        .filter(|row| row.service == Service::Graph)
        .map(|row| row.count)
        .sum();
    let mailbox_writes: u64 = control
        .counters()
        .iter()
        .filter(|row| {
            row.service == Service::Graph
                && row.endpoint.contains("/contacts")
                && !row.endpoint.contains("/delta")
        })
        .map(|row| row.count)
        .sum();
    let fan_out = (changed * mailboxes).max(1) as f64;
    println!(
        "   {changed} contacts changed, incremental: {:?}, {} contacts updated, {incremental_secs:.2} s",
        incremental.outcome, incremental.applied.updates
    );
    println!(
        "   contact writes / (changes x phones): {:.3}",
        mailbox_writes as f64 / fan_out
    );
    println!(
        "   all Graph requests (source delta, $batch envelopes, inner writes) / (changes x phones): {:.3}",
        all_graph as f64 / fan_out
    );
    sim.shutdown().await;
}
