//! Guest benchmark of the real binary (`galbridge sync`, production path, file state) against m365-sim in this
//! process: N source people invited as guests into an empty target, then incremental runs with 0, 1, 10 and 30
//! changed people. Prints the target-side requests per created guest (Graph: invitation, PATCH, and the one guest
//! listing per run that invites; Exchange: `Set-MailUser` to show it, and the one mail-contact listing) and per
//! changed guest, and each incremental run's requests (all services, source included) against its changes.
//! `GALBRIDGE_BENCH_GUESTS` sets N (default 300; the simulator admits 150 invitations per 5 s per tenant, as
//! Microsoft documents, so larger N mostly measures that limit). Run: `cargo bench --bench guest_bench`.

#[path = "support/binary.rs"]
mod binary;

use binary::{count, requests, sync};
use m365_sim::Service;
use serde_json::json;

/// Target-side requests since `before`: (Graph, Exchange), from the simulator's counters.
fn target_requests(control: &m365_sim::Control, before: (u64, u64)) -> (u64, u64) {
    let graph = control.count(Service::Graph, "POST /v1.0/invitations", None)
        + control.count(Service::Graph, "PATCH /v1.0/users", None)
        + control.count(Service::Graph, "GET /v1.0/users", None)
        - control.count(Service::Graph, "GET /v1.0/users/delta", None);
    let exchange = control.count(Service::Exchange, "Set-MailUser", None)
        + control.count(Service::Exchange, "Get-MailContact", None);
    (graph - before.0, exchange - before.1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let people: usize = std::env::var("GALBRIDGE_BENCH_GUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", people),
            m365_sim::TenantSeed::new("northern", 5),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let dir = std::env::temp_dir().join(format!("galbridge-guest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let (config, secrets) = binary::one_way_config(&sim, &dir, 8);
    let toml = std::fs::read_to_string(&config).expect("configuration");
    std::fs::write(
        &config,
        toml.replace("kind = \"mail_contact\"", "kind = \"guest_user\""),
    )
    .expect("guest link");
    let control = sim.control();

    let full = sync(&config, &secrets).await;
    let creates = count(&full.report, "applied", "creates").max(1);
    let (graph, exchange) = target_requests(&control, (0, 0));
    println!(
        "full run: {people} people, {creates} guests created in {:.1} s, {} requests in all ({} throttled retries)",
        full.secs,
        requests(&full.report),
        full.report["throttled_retries"]
    );
    println!(
        "  per created guest (target side): {:.2} Graph requests, {:.2} Exchange commands",
        graph as f64 / creates as f64,
        exchange as f64 / creates as f64
    );

    let members: Vec<String> = control
        .users("acme")
        .expect("users")
        .into_iter()
        .filter(|u| u["accountEnabled"] == true && u["userType"] == "Member")
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .collect();
    for (round, changes) in [0usize, 1, 10, 30].into_iter().enumerate() {
        for id in members.iter().skip(round * 30).take(changes) {
            control
                .update_user("acme", id, json!({"jobTitle": format!("Changed {round}")}))
                .expect("update");
        }
        let before = target_requests(&control, (0, 0));
        let run = sync(&config, &secrets).await;
        let (graph, exchange) = target_requests(&control, before);
        let updates = count(&run.report, "applied", "updates");
        println!(
            "incremental, {changes:>2} changed: {updates:>2} updates, {:>3} requests in all ({}), target side {graph} Graph + {exchange} Exchange{}",
            requests(&run.report),
            run.report["requests"],
            if updates > 0 {
                format!(
                    " = {:.2} Graph per changed guest",
                    graph as f64 / updates as f64
                )
            } else {
                String::new()
            }
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}
