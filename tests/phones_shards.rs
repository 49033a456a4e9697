//! GAL to phones in shards (issue 17) against m365-sim: a run over the Northern mailboxes with
//! `mailboxes_per_shard = 10` sends one queue message per shard and writes no mailbox itself; two consumers (two
//! engine services over one state store, as two Functions instances) take the messages in any order, one twice at
//! once, and every mailbox ends with every person exactly once; a shard dropped mid-way is delivered again and
//! converges without duplicates; a shard that keeps failing ends poisoned, shows in `status`, and the next run
//! reconciles its mailboxes; and while a queued shard set is in flight the next run writes nothing. (The CLI's
//! in-process shards: `phones_shards_cli.rs`.)

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;
mod phones_support;

use std::sync::Arc;
use std::time::Duration;

use galbridge::engine::service::EngineService;
use galbridge::queue::{MemoryQueue, PoisonMessage, ShardQueue};
use galbridge::report::{RunOptions, RunOutcome, ShardReport};
use galbridge::state::{FileStore, StateStore};
use galbridge::sync_service::SyncService;
use m365_sim::{Fault, FaultRule, Service};
use phones_support::{
    assert_every_mailbox_complete, folder_by_anchor, selected, selected_count, writable_mailboxes,
};
use serde_json::Value;

const FOLDER: &str = "Acme Directory";
const LINK: &str = "acme-phones";
/// The host's tries per message in these tests (host.json `maxDequeueCount`).
const TRIES: u32 = 3;

fn link_toml() -> String {
    format!(
        "[[links]]\nname = \"{LINK}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{FOLDER}\"\n\
         mailboxes_per_shard = 10\n[links.safety]\nmax_deletes = 1000\nmax_delete_percent = 100\n"
    )
}

/// The sharded world: the simulator, a queue, and two consumers (engine services) over one state store; the first
/// also dispatches.
struct Sharded {
    world: engine_support::World,
    queue: Arc<MemoryQueue>,
    dispatcher: EngineService,
    second: EngineService,
}

async fn sharded(people: usize, mailboxes: usize) -> Sharded {
    let world =
        engine_support::world(&[("acme", people), ("northern", mailboxes)], &link_toml()).await;
    let store: Arc<dyn StateStore> =
        Arc::new(FileStore::open(world.state_dir.path()).expect("file store"));
    let queue = Arc::new(MemoryQueue::new("phones-shards"));
    let service = || {
        EngineService::new(&world.config, store.clone(), world.connector.clone())
            .with_shard_queue(queue.clone() as Arc<dyn ShardQueue>, TRIES)
            // A dropped try's shard lease must lapse before the retry.
            .with_lease_ttl(chrono::Duration::seconds(2))
    };
    let (dispatcher, second) = (service(), service());
    Sharded {
        world,
        queue,
        dispatcher,
        second,
    }
}

fn people(world: &engine_support::World) -> Vec<Value> {
    world
        .sim
        .control()
        .users("acme")
        .expect("acme")
        .into_iter()
        .filter(engine_support::in_default_scope)
        .collect()
}

fn managed_contacts(sim: &m365_sim::SimHandle) -> usize {
    let users = sim.control().users("northern").expect("northern");
    writable_mailboxes(&users)
        .iter()
        .map(|mailbox| {
            folder_by_anchor(sim, "northern", mailbox["id"].as_str().expect("id"), FOLDER)
                .into_iter()
                .filter(|(anchor, _)| !anchor.is_empty())
                .map(|(_, copies)| copies.len())
                .sum::<usize>()
        })
        .sum()
}

fn shard_of(text: &str) -> u64 {
    serde_json::from_str::<Value>(text).expect("a JSON message")["shard"]
        .as_u64()
        .expect("a shard index")
}

async fn deliver(service: &EngineService, text: &str, dequeue_count: u32) -> ShardReport {
    service
        .run_shard(text, dequeue_count)
        .await
        .expect("the shard message is understood")
}

fn drain(queue: &MemoryQueue) -> Vec<String> {
    std::iter::from_fn(|| queue.receive()).collect()
}

async fn status_shards(service: &EngineService) -> Value {
    let status = service.status().await.expect("status");
    let link = status
        .links
        .into_iter()
        .find(|link| link.link == LINK)
        .expect("the link in status");
    serde_json::to_value(link.shards.expect("a shard set in status")).expect("json")
}

