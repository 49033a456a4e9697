//! The boundary between the front doors (CLI, Functions custom handler) and the sync engine.
//! The handler and the CLI only see [`SyncService`]; tests plug in a fake, production plugs in the engine.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::notify::{NotifiedRuns, NotifyReceipt};
use crate::report::{RunOptions, RunReport, ShardReport, StatusReport};

/// Why a requested run did not happen at all (a run that happened, even badly, is a [`RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no link named {name:?}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownLink {
        name: String,
        suggestion: Option<String>,
    },
    #[error("link {link:?} is already running (lease held by {holder} until {until})")]
    LeaseHeld {
        link: String,
        holder: String,
        until: DateTime<Utc>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the front doors can ask of galbridge.
pub trait SyncService: Send + Sync + 'static {
    /// Runs one link now, whatever its schedule.
    fn run_link(
        &self,
        link: &str,
        options: RunOptions,
    ) -> impl Future<Output = Result<RunReport, ServiceError>> + Send;

    /// Runs every configured link now (`POST /api/sync`, `galbridge sync` without `--link`).
    fn run_all(
        &self,
        options: RunOptions,
    ) -> impl Future<Output = Vec<Result<RunReport, ServiceError>>> + Send;

    /// Runs the links whose interval has elapsed at `now` (the timer trigger).
    fn run_due(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Vec<Result<RunReport, ServiceError>>> + Send;

    /// Each link's last run, next due time, counts, errors and quarantine.
    fn status(&self) -> impl Future<Output = Result<StatusReport, ServiceError>> + Send;

    /// Whether change notifications are configured (`[service] notifications`); the `Notify` function answers
    /// 404 when they are not. Off unless a service says otherwise.
    fn notifications_enabled(&self) -> bool {
        false
    }

    /// A notification POST to `Notify`: verify each `clientState`, mark the links of the changed sources due after
    /// the debounce, record lifecycle actions. Runs nothing itself.
    fn accept_notifications(
        &self,
        body: &str,
    ) -> impl Future<Output = Result<NotifyReceipt, ServiceError>> + Send {
        let _ = body;
        async {
            Err(ServiceError::BadRequest(
                "change notifications are off in this configuration".to_owned(),
            ))
        }
    }

    /// Runs the links that notifications marked due by `now`, after acting on lifecycle notifications; `timer`
    /// (the timer trigger) also creates missing subscriptions and renews those nearing expiry. The serving process
    /// calls it after each debounce with `timer = false`.
    fn run_notified(
        &self,
        now: DateTime<Utc>,
        timer: bool,
    ) -> impl Future<Output = NotifiedRuns> + Send {
        let _ = (now, timer);
        async { NotifiedRuns::default() }
    }

    /// One delivery of a shard message of a `personal_contacts` run (`PhonesShard`, a queue trigger): runs the
    /// shard's remaining mailboxes. `dequeue_count` is the host's count of deliveries (1 the first time). The report's
    /// `end` says whether the message is finished with or must be tried again.
    fn run_shard(
        &self,
        message: &str,
        dequeue_count: u32,
    ) -> impl Future<Output = Result<ShardReport, ServiceError>> + Send {
        let _ = (message, dequeue_count);
        async {
            Err(ServiceError::BadRequest(
                "this service runs no shards".to_owned(),
            ))
        }
    }
}
