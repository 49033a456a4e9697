//! GAL to phones in shards through the platform's own queue (issue 17): two real `galbridge serve` processes with
//! their state in Azurite's Table service and the shard queue in Azurite's Queue service, the stand-in for the
//! Functions host's queue trigger (`handler_support/queue_host.rs`) delivering each message to `PhonesShard` as the
//! host does. A run over the Northern mailboxes (`mailboxes_per_shard = 10`) is split into queue messages; what the
//! mailboxes hold is read from m365-sim:
//! - both processes consuming: every mailbox complete, no duplicate, every shard done in `status`;
//! - the process running a shard SIGKILLed mid-way: the message comes back, the other process finishes it, and no
//!   mailbox holds a duplicate;
//! - a shard that keeps failing (a mailbox the app may not open): tried `maxDequeueCount` times, poisoned, shown in
//!   `status`; once the mailbox opens again the next run sends that mailbox alone and it converges.
//!
//! Needs Azurite (`bash .ci/azurite.sh`); `GALBRIDGE_SKIP_AZURITE=1` skips.

#[path = "support/azurite.rs"]
mod azurite;
mod handler_support;
mod phones_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use galbridge::queue::azure::{AzureQueue, AzureQueueConfig, MessageEncoding};
use galbridge::state::table::{ConnectionString, RetryPolicy};
use handler_support::queue_host::{Delivery, Outcome, QueueTrigger, QueueTriggerSettings};
use handler_support::{Sim, TestApp, invoke, res, spawn_app, status_payload, sync_payload};
use m365_sim::{Fault, FaultRule, Service};
use phones_support::{
    assert_every_mailbox_complete, folder_by_anchor, selected, selected_count, writable_mailboxes,
};
use serde_json::{Value, json};

const LINK: &str = "acme-phones";
const FOLDER: &str = "Acme Directory";
const TABLE_ENV: &str = "GALBRIDGE_TEST_TABLE_CONNECTION";
const QUEUE_ENV: &str = "GALBRIDGE_TEST_QUEUE_CONNECTION";
const QUEUE_NAME: &str = "galbridge-phones-shards";

/// The simulator, Azurite (tables shared by the test binary, a queue service of this test's own), the
/// configuration both handler processes run, and the queue as the host's trigger reads it.
struct Stand {
    sim: Sim,
    _queue_service: azurite::Azurite,
    queue: AzureQueue,
    toml: String,
    env: Vec<(String, String)>,
}

fn stand(acme: usize, northern: usize) -> Option<Stand> {
    let tables = azurite::shared()?;
    let queue_service = azurite::Azurite::start_queue().unwrap_or_else(|e| panic!("{e}"));
    let sim = Sim::start_sized(acme, northern, m365_sim::Knobs::default());
    let links = format!(
        "[[links]]\nname = \"{LINK}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{FOLDER}\"\n\
         mailboxes_per_shard = 10\n"
    );
    let placeholder = std::path::Path::new("/nonexistent-state");
    let (toml, mut env) = sim.config(placeholder, &links);
    let file_state = format!(
        "[state]\nkind = \"file\"\npath = {:?}\n",
        placeholder.display().to_string()
    );
    assert!(toml.contains(&file_state), "the support's state section");
    let table = format!("gb{}", uuid::Uuid::new_v4().simple())[..24].to_owned();
    let toml = toml.replace(
        &file_state,
        &format!(
            "[state]\nkind = \"table\"\ntable = \"{table}\"\nauth = {{ connection_string_env = \"{TABLE_ENV}\" }}\n\
             [service.shard_queue]\nname = \"{QUEUE_NAME}\"\nauth = {{ connection_string_env = \"{QUEUE_ENV}\" }}\n"
        ),
    );
    env.push((TABLE_ENV.to_owned(), tables.connection_string()));
    env.push((
        QUEUE_ENV.to_owned(),
        queue_service.queue_connection_string(),
    ));
    // A killed process's shard lease must lapse soon for the retry.
    env.push(("GALBRIDGE_LEASE_TTL_SECS".to_owned(), "2".to_owned()));
    let parsed = ConnectionString::parse(&queue_service.queue_connection_string()).expect("parses");
    let http =
        galbridge::m365::http::build_http_client(&galbridge::m365::http::HttpSettings::default())
            .expect("the HTTP client builds");
    let queue = AzureQueue::new(
        AzureQueueConfig {
            endpoint: parsed.queue_endpoint,
            name: QUEUE_NAME.to_owned(),
            auth: parsed.auth,
            retry: RetryPolicy::default(),
            encoding: MessageEncoding::Base64,
        },
        http,
    )
    .expect("a valid queue");
    Some(Stand {
        sim,
        _queue_service: queue_service,
        queue,
        toml,
        env,
    })
}

