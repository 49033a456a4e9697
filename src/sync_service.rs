//! The boundary between the front doors (CLI, Functions custom handler) and the sync engine.
//! The handler and the CLI only see [`SyncService`]; tests plug in a fake, production plugs in the engine.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::report::{RunOptions, RunReport, StatusReport};

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
}
