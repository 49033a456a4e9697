//! The shard queue against a real Azurite queue service (a private instance per test), through the client galbridge
//! ships, and the stand-in for the Functions host's queue trigger delivering to real `galbridge serve` processes.
//!
//! Needs Azurite (`bash .ci/azurite.sh`); `GALBRIDGE_SKIP_AZURITE=1` skips.

#[path = "support/azurite.rs"]
mod azurite;
mod handler_support;

use std::time::Duration;

use base64::Engine as _;
use galbridge::queue::ShardQueue;
use galbridge::queue::azure::{AzureQueue, AzureQueueConfig, MAX_MESSAGE_BYTES, MessageEncoding};
use galbridge::queue::{QueueError, from_config};
use galbridge::state::table::{AccountKey, ConnectionString, RetryPolicy, TableAuth};
use handler_support::queue_host::{Outcome, QueueTrigger, QueueTriggerSettings};

fn start_queue_service() -> Option<azurite::Azurite> {
    if azurite::skipped() {
        eprintln!("GALBRIDGE_SKIP_AZURITE=1: skipping a Queue Storage test");
        return None;
    }
    Some(azurite::Azurite::start_queue().unwrap_or_else(|e| panic!("{e}")))
}

/// The process's HTTP client as galbridge builds it (rustls with ring, the platform's roots).
fn shipped_http_client() -> reqwest::Client {
    galbridge::m365::http::build_http_client(&galbridge::m365::http::HttpSettings::default())
        .expect("the HTTP client builds")
}

fn queue_on(service: &azurite::Azurite, name: &str, encoding: MessageEncoding) -> AzureQueue {
    let parsed = ConnectionString::parse(&service.queue_connection_string()).expect("parses");
    AzureQueue::new(
        AzureQueueConfig {
            endpoint: parsed.queue_endpoint,
            name: name.to_owned(),
            auth: parsed.auth,
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(1),
            },
            encoding,
        },
        shipped_http_client(),
    )
    .expect("a valid queue")
}

#[tokio::test]
async fn a_message_goes_round_trip_base64_on_the_wire_and_is_gone_once_deleted() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let queue = queue_on(&service, "shards", MessageEncoding::Base64);
    let text = r#"{"run":"r-1","mailboxes":["anna@acme.test","björn@acme.test"],"note":"<&>"}"#;

    queue
        .send(text)
        .await
        .expect("sent (the queue is created on the way)");

    // On the wire the text is base64, as the Functions queue trigger decodes it by default.
    let raw = queue_on(&service, "shards", MessageEncoding::None);
    let peeked = raw.peek(32).await.expect("peek");
    assert_eq!(peeked.len(), 1);
    assert_eq!(
        peeked[0].text,
        base64::engine::general_purpose::STANDARD.encode(text)
    );

    let taken = queue.get(32, Duration::from_secs(30)).await.expect("get");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].text, text);
    assert_eq!(taken[0].dequeue_count, 1);
    assert!(
        queue.peek(32).await.expect("peek").is_empty(),
        "a taken message is invisible"
    );

    queue
        .delete(&taken[0].id, &taken[0].pop_receipt)
        .await
        .expect("delete");
    assert!(
        queue
            .get(32, Duration::from_secs(1))
            .await
            .expect("get")
            .is_empty()
    );
    assert!(queue.peek(32).await.expect("peek").is_empty());
    queue
        .create_if_missing()
        .await
        .expect("creating an existing queue is fine");
}

#[tokio::test]
async fn a_message_not_deleted_reappears_after_its_visibility_timeout_with_dequeue_count_two() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let queue = queue_on(&service, "shards", MessageEncoding::Base64);
    queue.send("{\"shard\":1}").await.expect("sent");

    let first = queue.get(1, Duration::from_secs(1)).await.expect("get");
    assert_eq!(first.len(), 1);
    assert!(
        queue
            .get(1, Duration::from_secs(1))
            .await
            .expect("get")
            .is_empty(),
        "invisible while the first taker holds it"
    );
    tokio::time::sleep(Duration::from_millis(1_600)).await;

    let second = queue.get(1, Duration::from_secs(30)).await.expect("get");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].dequeue_count, 2);
    assert_eq!(second[0].text, "{\"shard\":1}");
    // The first taker's receipt is stale: a delete with it does not remove the message taken again.
    let stale = queue.delete(&first[0].id, &first[0].pop_receipt).await;
    assert!(stale.is_err(), "a stale pop receipt is refused: {stale:?}");
    queue
        .delete(&second[0].id, &second[0].pop_receipt)
        .await
        .expect("the current receipt deletes");
}