impl Stand {
    fn spawn(&self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        spawn_app(dir, &self.toml, &self.env)
    }

    /// One run of the link through `SyncHttp` on `app`; its report.
    fn run(&self, app: &TestApp) -> Value {
        let (status, envelope) = invoke(app.port, "SyncHttp", &sync_payload(LINK, json!({})));
        assert_eq!(status, 200, "{envelope}");
        let (code, report) = res(&envelope);
        assert_eq!(code, 200, "{report:#}");
        report
    }

    /// The link's `shards` in `Status` on `app`.
    fn shards(&self, app: &TestApp) -> Value {
        let (_, envelope) = invoke(app.port, "Status", &status_payload());
        let (code, status) = res(&envelope);
        assert_eq!(code, 200, "{status}");
        status["links"][0]["shards"].clone()
    }

    /// The link's `shards` in the CLI's `galbridge status --json` over the same configuration and settings.
    fn cli_shards(&self) -> Value {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("galbridge.toml");
        std::fs::write(&config, &self.toml).expect("config written");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_galbridge"))
            .args(["status", "--json", "--config"])
            .arg(&config)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
            .env("GALBRIDGE_LOG", "off")
            .output()
            .expect("galbridge status runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let status: Value = serde_json::from_slice(&output.stdout).expect("status JSON");
        status["links"][0]["shards"].clone()
    }

    fn trigger(&self, app: &TestApp, settings: QueueTriggerSettings) -> QueueTrigger {
        QueueTrigger::start(
            self.queue.clone(),
            app.port,
            "PhonesShard",
            "shard",
            settings,
        )
    }

    fn people(&self) -> Vec<Value> {
        self.sim.users_in_scope("acme")
    }

    fn shard_count(&self) -> usize {
        selected_count(&self.sim.handle).div_ceil(10)
    }

    fn managed_contacts(&self) -> usize {
        writable_mailboxes(&self.sim.users("northern"))
            .iter()
            .map(|mailbox| {
                folder_by_anchor(
                    &self.sim.handle,
                    "northern",
                    mailbox["id"].as_str().expect("id"),
                    FOLDER,
                )
                .into_iter()
                .filter(|(anchor, _)| !anchor.is_empty())
                .map(|(_, copies)| copies.len())
                .sum::<usize>()
            })
            .sum()
    }
}

/// The host's settings from host.json, with retries a second apart (host.json waits 30 s).
fn fast_retries() -> QueueTriggerSettings {
    QueueTriggerSettings {
        visibility_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        ..QueueTriggerSettings::from_host_json()
    }
}

fn completed(deliveries: &[Delivery]) -> BTreeSet<String> {
    deliveries
        .iter()
        .filter(|d| d.outcome == Outcome::Completed)
        .map(|d| d.text.clone())
        .collect()
}

fn all_deliveries(triggers: &[&QueueTrigger]) -> Vec<Delivery> {
    triggers.iter().flat_map(|t| t.deliveries()).collect()
}

/// Waits until `done` holds over the deliveries of every trigger; false after `timeout`.
fn wait_for(
    triggers: &[&QueueTrigger],
    timeout: Duration,
    done: impl Fn(&[Delivery]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done(&all_deliveries(triggers)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn shard_of(text: &str) -> u64 {
    serde_json::from_str::<Value>(text).expect("JSON")["shard"]
        .as_u64()
        .expect("a shard index")
}

#[test]
fn two_serving_processes_consume_the_shards_every_mailbox_complete_no_duplicates() {
    let Some(stand) = stand(12, 30) else {
        return;
    };
    let (first, second) = (stand.spawn(), stand.spawn());
    let shards = stand.shard_count();
    assert!(shards >= 3, "three shards at least");

    let report = stand.run(&first);
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert_eq!(
        stand.managed_contacts(),
        0,
        "the run itself writes no mailbox"
    );
    assert_eq!(
        stand.shards(&second)["in_flight"].as_u64(),
        Some(shards as u64)
    );

    let triggers = [
        stand.trigger(&first, fast_retries()),
        stand.trigger(&second, fast_retries()),
    ];
    let refs: Vec<&QueueTrigger> = triggers.iter().collect();
    let done = wait_for(&refs, Duration::from_secs(180), |d| {
        completed(d).len() == shards
    });
    let deliveries: Vec<Delivery> = triggers.into_iter().flat_map(QueueTrigger::stop).collect();
    assert!(done, "not every shard completed: {deliveries:#?}");
    assert!(
        deliveries.iter().all(|d| d.outcome == Outcome::Completed),
        "no shard needed a retry: {deliveries:#?}"
    );
    let ports: BTreeSet<u16> = deliveries.iter().map(|d| d.handler_port).collect();
    assert_eq!(ports.len(), 2, "both processes consumed shards");

    assert_every_mailbox_complete(&stand.sim.handle, FOLDER, &stand.people());
    let status = stand.shards(&first);
    assert_eq!(status["done"].as_u64(), Some(shards as u64), "{status:#}");
    assert_eq!(status["queue"], QUEUE_NAME);
    assert_eq!(
        status["mailboxes_done"].as_u64(),
        Some(selected_count(&stand.sim.handle) as u64)
    );
}

#[test]
fn a_serving_process_killed_mid_shard_its_message_comes_back_and_converges() {
    let Some(stand) = stand(10, 30) else {
        return;
    };
    let (mut doomed, survivor) = (stand.spawn(), stand.spawn());
    let shards = stand.shard_count();
    // The first fill, then forty people join: the next run creates them from each mailbox's records (no folder
    // listing), so a try that dies between a create and its record must be retried listing the folder.
    let report = stand.run(&survivor);
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    let fill = stand.trigger(&survivor, fast_retries());
    assert!(fill.wait_until(Duration::from_secs(120), |d| completed(d).len() == shards));
    drop(fill);
    let control = stand.sim.handle.control();
    for n in 0..40 {
        control
            .add_user(
                "acme",
                json!({"displayName": format!("New Hire {n:02}"), "jobTitle": "Apprentice"}),
            )
            .expect("a new user");
    }
    let before = stand.managed_contacts();
    let report = stand.run(&survivor);
    assert_eq!(report["outcome"], "succeeded", "{report:#}");

    // Slow writes, so the doomed process is in the middle of its shard when it dies.
    control.add_fault(
        FaultRule::rated(Fault::Slow { delay_ms: 300 }, 1.0)
            .on_service(Service::Graph)
            .on_target("$batch"),
    );
    let doomed_trigger = stand.trigger(&doomed, fast_retries());
    let deadline = Instant::now() + Duration::from_secs(60);
    while stand.managed_contacts() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        stand.managed_contacts() > before,
        "the doomed process started writing"
    );
    doomed.child.kill().expect("SIGKILL");
    let _ = doomed.child.wait();
    let doomed_deliveries = doomed_trigger.stop();
    assert!(
        doomed_deliveries
            .iter()
            .any(|d| d.host_status == 0 && d.outcome == Outcome::Released),
        "the killed try was released for another: {doomed_deliveries:#?}"
    );
    control.set_faults(Vec::new());

    let trigger = stand.trigger(&survivor, fast_retries());
    let done = wait_for(&[&trigger], Duration::from_secs(180), |d| {
        completed(d).len() + completed(&doomed_deliveries).len() == shards
    });
    let deliveries = trigger.stop();
    assert!(done, "not every shard completed: {deliveries:#?}");
    assert!(
        deliveries
            .iter()
            .any(|d| d.dequeue_count >= 2 && d.outcome == Outcome::Completed),
        "the killed shard was retried and completed: {deliveries:#?}"
    );
    assert!(deliveries.iter().all(|d| d.outcome != Outcome::Poisoned));
    assert_every_mailbox_complete(&stand.sim.handle, FOLDER, &stand.people());
    assert_eq!(
        stand.shards(&survivor)["done"].as_u64(),
        Some(shards as u64)
    );
}

#[test]
fn a_shard_that_keeps_failing_is_poisoned_shown_in_status_and_converges_after() {
    let Some(stand) = stand(12, 30) else {
        return;
    };
    let (first, second) = (stand.spawn(), stand.spawn());
    // The app may not open one mailbox (outside its RBAC scope): its shard fails every try.
    let users = stand.sim.users("northern");
    let writable = writable_mailboxes(&users);
    let denied = writable[0]["id"].as_str().expect("id").to_ascii_lowercase();
    let allowed: Vec<&str> = writable[1..]
        .iter()
        .map(|u| u["id"].as_str().expect("id"))
        .collect();
    let control = stand.sim.handle.control();
    control
        .set_app_mailbox_scope("northern", Some(&allowed))
        .expect("scope");
    let mut selected_ids: Vec<String> = users
        .iter()
        .filter(|u| selected(u))
        .map(|u| u["id"].as_str().expect("id").to_ascii_lowercase())
        .collect();
    selected_ids.sort();
    let denied_shard = selected_ids
        .iter()
        .position(|id| *id == denied)
        .expect("selected") as u64
        / 10;
    let shards = stand.shard_count();

    let report = stand.run(&first);
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    let settings = fast_retries();
    let tries = settings.max_dequeue_count;
    let triggers = [
        stand.trigger(&first, settings.clone()),
        stand.trigger(&second, settings),
    ];
    let refs: Vec<&QueueTrigger> = triggers.iter().collect();
    let settled = wait_for(&refs, Duration::from_secs(180), |d| {
        completed(d).len() == shards - 1 && d.iter().any(|d| d.outcome == Outcome::Poisoned)
    });
    let deliveries: Vec<Delivery> = triggers.into_iter().flat_map(QueueTrigger::stop).collect();
    assert!(settled, "{deliveries:#?}");
    let poisoned: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| shard_of(&d.text) == denied_shard)
        .collect();
    let mut counts: Vec<u32> = poisoned.iter().map(|d| d.dequeue_count).collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=tries).collect::<Vec<_>>(),
        "tried maxDequeueCount times: {poisoned:#?}"
    );
    assert_eq!(
        poisoned
            .iter()
            .filter(|d| d.outcome == Outcome::Poisoned)
            .count(),
        1,
        "poisoned after the last try"
    );
    assert!(poisoned.iter().all(|d| d.host_status == 500));

