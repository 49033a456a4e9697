//! A stand-in for the Functions host's queue trigger (docs/microsoft-facts.md §13), for tests and benchmarks: it
//! polls a queue with galbridge's own client and delivers each message to a running `galbridge serve` as the host
//! does: Get Messages with a processing lease, POST `/{function}` with `{"Data": {binding: text}, "Metadata":
//! {DequeueCount, Id, PopReceipt, InsertionTime, sys}}`, then
//! - a 2xx answer: Delete Message;
//! - a failure (non-2xx, or no answer at all): Update Message making it visible again after `visibilityTimeout`
//!   (the retry delay of host.json), so it comes back with DequeueCount + 1;
//! - a failure on the `maxDequeueCount`-th try, or a message taken with a DequeueCount above it (the instance
//!   handling it crashed): put in `{queue}-poison` and deleted from the queue, without (another) invocation.
//!
//! One [`QueueTrigger`] stands for one instance's host; start one per handler process to have several instances
//! consume the same queue concurrently. Each trigger takes `batch_size` messages at a time and delivers them
//! concurrently.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use galbridge::queue::azure::{AzureQueue, ReceivedMessage};
use serde_json::{Value, json};

/// The host's queue settings (host.json `extensions.queues`) plus the stand-in's own knobs.
#[derive(Debug, Clone)]
pub struct QueueTriggerSettings {
    /// Messages taken per Get Messages and delivered concurrently (`batchSize`).
    pub batch_size: u32,
    /// Tries before a message goes to the poison queue (`maxDequeueCount`).
    pub max_dequeue_count: u32,
    /// How long a failed message stays invisible before its next try (`visibilityTimeout`).
    pub visibility_timeout: Duration,
    /// The wait between polls of an empty queue (the host backs off up to `maxPollingInterval`).
    pub poll_interval: Duration,
    /// How long a taken message stays invisible while the handler works (the host takes it for 10 minutes and
    /// renews; the stand-in does not renew, so keep it above the longest invocation).
    pub processing_lease: Duration,
}

impl Default for QueueTriggerSettings {
    fn default() -> Self {
        Self {
            batch_size: 16,
            max_dequeue_count: 5,
            visibility_timeout: Duration::ZERO,
            poll_interval: Duration::from_millis(200),
            processing_lease: Duration::from_secs(600),
        }
    }
}

/// `hh:mm:ss` (a .NET TimeSpan as host.json writes it).
fn timespan(text: &str) -> Option<Duration> {
    let parts: Vec<u64> = text
        .split(':')
        .map(|part| part.split('.').next().unwrap_or(part).parse().ok())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [hours, minutes, seconds] => {
            Some(Duration::from_secs(hours * 3600 + minutes * 60 + seconds))
        }
        _ => None,
    }
}

impl QueueTriggerSettings {
    /// The settings of the repository's `host.json` (`extensions.queues`), the host's defaults where it is silent.
    pub fn from_host_json() -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("host.json");
        let text = std::fs::read_to_string(&path).expect("host.json is readable");
        let host: Value = serde_json::from_str(&text).expect("host.json is JSON");
        let queues = &host["extensions"]["queues"];
        let mut settings = Self::default();
        if let Some(size) = queues["batchSize"].as_u64() {
            settings.batch_size = u32::try_from(size).expect("a small batch size");
        }
        if let Some(count) = queues["maxDequeueCount"].as_u64() {
            settings.max_dequeue_count = u32::try_from(count).expect("a small count");
        }
        if let Some(timeout) = queues["visibilityTimeout"].as_str().and_then(timespan) {
            settings.visibility_timeout = timeout;
        }
        if let Some(interval) = queues["maxPollingInterval"].as_str().and_then(timespan) {
            settings.poll_interval = interval;
        }
        settings
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the message was deleted.
    Completed,
    /// A failure before the last try: the message will come back.
    Released,
    /// Moved to the poison queue (after the last failed try, or taken with a DequeueCount above the maximum, in
    /// which case the handler was not invoked: `host_status` is 0).
    Poisoned,
}

/// One delivery attempt, as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    /// The message text (decoded).
    pub text: String,
    pub dequeue_count: u32,
    /// The handler process's port (which instance got it).
    pub handler_port: u16,
    /// The handler's HTTP status to the host; 0 = no answer (refused, reset, timed out) or not invoked.
    pub host_status: u16,
    /// The handler's body (the invocation envelope), for diagnostics.
    pub answer: String,
    pub outcome: Outcome,
    /// When the invocation started and ended.
    pub started: Instant,
    pub finished: Instant,
}