#[tokio::test]
async fn poisoned_messages_are_peeked_from_the_poison_queue_and_stay_there() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let queue = queue_on(&service, "galbridge-phones-shards", MessageEncoding::Base64);
    assert!(
        queue
            .poisoned(32)
            .await
            .expect("no poison queue yet")
            .is_empty(),
        "a missing poison queue has no messages"
    );

    let poison = queue.poison_queue();
    assert_eq!(poison.queue_name(), "galbridge-phones-shards-poison");
    poison.put("{\"shard\":7}").await.expect("put");
    poison.put("{\"shard\":8}").await.expect("put");
    queue
        .send("{\"shard\":9}")
        .await
        .expect("a healthy message");

    let poisoned = queue.poisoned(32).await.expect("peek");
    let texts: Vec<&str> = poisoned.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["{\"shard\":7}", "{\"shard\":8}"]);
    assert!(
        poisoned
            .iter()
            .all(|m| !m.id.is_empty() && m.inserted.is_some())
    );
    assert_eq!(queue.poisoned(1).await.expect("peek").len(), 1);
    assert_eq!(
        queue.poisoned(32).await.expect("peek again").len(),
        2,
        "peeking removes nothing"
    );
}

#[tokio::test]
async fn a_message_over_64_kib_after_base64_is_refused_before_sending() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let queue = queue_on(&service, "shards", MessageEncoding::Base64);
    // 49,152 bytes encode to exactly 65,536; one more byte is over.
    let fits = "a".repeat(MAX_MESSAGE_BYTES / 4 * 3);
    let too_big = "a".repeat(MAX_MESSAGE_BYTES / 4 * 3 + 1);

    let error = queue.send(&too_big).await.expect_err("refused");
    match &error {
        QueueError::TooLarge {
            queue,
            bytes,
            limit,
        } => {
            assert_eq!(queue, "shards");
            assert!(*bytes > *limit && *limit == 65_536, "{error}");
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(
        queue.peek(32).await.expect("peek").is_empty(),
        "nothing was sent"
    );

    queue
        .send(&fits)
        .await
        .expect("exactly 64 KiB is accepted by the service");
    let taken = queue.get(1, Duration::from_secs(30)).await.expect("get");
    assert_eq!(taken[0].text.len(), fits.len());
}

#[tokio::test]
async fn a_wrong_account_key_is_refused_with_an_error_naming_the_queue_not_the_key() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let wrong_key =
        base64::engine::general_purpose::STANDARD.encode(b"not the devstoreaccount1 key");
    let queue = AzureQueue::new(
        AzureQueueConfig {
            endpoint: url::Url::parse(&service.endpoint()).expect("URL"),
            name: "shards".to_owned(),
            auth: TableAuth::SharedKey {
                account: azurite::ACCOUNT.to_owned(),
                key: AccountKey::from_base64(&wrong_key).expect("base64"),
            },
            retry: RetryPolicy::default(),
            encoding: MessageEncoding::Base64,
        },
        shipped_http_client(),
    )
    .expect("a valid queue");

    let error = queue.send("{}").await.expect_err("refused").to_string();

    assert!(
        error.contains("queue shards") && error.contains("403"),
        "{error}"
    );
    assert!(
        !error.contains(&wrong_key) && !error.contains(azurite::ACCOUNT_KEY),
        "{error}"
    );
    // And the right key works against the same service (the refusal was the key's, not the service's).
    queue_on(&service, "shards", MessageEncoding::Base64)
        .send("{}")
        .await
        .expect("the right key is accepted");
}

#[tokio::test]
async fn the_configuration_opens_the_queue_from_a_connection_string() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let variable = "GALBRIDGE_TEST_QUEUE_CONNECTION";
    let config = galbridge::config::Config::from_toml_str(
        &format!("[service.shard_queue]\nauth = {{ connection_string_env = \"{variable}\" }}\n"),
        std::path::Path::new("galbridge.toml"),
    )
    .expect("loads");
    let connection = service.queue_connection_string();

    let queue = galbridge::queue::azure_from_config_with_env(&config, &|name: &str| {
        (name == variable).then(|| connection.clone())
    })
    .expect("opens")
    .expect("configured");

    assert_eq!(queue.queue_name(), "galbridge-phones-shards");
    queue.send("{\"from\":\"config\"}").await.expect("sent");
    let reader = queue_on(&service, "galbridge-phones-shards", MessageEncoding::Base64);
    assert_eq!(
        reader.peek(1).await.expect("peek")[0].text,
        "{\"from\":\"config\"}"
    );
    // Not configured: no queue, shards run in-process.
    let plain =
        galbridge::config::Config::from_toml_str("", std::path::Path::new("galbridge.toml"))
            .expect("loads");
    assert!(from_config(&plain).expect("nothing to open").is_none());
}

/// A `galbridge serve` with no links, file state in its own folder.
fn spawn_handler() -> handler_support::TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[state]\nkind = \"file\"\npath = {:?}\n",
        dir.path().join("state").display().to_string()
    );
    handler_support::spawn_app(dir, &toml, &[])
}

fn fast_retries() -> QueueTriggerSettings {
    QueueTriggerSettings {
        visibility_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        ..QueueTriggerSettings::from_host_json()
    }
}

