//! `galbridge serve` builds the engine on the first invocation that needs it, not at start.
//!
//! Why: the Functions host waits for the readiness probe before sending anything, and `engine::build_service` does
//! I/O — it opens the state store (`FileStore::open` creates folders; `TableStore::open` calls
//! `create_table_if_missing` over the network, after a managed-identity token). Done at start, that slows every cold
//! start and makes an unreachable Table Storage kill the worker before it is ready (the host then restarts it in a
//! loop). Deferred, readiness contacts nothing, and a failed build is retried by the next invocation.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;
use tracing::error;

use crate::config::Config;
use crate::engine::service::EngineService;
use crate::notify::{NotifiedRuns, Notifier, NotifyReceipt};
use crate::report::{RunOptions, RunReport, StatusReport};
use crate::sync_service::{ServiceError, SyncService};

/// The engine of a configuration, built on first use.
pub struct LazyEngine {
    config: Config,
    engine: OnceCell<EngineService>,
    /// When this process next has a notification-marked link to run (its own marks; the timer serves marks
    /// written by other instances). `None`: nothing to wake for.
    wake: Mutex<Option<DateTime<Utc>>>,
}

impl LazyEngine {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            engine: OnceCell::new(),
            wake: Mutex::new(None),
        }
    }

    /// Whether the engine has been built (tests and the startup benchmark check that `serve` stays lazy).
    pub fn is_built(&self) -> bool {
        self.engine.initialized()
    }

    /// The engine, building it now if this is the first use. Concurrent first uses share one build; a failed build
    /// is not remembered, so the next invocation tries again (e.g. after a transient Table Storage outage).
    async fn engine(&self) -> Result<&EngineService, ServiceError> {
        self.engine
            .get_or_try_init(|| async {
                crate::engine::build_serving_service(self.config.clone())
                    .await
                    .inspect_err(|error| error!(error = %error, "Cannot build the sync engine."))
            })
            .await
    }

    /// Wakes the serving process at `at` at the latest.
    fn wake_by(&self, at: DateTime<Utc>) {
        let mut wake = self
            .wake
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *wake = Some(wake.map_or(at, |current| current.min(at)));
    }

    /// Whether the wake time has come (and clears it).
    fn take_wake(&self, now: DateTime<Utc>) -> bool {
        let mut wake = self
            .wake
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match *wake {
            Some(at) if at <= now => {
                *wake = None;
                true
            }
            _ => false,
        }
    }

    /// Refuses an unknown link from the configuration alone, without building anything.
    fn known_link(&self, link: &str) -> Result<(), ServiceError> {
        if self.config.link(link).is_some() {
            return Ok(());
        }
        Err(ServiceError::UnknownLink {
            name: link.to_owned(),
            suggestion: self.config.suggest_link(link).map(str::to_owned),
        })
    }
}

impl SyncService for LazyEngine {
    async fn run_link(&self, link: &str, options: RunOptions) -> Result<RunReport, ServiceError> {
        self.known_link(link)?;
        self.engine().await?.run_link(link, options).await
    }

    async fn run_all(&self, options: RunOptions) -> Vec<Result<RunReport, ServiceError>> {
        match self.engine().await {
            Ok(engine) => engine.run_all(options).await,
            Err(error) => vec![Err(error)],
        }
    }

    async fn run_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<Result<RunReport, ServiceError>> {
        match self.engine().await {
            Ok(engine) => engine.run_due(now).await,
            Err(error) => vec![Err(error)],
        }
    }

    async fn status(&self) -> Result<StatusReport, ServiceError> {
        self.engine().await?.status().await
    }

    async fn run_shard(
        &self,
        message: &str,
        dequeue_count: u32,
    ) -> Result<crate::report::ShardReport, ServiceError> {
        self.engine().await?.run_shard(message, dequeue_count).await
    }

    fn notifications_enabled(&self) -> bool {
        self.config.service().notifications.is_some()
    }

    async fn accept_notifications(&self, body: &str) -> Result<NotifyReceipt, ServiceError> {
        let engine = self.engine().await?;
        let Some(notifier) = Notifier::from_config(&self.config, engine.store().clone()) else {
            return Err(ServiceError::BadRequest(
                "change notifications are off in this configuration".to_owned(),
            ));
        };
        let receipt = notifier.accept(body, Utc::now()).await?;
        if let Some(at) = receipt.wake_at {
            self.wake_by(at);
        }
        Ok(receipt)
    }

    async fn run_notified(&self, now: DateTime<Utc>, timer: bool) -> NotifiedRuns {
        if !self.notifications_enabled() {
            return NotifiedRuns::default();
        }
        // The serving process's own pass: nothing to do before a notification built the engine and its debounce
        // passed (so `serve` stays lazy, and an idle process touches no state).
        if !timer && (!self.is_built() || !self.take_wake(now)) {
            return NotifiedRuns::default();
        }
        let engine = match self.engine().await {
            Ok(engine) => engine,
            Err(error) => {
                return NotifiedRuns {
                    reports: vec![Err(error)],
                    ..NotifiedRuns::default()
                };
            }
        };
        let Some(notifier) = Notifier::from_config(&self.config, engine.store().clone()) else {
            return NotifiedRuns::default();
        };
        let runs = notifier.run_due(engine, now, timer).await;
        if let Some(at) = runs.next_wake {
            self.wake_by(at);
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(state: &Path) -> Config {
        let toml = format!(
            "[state]\nkind = \"file\"\npath = {:?}\n\
             [tenants.acme]\ntenant_id = \"acme.onmicrosoft.com\"\nclient_id = \"11111111-1111-4111-8111-111111111111\"\n\
             credential = {{ env = \"GALBRIDGE_LAZY_TEST_SECRET\" }}\n\
             endpoints = {{ login = \"https://127.0.0.1:9/\", graph = \"https://127.0.0.1:9/\", exchange = \"https://127.0.0.1:9/\" }}\n\
             [tenants.northern]\ntenant_id = \"northern.onmicrosoft.com\"\nclient_id = \"22222222-2222-4222-8222-222222222222\"\n\
             credential = {{ env = \"GALBRIDGE_LAZY_TEST_SECRET\" }}\n\
             endpoints = {{ login = \"https://127.0.0.1:9/\", graph = \"https://127.0.0.1:9/\", exchange = \"https://127.0.0.1:9/\" }}\n\
             [[links]]\nname = \"acme-to-northern\"\nsource = {{ tenant = \"acme\" }}\n\
             target = {{ kind = \"mail_contact\", tenant = \"northern\" }}\n",
            state.display().to_string()
        );
        Config::from_toml_str(&toml, Path::new("galbridge.toml")).expect("a valid configuration")
    }

    #[tokio::test]
    async fn nothing_is_built_until_an_invocation_needs_the_engine() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = dir.path().join("state");
        let lazy = LazyEngine::new(config(&state));

        let unknown = lazy
            .run_link("acme-to-northen", RunOptions::default())
            .await;

        assert!(
            matches!(&unknown, Err(ServiceError::UnknownLink { suggestion: Some(s), .. }) if s == "acme-to-northern"),
            "{unknown:?}"
        );
        assert!(
            !lazy.is_built(),
            "an unknown link is refused from the configuration"
        );
        assert!(!state.exists(), "no state I/O yet");

        let status = lazy
            .status()
            .await
            .expect("status reads the new file store");

        assert!(lazy.is_built());
        assert!(state.exists(), "the file store was opened on first use");
        assert_eq!(status.links.len(), 1);
        assert_eq!(status.links[0].last_run, None);
    }
}