/// One instance's queue trigger, polling until stopped (or dropped).
pub struct QueueTrigger {
    stop: Arc<AtomicBool>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl QueueTrigger {
    /// Starts polling `queue` and delivering to `/{function}` of the handler on `handler_port`, with the message in
    /// `Data.{binding}`.
    pub fn start(
        queue: AzureQueue,
        handler_port: u16,
        function: &str,
        binding: &str,
        settings: QueueTriggerSettings,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker {
            queue,
            handler_port,
            function: function.to_owned(),
            binding: binding.to_owned(),
            settings,
            stop: Arc::clone(&stop),
            deliveries: Arc::clone(&deliveries),
            errors: Arc::clone(&errors),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(900))
                .build()
                .expect("an HTTP client for the handler"),
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the queue trigger");
            runtime.block_on(worker.run());
        });
        Self {
            stop,
            deliveries,
            errors,
            thread: Some(thread),
        }
    }

    /// Every delivery so far, in the order they finished.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queue errors the stand-in met (it keeps polling after them).
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `done(deliveries)` holds; false after `timeout`.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.deliveries()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops polling; deliveries in flight finish first.
    pub fn stop(mut self) -> Vec<Delivery> {
        self.halt();
        self.deliveries()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for QueueTrigger {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Worker {
    queue: AzureQueue,
    handler_port: u16,
    function: String,
    binding: String,
    settings: QueueTriggerSettings,
    stop: Arc<AtomicBool>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    errors: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Worker {
    fn note_error(&self, error: impl ToString) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(error.to_string());
    }

    async fn run(self) {
        while !self.stop.load(Ordering::SeqCst) {
            let taken = self
                .queue
                .get(self.settings.batch_size, self.settings.processing_lease)
                .await;
            match taken {
                Ok(messages) if !messages.is_empty() => {
                    futures::future::join_all(messages.into_iter().map(|m| self.handle(m))).await;
                }
                Ok(_) => tokio::time::sleep(self.settings.poll_interval).await,
                Err(error) => {
                    self.note_error(error);
                    tokio::time::sleep(self.settings.poll_interval).await;
                }
            }
        }
    }

    async fn handle(&self, message: ReceivedMessage) {
        let started = Instant::now();
        let record = |host_status: u16, answer: String, outcome: Outcome| Delivery {
            message_id: message.id.clone(),
            text: message.text.clone(),
            dequeue_count: message.dequeue_count,
            handler_port: self.handler_port,
            host_status,
            answer,
            outcome,
            started,
            finished: Instant::now(),
        };
        // Taken more often than allowed: its last try never finished (the instance died). Poison it unseen.
        if message.dequeue_count > self.settings.max_dequeue_count {
            self.poison(&message).await;
            self.push(record(0, String::new(), Outcome::Poisoned));
            return;
        }
        let (host_status, answer) = self.invoke(&message).await;
        let outcome = if (200..300).contains(&host_status) {
            if let Err(error) = self.queue.delete(&message.id, &message.pop_receipt).await {
                self.note_error(error);
            }
            Outcome::Completed
        } else if message.dequeue_count >= self.settings.max_dequeue_count {
            self.poison(&message).await;
            Outcome::Poisoned
        } else {
            if let Err(error) = self
                .queue
                .release(
                    &message.id,
                    &message.pop_receipt,
                    self.settings.visibility_timeout,
                )
                .await
            {
                self.note_error(error);
            }
            Outcome::Released
        };
        self.push(record(host_status, answer, outcome));
    }

    fn push(&self, delivery: Delivery) {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(delivery);
    }

    /// The host copies the message to `{queue}-poison` (creating it if needed), then deletes the original.
    async fn poison(&self, message: &ReceivedMessage) {
        if let Err(error) = self.queue.poison_queue().put(&message.text).await {
            self.note_error(error);
            return;
        }
        if let Err(error) = self.queue.delete(&message.id, &message.pop_receipt).await {
            self.note_error(error);
        }
    }

    /// POSTs the invocation the host would; (0, reason) when the handler does not answer.
    async fn invoke(&self, message: &ReceivedMessage) -> (u16, String) {
        let envelope = json!({
            "Data": { self.binding.as_str(): message.text },
            "Metadata": {
                "DequeueCount": message.dequeue_count,
                "Id": message.id,
                "PopReceipt": message.pop_receipt,
                "InsertionTime": message.inserted,
                "sys": {
                    "MethodName": self.function,
                    "UtcNow": chrono::Utc::now().to_rfc3339(),
                    "RandGuid": uuid::Uuid::new_v4().to_string()
                }
            }
        });
        let url = format!("http://127.0.0.1:{}/{}", self.handler_port, self.function);
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(
                "x-azure-functions-invocationid",
                uuid::Uuid::new_v4().to_string(),
            )
            .body(envelope.to_string())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(error) => (0, error.to_string()),
        }
    }
}