#[test]
fn the_trigger_stand_in_reads_host_json() {
    let settings = QueueTriggerSettings::from_host_json();
    assert_eq!(settings.batch_size, 1);
    assert_eq!(settings.max_dequeue_count, 5);
    assert_eq!(settings.visibility_timeout, Duration::from_secs(30));
}

#[test]
fn a_shard_the_handler_keeps_failing_is_tried_max_dequeue_count_times_then_poisoned() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let queue = queue_on(&service, "galbridge-phones-shards", MessageEncoding::Base64);
    let text = "{\"run\":\"r-7\",\"shard\":0}";
    runtime.block_on(queue.send(text)).expect("sent");
    let app = spawn_handler();

    // A message that is no shard of any run (no link, no generation) is refused by PhonesShard (500): a failure.
    let trigger = QueueTrigger::start(
        queue.clone(),
        app.port,
        "PhonesShard",
        "shard",
        fast_retries(),
    );
    let poisoned = trigger.wait_until(Duration::from_secs(60), |deliveries| {
        deliveries.iter().any(|d| d.outcome == Outcome::Poisoned)
    });
    let deliveries = trigger.stop();

    assert!(poisoned, "not poisoned: {deliveries:#?}");
    let counts: Vec<u32> = deliveries.iter().map(|d| d.dequeue_count).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5], "{deliveries:#?}");
    assert!(
        deliveries
            .iter()
            .all(|d| d.host_status == 500 && d.text == text)
    );
    assert!(
        deliveries[..4]
            .iter()
            .all(|d| d.outcome == Outcome::Released)
    );
    // Each retry waited for the visibility timeout.
    for pair in deliveries.windows(2) {
        assert!(
            pair[1].started.duration_since(pair[0].finished) >= Duration::from_millis(900),
            "a retry came back before the visibility timeout"
        );
    }
    let poison = runtime.block_on(queue.poisoned(32)).expect("peek poison");
    assert_eq!(
        poison.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text]
    );
    assert!(
        runtime.block_on(queue.peek(32)).expect("peek").is_empty(),
        "gone from the work queue"
    );
}

#[test]
fn a_message_taken_past_max_dequeue_count_is_poisoned_without_an_invocation() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let queue = queue_on(&service, "shards", MessageEncoding::Base64);
    runtime
        .block_on(queue.send("{\"crashed\":true}"))
        .expect("sent");
    // Two takers that never finish (crashed instances) with max 1 try.
    for _ in 0..2 {
        let taken = runtime
            .block_on(queue.get(1, Duration::from_secs(1)))
            .expect("get");
        assert_eq!(taken.len(), 1);
        std::thread::sleep(Duration::from_millis(1_200));
    }
    let app = spawn_handler();
    let settings = QueueTriggerSettings {
        max_dequeue_count: 1,
        ..fast_retries()
    };

    let trigger = QueueTrigger::start(queue.clone(), app.port, "PhonesShard", "shard", settings);
    let done = trigger.wait_until(Duration::from_secs(30), |d| !d.is_empty());
    let deliveries = trigger.stop();

    assert!(done);
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].dequeue_count, 3);
    assert_eq!(
        (deliveries[0].outcome, deliveries[0].host_status),
        (Outcome::Poisoned, 0)
    );
    assert_eq!(runtime.block_on(queue.poisoned(32)).expect("peek").len(), 1);
}

#[test]
fn two_handler_processes_share_one_queue_each_message_delivered_once_on_success() {
    let Some(service) = start_queue_service() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let queue = queue_on(&service, "shards", MessageEncoding::Base64);
    let texts: Vec<String> = (0..8).map(|i| format!("{{\"shard\":{i}}}")).collect();
    for text in &texts {
        runtime.block_on(queue.send(text)).expect("sent");
    }
    let apps = [spawn_handler(), spawn_handler()];

    // SyncTimer answers 200 to any invocation (a timer tick without a schedule is a tick; no links are due), so it
    // stands in for a handler that completes the message: the success path of the trigger against a real handler.
    let triggers: Vec<QueueTrigger> = apps
        .iter()
        .map(|app| {
            QueueTrigger::start(
                queue.clone(),
                app.port,
                "SyncTimer",
                "shard",
                fast_retries(),
            )
        })
        .collect();
    let all_done = |triggers: &[QueueTrigger]| {
        triggers.iter().map(|t| t.deliveries().len()).sum::<usize>() >= texts.len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !all_done(&triggers) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let deliveries: Vec<_> = triggers.into_iter().flat_map(QueueTrigger::stop).collect();

    let mut delivered: Vec<String> = deliveries.iter().map(|d| d.text.clone()).collect();
    delivered.sort();
    let mut expected = texts.clone();
    expected.sort();
    assert_eq!(
        delivered, expected,
        "each message exactly once: {deliveries:#?}"
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d.outcome == Outcome::Completed && d.host_status == 200)
    );
    assert!(
        runtime.block_on(queue.peek(32)).expect("peek").is_empty(),
        "every message deleted"
    );
    assert!(
        runtime
            .block_on(queue.poisoned(32))
            .expect("peek")
            .is_empty()
    );
}
