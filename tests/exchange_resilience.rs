//! Exchange's undocumented and unpleasant behaviour, met by the real binary over TLS through the production HTTP
//! client, retries and limiter (state in Table Storage on Azurite unless a test says otherwise):
//! - a rate limit per (app, tenant) whose windows refuse every further request with `Retry-After` = the rest of the
//!   window: the first run slows down and finishes, creating everyone, without a failed object;
//! - processes killed at random points amid 503s, `ServerBusyException`s and Exchange's replication delay, under
//!   both error shapes and both not-found statuses: the link converges within four further runs, with no duplicate,
//!   nobody missing and no unanchored orphan (no state makes every later run fail);
//! - with the file store, a killed run's lease is taken over at once by the next run on the same host.
//!
//! What is checked is what an administrator would check: the target tenant's mail contacts, read through the
//! simulator's control API, and the run reports.

#[path = "support/azurite.rs"]
mod azurite;
#[path = "engine_support/cli.rs"]
mod cli;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cli::{Bed, by_address, is_anchored};
use m365_sim::{ExchangeErrorShape, ExchangeRateLimit, Fault, FaultRule, Service};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ONE_WAY: &str = r#"
[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
[links.target]
kind = "mail_contact"
tenant = "northern"
"#;

/// Every in-scope person has exactly one anchored contact at their address, and the target holds nothing else
/// (no duplicate, nobody missing, no unanchored orphan of an interrupted create). Returns the problems found.
fn divergence(bed: &Bed, people: &[Value]) -> Vec<String> {
    let all = bed.sim.control().mail_contacts("northern").expect("tenant");
    let mut problems = Vec::new();
    let orphans: Vec<&Value> = all.iter().filter(|c| !is_anchored(c)).collect();
    if !orphans.is_empty() {
        problems.push(format!("{} unanchored contact(s)", orphans.len()));
    }
    let mut per_anchor: BTreeMap<&str, usize> = BTreeMap::new();
    for contact in all.iter().filter(|c| is_anchored(c)) {
        *per_anchor
            .entry(contact["CustomAttribute15"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let duplicated = per_anchor.values().filter(|n| **n > 1).count();
    if duplicated > 0 {
        problems.push(format!("{duplicated} person(s) with several contacts"));
    }
    let anchored: Vec<Value> = all.iter().filter(|c| is_anchored(c)).cloned().collect();
    let missing = people
        .iter()
        .filter(|p| by_address(&anchored, p["mail"].as_str().unwrap_or_default()).is_none())
        .count();
    if missing > 0 {
        problems.push(format!("{missing} person(s) missing"));
    }
    if per_anchor.len() != people.len() {
        problems.push(format!(
            "{} people managed for {} in scope",
            per_anchor.len(),
            people.len()
        ));
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_first_run_slows_down_and_creates_everyone() {
    let Some(bed) = Bed::start(&[("acme", 400), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    let window = Duration::from_secs(10);
    control.update_knobs(|knobs| {
        knobs.exchange_error_shape = ExchangeErrorShape::Details;
        knobs.exchange_not_found_status = 404;
        knobs.exchange_rate_limit = Some(ExchangeRateLimit {
            commands: 400,
            window_secs: window.as_secs(),
        });
    });
    let people = bed.in_scope("acme");
    let started = Instant::now();
    let first = bed.run(&["sync", "--json"]).await;
    let took = started.elapsed();
    let report = first.report();
    assert_eq!(
        first.code, 0,
        "the first run succeeds: {report:#}\n{}",
        first.stderr
    );
    assert_eq!(
        report["failures"],
        json!([]),
        "no failed object in the first run"
    );
    assert_eq!(
        divergence(&bed, &people),
        Vec::<String>::new(),
        "everyone created in the first run"
    );
    let refused = control.count(Service::Exchange, "", Some(429));
    assert!(
        refused > 0,
        "the rate limit was reached (else this test proves nothing)"
    );
    // Nothing is sent inside a Retry-After window: each window ends with at most the requests that were already in
    // flight when it filled (max_concurrency = 4), never a stream of retries hammering the closed window.
    let windows = took.as_secs() / window.as_secs() + 2;
    assert!(
        refused <= windows * 4,
        "{refused} requests refused in {windows} windows of {window:?}: galbridge sent requests inside Retry-After windows"
    );
    let second = bed.sync_expecting(0, &["--full"]).await;
    assert_eq!(second["applied"]["creates"], 0, "{second:#}");
}

/// Kills the binary 10 times at random points (after a random number of requests the simulator handled for it),
/// amid 8% 503s, 5% `ServerBusyException`s and a 20 s replication delay, changing people between kills; then at
/// most four runs, 25 simulated seconds apart (the timer's next runs), must leave the target exactly right.
async fn killed_runs_converge(shape: ExchangeErrorShape, not_found_status: u16, seed: u64) {
    let Some(bed) = Bed::start(&[("acme", 120), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    control.update_knobs(|knobs| {
        knobs.exchange_error_shape = shape;
        knobs.exchange_not_found_status = not_found_status;
        knobs.exchange_replication_delay_ms = 20_000;
        knobs.latency.exchange = m365_sim::Latency {
            fixed_ms: 2,
            jitter_ms: 2,
        };
    });
    control.set_faults(vec![
        FaultRule::rated(
            Fault::ServiceUnavailable {
                retry_after_secs: Some(1),
            },
            0.08,
        )
        .on_service(Service::Exchange),
        FaultRule::rated(
            Fault::ServiceUnavailable {
                retry_after_secs: Some(1),
            },
            0.08,
        )
        .on_service(Service::Graph),
        FaultRule::rated(
            Fault::ExchangeTransient {
                status: 400,
                exception: "ServerBusyException".into(),
            },
            0.05,
        )
        .on_service(Service::Exchange),
    ]);
    let people = bed.in_scope("acme");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (round, person) in people.iter().take(10).enumerate() {
        let seen_before = control.count(Service::Exchange, "", None);
        let kill_after = rng.random_range(1..=120u64);
        let mut child = bed
            .command(&["sync", "--json"])
            .spawn()
            .expect("galbridge starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut ended = false;
        while control.count(Service::Exchange, "", None) < seen_before + kill_after {
            if child.try_wait().expect("child status").is_some() {
                // The run finished (or was refused) before its kill point: fine, the next round goes on.
                ended = true;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no progress towards the kill point"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !ended {
            child.start_kill().expect("SIGKILL");
        }
        child.wait().await.expect("reaped");
        control
            .update_user(
                "acme",
                person["id"].as_str().expect("a user id"),
                json!({"jobTitle": format!("Round {round}")}),
            )
            .expect("the change is made");
        // The dead process's lease (GALBRIDGE_LEASE_TTL_SECS = 2) must lapse before the next run can start.
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }

    let mut runs = Vec::new();
    for _ in 0..4 {
        // The timer's next run comes later: Exchange's replication has caught up with what was created by then.
        control.advance_clock(Duration::from_secs(25));
        let finished = bed.run(&["sync", "--json"]).await;
        runs.push(format!(
            "exit {}: {}",
            finished.code,
            serde_json::from_str::<Value>(&finished.stdout)
                .ok()
                .and_then(|reports| reports[0]["summary"].as_str().map(str::to_owned))
                .unwrap_or_else(|| finished.stderr.clone())
        ));
        if finished.code == 0 && divergence(&bed, &people).is_empty() {
            break;
        }
    }
    assert_eq!(
        divergence(&bed, &people),
        Vec::<String>::new(),
        "{shape:?}/{not_found_status}: converged within four runs after the kills; runs: {runs:#?}"
    );
    let contacts = bed.anchored("northern");
    for (round, person) in people.iter().take(10).enumerate() {
        let mail = person["mail"].as_str().expect("in scope: has mail");
        let contact = by_address(&contacts, mail).expect("the person's contact");
        assert_eq!(
            contact["Title"],
            format!("Round {round}"),
            "the change made between kills reached {}",
            person["mail"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_converge_when_errors_name_the_exception_in_the_message() {
    killed_runs_converge(ExchangeErrorShape::Message, 400, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_converge_when_errors_hide_the_exception_in_details() {
    killed_runs_converge(ExchangeErrorShape::Details, 404, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_lease_is_taken_over_at_once_with_the_file_store() {
    let Some(mut bed) = Bed::start(&[("acme", 40), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    bed.use_file_state();
    let control = bed.sim.control();
    control.update_knobs(|knobs| {
        knobs.latency.exchange = m365_sim::Latency {
            fixed_ms: 5,
            jitter_ms: 0,
        }
    });
    let mut child = bed
        .command(&["sync", "--json"])
        .spawn()
        .expect("galbridge starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.count(Service::Exchange, "New-MailContact", None) < 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its kill point"
        );
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    // The default lease lifetime (120 s) has not passed: only the dead holder's absence lets this run start.
    let started = Instant::now();
    let next = bed.sync_expecting(0, &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the next run did not wait for the dead run's lease"
    );
    assert_eq!(next["outcome"], "succeeded", "{next:#}");
    assert_eq!(
        divergence(&bed, &bed.in_scope("acme")),
        Vec::<String>::new()
    );
}
