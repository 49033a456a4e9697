//! The real process killed (SIGKILL: no cleanup, no lease release, whatever request was in the air lands or not)
//! at several points of a sync, with the state in Table Storage on Azurite, then run again: the target converges
//! with no duplicate contact, nobody missing and no unanchored orphan. Each kill is triggered by progress the
//! simulator has seen (requests it handled for this process), never by a sleep, so it lands mid-run every time.

#[path = "support/azurite.rs"]
mod azurite;
#[path = "engine_support/cli.rs"]
mod cli;

use std::time::{Duration, Instant};

use cli::{Bed, by_address};
use m365_sim::Service;
use serde_json::json;

const ONE_WAY: &str = r#"
[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
[links.target]
kind = "mail_contact"
tenant = "northern"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_killed_mid_run_then_rerun_converge_without_duplicates() {
    let Some(bed) = Bed::start(&[("acme", 70), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    // A little Exchange latency keeps the kill close to the request that triggered it.
    control.update_knobs(|knobs| {
        knobs.latency.exchange = m365_sim::Latency {
            fixed_ms: 2,
            jitter_ms: 2,
        }
    });
    let people = bed.in_scope("acme");
    // Kill after this many requests of this kind were handled since the process started: in the source read, right
    // after a New-MailContact (before the anchor is set), and deeper in the apply phase.
    let kill_points = [
        (Service::Graph, "", 1u64),
        (Service::Exchange, "New-MailContact", 3),
        (Service::Exchange, "Set-MailContact", 10),
        (Service::Exchange, "New-MailContact", 1),
        (Service::Exchange, "New-MailContact", 17),
    ];
    for (round, (service, endpoint, after)) in kill_points.into_iter().enumerate() {
        let seen_before = control.count(service, endpoint, None);
        let mut child = bed
            .command(&["sync", "--json"])
            .spawn()
            .expect("galbridge starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("child status") {
                panic!("round {round}: the run ended ({status}) before its kill point");
            }
            if control.count(service, endpoint, None) >= seen_before + after {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: no progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: killed by SIGKILL"
        );
        // A change between kills, to be picked up by whichever run finally succeeds.
        control
            .update_user(
                "acme",
                people[round]["id"].as_str().unwrap(),
                json!({"jobTitle": format!("Round {round}")}),
            )
            .unwrap();
        // The dead process's lease (GALBRIDGE_LEASE_TTL_SECS = 2) must expire before the next run can start.
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }

    // Rerun until a run succeeds (a leftover lease may refuse the first), then a full reconcile finds nothing to do.
    let mut finished = bed.run(&["sync", "--json"]).await;
    for _ in 0..3 {
        if finished.code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        finished = bed.run(&["sync", "--json"]).await;
    }
    assert_eq!(finished.code, 0, "{}\n{}", finished.stdout, finished.stderr);
    let full = bed.sync_expecting(0, &["--full"]).await;
    assert_eq!(
        full["applied"]["creates"], 0,
        "nothing left to repair: {full:#}"
    );
    assert_eq!(
        full["applied"]["deletes"], 0,
        "nothing left to repair: {full:#}"
    );
    assert_eq!(
        full["applied"]["adoptions"], 0,
        "nothing left to repair: {full:#}"
    );

    let contacts = bed.anchored("northern");
    assert_eq!(
        contacts.len(),
        people.len(),
        "one contact per person: no duplicates, nobody missing"
    );
    let all = control.mail_contacts("northern").unwrap();
    assert_eq!(
        all.len(),
        contacts.len(),
        "no unanchored orphan left by a kill between New-MailContact and Set-MailContact"
    );
    for person in &people {
        let mail = person["mail"].as_str().unwrap();
        let matching = contacts
            .iter()
            .filter(|c| by_address(std::slice::from_ref(c), mail).is_some())
            .count();
        assert_eq!(matching, 1, "{mail}: exactly one contact");
    }
    for (round, person) in people.iter().take(kill_points.len()).enumerate() {
        let contact = by_address(&contacts, person["mail"].as_str().unwrap()).unwrap();
        assert_eq!(contact["Title"], format!("Round {round}"));
    }
}