#[tokio::test]
async fn queued_shards_in_any_order_and_one_twice_land_every_contact_once() {
    let bed = sharded(12, 30).await;
    let selected = selected_count(&bed.world.sim);
    let shards = selected.div_ceil(10);
    assert!(
        shards >= 3,
        "{selected} mailboxes make at least three shards"
    );

    let dispatch = bed
        .dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    assert_eq!(
        dispatch.outcome,
        RunOutcome::Succeeded,
        "{}",
        dispatch.summary
    );
    let messages = drain(&bed.queue);
    assert_eq!(messages.len(), shards, "one message per shard");
    assert!(
        messages.iter().all(|m| m.len() < 200),
        "small messages: {messages:?}"
    );
    assert_eq!(
        managed_contacts(&bed.world.sim),
        0,
        "the dispatching run writes no mailbox"
    );
    let status = status_shards(&bed.dispatcher).await;
    assert_eq!(status["queue"], "phones-shards");
    assert_eq!(
        (status["shards"].as_u64(), status["in_flight"].as_u64()),
        (Some(shards as u64), Some(shards as u64))
    );

    // While they are in flight, the next run writes nothing and sends nothing.
    let waiting = bed
        .dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    assert_eq!(
        waiting.outcome,
        RunOutcome::PartiallyFailed,
        "{}",
        waiting.summary
    );
    assert!(
        waiting
            .failures
            .iter()
            .any(|f| f.kind == "shards_in_flight"),
        "{:?}",
        waiting.failures
    );
    assert!(
        bed.queue.is_empty(),
        "no new shard set while one is in flight"
    );

    // The last shard first, delivered to both consumers at once; then the others, alternating consumers.
    let mut order: Vec<&String> = messages.iter().rev().collect();
    let first = order.remove(0);
    let (one, two) = tokio::join!(
        deliver(&bed.dispatcher, first, 1),
        deliver(&bed.second, first, 1)
    );
    let ends = [one.end.as_str(), two.end.as_str()];
    assert!(
        ends.contains(&"done"),
        "one delivery completes the shard: {ends:?}"
    );
    assert!(
        ends.iter().all(|end| *end == "done" || *end == "busy"),
        "the other finds it done or busy: {ends:?}"
    );
    if ends.contains(&"busy") {
        // The host would deliver the busy one again: now the shard is done.
        assert_eq!(deliver(&bed.second, first, 2).await.end, "done");
    }
    for (n, text) in order.into_iter().enumerate() {
        let consumer = if n % 2 == 0 {
            &bed.second
        } else {
            &bed.dispatcher
        };
        let report = deliver(consumer, text, 1).await;
        assert_eq!(
            report.end,
            "done",
            "shard {}: {}",
            shard_of(text),
            report.summary
        );
    }
    assert_every_mailbox_complete(&bed.world.sim, FOLDER, &people(&bed.world));
    let status = status_shards(&bed.second).await;
    assert_eq!(status["done"].as_u64(), Some(shards as u64), "{status}");
    assert_eq!(status["in_flight"].as_u64(), Some(0));
    assert_eq!(status["mailboxes_done"].as_u64(), Some(selected as u64));

    // A redelivered message of a finished shard writes nothing more.
    let again = deliver(&bed.second, &messages[0], 1).await;
    assert_eq!(again.end, "done");
    assert_eq!(again.applied.creates, 0);

    // The next run with nothing changed sends nothing (no mailbox has work).
    let quiet = bed
        .dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    assert_eq!(quiet.outcome, RunOutcome::Succeeded, "{}", quiet.summary);
    assert!(bed.queue.is_empty());

    // One person changes: a new shard set, every mailbox patched once.
    let person = people(&bed.world)[0].clone();
    bed.world
        .sim
        .control()
        .update_user(
            "acme",
            person["id"].as_str().expect("id"),
            serde_json::json!({"jobTitle": "Night Shift"}),
        )
        .expect("update");
    let changed = bed
        .dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    assert_eq!(
        changed.outcome,
        RunOutcome::Succeeded,
        "{}",
        changed.summary
    );
    let messages = drain(&bed.queue);
    assert_eq!(messages.len(), shards);
    let mut updates = 0;
    for text in &messages {
        let report = deliver(&bed.second, text, 1).await;
        assert_eq!(report.end, "done", "{}", report.summary);
        updates += report.applied.updates;
    }
    let writable =
        writable_mailboxes(&bed.world.sim.control().users("northern").expect("northern")).len();
    assert_eq!(updates as usize, writable, "one patch per writable mailbox");
    assert_every_mailbox_complete(&bed.world.sim, FOLDER, &people(&bed.world));
}