    let status = stand.shards(&second);
    assert_eq!(status["failed"].as_u64(), Some(1), "{status:#}");
    assert_eq!(status["in_flight"].as_u64(), Some(0), "{status:#}");
    let entry = &status["poisoned"][0];
    assert_eq!(entry["shard"].as_u64(), Some(denied_shard), "{status:#}");
    assert!(
        entry["message_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("ErrorAccessDenied")),
        "{status:#}"
    );
    // The operator's `galbridge status` shows the poisoned shard too.
    let cli = stand.cli_shards();
    assert_eq!(
        cli["poisoned"][0]["shard"].as_u64(),
        Some(denied_shard),
        "{cli:#}"
    );
    assert!(
        folder_by_anchor(&stand.sim.handle, "northern", &denied, FOLDER).is_empty(),
        "the denied mailbox got nothing"
    );

    // The mailbox opens again: the next run sends that one mailbox, which lists its folder and converges.
    control
        .set_app_mailbox_scope("northern", None)
        .expect("scope");
    let report = stand.run(&second);
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    let trigger = stand.trigger(&first, fast_retries());
    let done = trigger.wait_until(Duration::from_secs(120), |d| !completed(d).is_empty());
    let deliveries = trigger.stop();
    assert!(done, "{deliveries:#?}");
    assert_eq!(deliveries.len(), 1, "one shard: {deliveries:#?}");
    assert_every_mailbox_complete(&stand.sim.handle, FOLDER, &stand.people());
    let status = stand.shards(&first);
    assert_eq!(status["shards"].as_u64(), Some(1), "{status:#}");
    assert_eq!(status["mailboxes"].as_u64(), Some(1), "{status:#}");
    assert_eq!(status["done"].as_u64(), Some(1), "{status:#}");
    assert_eq!(
        status["poisoned"].as_array().map(Vec::len),
        Some(0),
        "{status:#}"
    );
}
