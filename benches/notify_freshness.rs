//! Freshness of near-real-time sync (issue 19): seconds from a change in the source tenant to the change landing in
//! the target, through the real release binary (`galbridge serve`, the `Notify` function spoken to as the Functions
//! host does) against m365-sim, with the default debounce (20 s) and the timer never invoked after the setup tick
//! that creates the subscription. 50 people change, one every 1.5 s (so bursts are split over several debounce
//! windows); each change is timed until its contact in the target shows it. Prints p50, p95 and max, and the runs.
//! `GALBRIDGE_BENCH_PEOPLE` sets the source size (default 500). Run: `cargo bench --bench notify_freshness`.

#[path = "../tests/handler_support/mod.rs"]
mod handler_support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handler_support::{
    Sim, TIMER_PAYLOAD, invoke, res, spawn_app_logging_to, status_payload, sync_payload,
};
use serde_json::json;

const CHANGES: usize = 50;
const SPACING: Duration = Duration::from_millis(1_500);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let people: usize = std::env::var("GALBRIDGE_BENCH_PEOPLE")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(500);
    let sim = Sim::start(people, m365_sim::Knobs::default());
    let handler_port = Arc::new(AtomicUsize::new(0));
    let host = handler_support::host::start("Notify", Arc::clone(&handler_port));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let link = "[[links]]\nname = \"acme-to-northern\"\ninterval = \"1d\"\n[links.source]\ntenant = \"acme\"\n\
                [links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n";
    let (toml, env) = sim.config(&dir.path().join("state"), link);
    let toml = toml.replacen(
        "[service]\n",
        &format!(
            "[service]\nnotifications = {{ public_url = {:?} }}\n",
            host.notify_url()
        ),
        1,
    );
    let app = spawn_app_logging_to(dir, &toml, &env, Stdio::null());
    handler_port.store(usize::from(app.port), Ordering::SeqCst);

    let (code, first) = res(&invoke(
        app.port,
        "SyncHttp",
        &sync_payload("acme-to-northern", json!({})),
    )
    .1);
    assert_eq!(
        (code, first["outcome"].as_str()),
        (200, Some("succeeded")),
        "{first}"
    );
    let (_, tick) = invoke(app.port, "SyncTimer", TIMER_PAYLOAD);
    assert!(tick["Logs"].to_string().contains("created until"), "{tick}");

    let control = sim.handle.control();
    let users = sim.users_in_scope("acme");
    let anchors: Vec<String> = users
        .iter()
        .take(CHANGES)
        .map(|user| sim.anchor_of("acme", user))
        .collect();
    let mut changed_at: Vec<Instant> = Vec::new();
    let mut landed: BTreeMap<usize, f64> = BTreeMap::new();
    let check = |landed: &mut BTreeMap<usize, f64>, changed_at: &[Instant]| {
        let titles: BTreeMap<String, String> = sim
            .contacts("northern")
            .0
            .into_iter()
            .map(|contact| {
                (
                    contact["CustomAttribute15"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    contact["Title"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        for (n, at) in changed_at.iter().enumerate() {
            if !landed.contains_key(&n)
                && titles
                    .get(&anchors[n])
                    .is_some_and(|title| *title == format!("Fresh {n}"))
            {
                landed.insert(n, at.elapsed().as_secs_f64());
            }
        }
    };
    let started = Instant::now();
    for (n, user) in users.iter().take(CHANGES).enumerate() {
        let next = started + SPACING * u32::try_from(n).expect("small");
        while Instant::now() < next {
            check(&mut landed, &changed_at);
            std::thread::sleep(Duration::from_millis(50));
        }
        control
            .update_user(
                "acme",
                user["id"].as_str().expect("an id"),
                json!({ "jobTitle": format!("Fresh {n}") }),
            )
            .expect("the user changes");
        changed_at.push(Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while landed.len() < CHANGES && Instant::now() < deadline {
        check(&mut landed, &changed_at);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        landed.len(),
        CHANGES,
        "every change landed within 3 minutes"
    );

    let mut secs: Vec<f64> = landed.values().copied().collect();
    secs.sort_by(f64::total_cmp);
    let (code, status) = res(&invoke(app.port, "Status", &status_payload()).1);
    assert_eq!(code, 200);
    let runs = status["links"][0]["recent_runs"]
        .as_array()
        .map_or(0, Vec::len);
    println!(
        "notify_freshness: {people} source people, {CHANGES} changes {:.1} s apart, debounce 20 s (default): \
         p50 {:.1} s, p95 {:.1} s, max {:.1} s; {} notified runs (after the first sync); {} notification POSTs",
        SPACING.as_secs_f64(),
        percentile(&secs, 50.0),
        percentile(&secs, 95.0),
        secs[secs.len() - 1],
        runs.saturating_sub(1),
        host.forwarded.load(Ordering::SeqCst),
    );
}