#[tokio::test]
async fn a_shard_dropped_midway_is_delivered_again_and_converges_without_duplicates() {
    let bed = sharded(10, 30).await;
    bed.dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    for text in drain(&bed.queue) {
        assert_eq!(deliver(&bed.second, &text, 1).await.end, "done");
    }
    // Forty people join: an incremental run creates them in every mailbox, from the records (no folder listing).
    let control = bed.world.sim.control();
    for n in 0..40 {
        control
            .add_user(
                "acme",
                serde_json::json!({"displayName": format!("New Hire {n:02}"), "jobTitle": "Apprentice"}),
            )
            .expect("a new user");
    }
    let before = managed_contacts(&bed.world.sim);
    let run = bed
        .dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{}", run.summary);
    let messages = drain(&bed.queue);
    let text = messages.first().expect("a shard").clone();

    // Each $batch takes a while: the try is dropped (as a killed instance) with some batches landed and their
    // records not yet saved (records are saved 100 at a time).
    control.add_fault(
        FaultRule::rated(Fault::Slow { delay_ms: 300 }, 1.0)
            .on_service(Service::Graph)
            .on_target("$batch"),
    );
    // The try is dropped as soon as its first contacts land.
    let landed = async {
        while managed_contacts(&bed.world.sim) <= before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        report = deliver(&bed.dispatcher, &text, 1) => {
            panic!("the try finished before it could be dropped: {}", report.summary)
        }
        landed = tokio::time::timeout(Duration::from_secs(30), landed) => {
            landed.expect("contacts land within 30 s");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    control.set_faults(Vec::new());

    // The host delivers it again once the message is visible; the dropped try's lease lapses first.
    let mut report = deliver(&bed.second, &text, 2).await;
    for count in 3..=6 {
        if report.end != "busy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        report = deliver(&bed.second, &text, count).await;
    }
    assert_eq!(report.end, "done", "{}", report.summary);
    for text in &messages[1..] {
        let report = deliver(&bed.second, text, 1).await;
        assert_eq!(report.end, "done", "{}", report.summary);
    }
    assert_every_mailbox_complete(&bed.world.sim, FOLDER, &people(&bed.world));
}

#[tokio::test]
async fn a_shard_that_keeps_failing_is_poisoned_shown_in_status_and_reconciled_by_the_next_run() {
    let bed = sharded(12, 30).await;
    let control = bed.world.sim.control();
    let users = control.users("northern").expect("northern");
    let writable = writable_mailboxes(&users);
    bed.dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    let messages = drain(&bed.queue);
    // Shards hold the selected mailboxes in id order, ten each. Deny the app one writable mailbox.
    let denied = writable[0]["id"].as_str().expect("id");
    let allowed: Vec<&str> = writable[1..]
        .iter()
        .map(|u| u["id"].as_str().expect("id"))
        .collect();
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
        .position(|id| *id == denied.to_ascii_lowercase())
        .expect("the denied mailbox is selected") as u64
        / 10;
    let poisoned_text = messages
        .iter()
        .find(|text| shard_of(text) == denied_shard)
        .expect("the denied mailbox's shard")
        .clone();
    for count in 1..=TRIES {
        let report = deliver(&bed.second, &poisoned_text, count).await;
        let expected = if count == TRIES {
            "failed"
        } else {
            "incomplete"
        };
        assert_eq!(report.end, expected, "try {count}: {}", report.summary);
        assert!(report.mailboxes_done < report.mailboxes);
    }
    // The host moves it to the poison queue after its last try.
    bed.queue.poison(PoisonMessage {
        id: "poison-1".into(),
        text: poisoned_text.clone(),
        inserted: Some("2026-12-06T17:00:00Z".into()),
    });
    for text in messages.iter().filter(|text| **text != poisoned_text) {
        assert_eq!(deliver(&bed.dispatcher, text, 1).await.end, "done");
    }

    let status = status_shards(&bed.dispatcher).await;
    assert_eq!(status["failed"].as_u64(), Some(1), "{status}");
    assert_eq!(status["in_flight"].as_u64(), Some(0), "{status}");
    assert_eq!(
        status["poisoned"][0]["shard"].as_u64(),
        Some(denied_shard),
        "{status}"
    );
    assert_eq!(status["poisoned"][0]["message_id"], "poison-1");
    assert!(
        status["poisoned"][0]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{status}"
    );
    let denied_folder = folder_by_anchor(&bed.world.sim, "northern", denied, FOLDER);
    assert!(denied_folder.is_empty(), "the denied mailbox got nothing");

    // The mailbox is reachable again: the next run (nothing changed in the source) sends one shard, the
    // unfinished mailbox, which lists its folder.
    control
        .set_app_mailbox_scope("northern", None)
        .expect("scope");
    let next = bed
        .dispatcher
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    assert_eq!(next.outcome, RunOutcome::Succeeded, "{}", next.summary);
    assert!(
        next.failures
            .iter()
            .any(|f| f.kind == "shard_unfinished" && f.reason.contains("ErrorAccessDenied")),
        "the run reports what the previous shards left: {:?}",
        next.failures
    );
    let messages = drain(&bed.queue);
    assert_eq!(messages.len(), 1, "only the unfinished mailbox has work");
    let report = deliver(&bed.second, &messages[0], 1).await;
    assert_eq!(
        (report.end.as_str(), report.mailboxes),
        ("done", 1),
        "{}",
        report.summary
    );
    assert_every_mailbox_complete(&bed.world.sim, FOLDER, &people(&bed.world));
    let status = status_shards(&bed.dispatcher).await;
    assert_eq!(
        status["poisoned"].as_array().map(Vec::len),
        Some(0),
        "an older run's poison is not this run's"
    );
}

/// A first try of an incremental shard reads only the changed people's snapshot entries (its memory follows the
/// changes, not the directory), and still lands the change in every mailbox of the shard; a retry reads everyone,
/// since it lists whole folders.
#[tokio::test]
async fn an_incremental_shard_reads_only_the_changed_peoples_snapshot_entries() {
    let world = engine_support::world(&[("acme", 40), ("northern", 30)], &link_toml()).await;
    let file: Arc<dyn StateStore> =
        Arc::new(FileStore::open(world.state_dir.path()).expect("file store"));
    let store = Arc::new(phones_support::counting_store::CountingStore::new(file));
    let queue = Arc::new(MemoryQueue::new("phones-shards"));
    let service = EngineService::new(
        &world.config,
        store.clone() as Arc<dyn StateStore>,
        world.connector.clone(),
    )
    .with_shard_queue(queue.clone() as Arc<dyn ShardQueue>, TRIES)
    .with_lease_ttl(chrono::Duration::seconds(2));
    service
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the first run starts");
    for text in drain(&queue) {
        assert_eq!(deliver(&service, &text, 1).await.end, "done");
    }
    let everyone = people(&world);
    assert!(everyone.len() > 20, "enough people to tell a partial read");

    // Two people change: the next run is incremental.
    let control = world.sim.control();
    for person in everyone.iter().take(2) {
        control
            .update_user(
                "acme",
                person["id"].as_str().expect("id"),
                serde_json::json!({"jobTitle": "Site Manager"}),
            )
            .expect("an update");
    }
    let run = service
        .run_link(LINK, RunOptions::default())
        .await
        .expect("the run starts");
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{}", run.summary);
    let messages = drain(&queue);
    assert!(messages.len() >= 2, "the change reaches several shards");

    let (first, rest) = messages.split_first().expect("a shard");
    store.reset();
    assert_eq!(deliver(&service, first, 1).await.end, "done");
    assert_eq!(
        store.snapshot_records_read(),
        2,
        "a first incremental try reads the two changed people's snapshot entries only"
    );
    // The same message again (a duplicate delivery after the first completed) finds the shard done.
    assert_eq!(deliver(&service, first, 2).await.end, "done");
    for text in rest {
        assert_eq!(deliver(&service, text, 1).await.end, "done");
    }
    assert_every_mailbox_complete(&world.sim, FOLDER, &people(&world));
    // The change landed: every copy of the two people carries the new job title.
    let users = control.users("northern").expect("northern");
    let acme_id = world.sim.tenant("acme").expect("acme").tenant_id;
    for mailbox in writable_mailboxes(&users) {
        let folder = folder_by_anchor(
            &world.sim,
            "northern",
            mailbox["id"].as_str().expect("id"),
            FOLDER,
        );
        for person in everyone.iter().take(2) {
            let anchor = phones_support::anchor_of(&acme_id, person);
            let copies = folder.get(&anchor).expect("the changed person's contact");
            assert_eq!(copies.len(), 1);
            assert_eq!(
                copies[0].fields["jobTitle"], "Site Manager",
                "{}",
                copies[0].fields
            );
        }
    }
}
