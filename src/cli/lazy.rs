//! `galbridge serve` builds the engine on the first invocation that needs it, not at start.
//!
//! Why: the Functions host waits for the readiness probe before sending anything, and `engine::build_service` does
//! I/O — it opens the state store (`FileStore::open` creates folders; `TableStore::open` calls
//! `create_table_if_missing` over the network, after a managed-identity token). Done at start, that slows every cold
//! start and makes an unreachable Table Storage kill the worker before it is ready (the host then restarts it in a
//! loop). Deferred, readiness contacts nothing, and a failed build is retried by the next invocation.

use tokio::sync::OnceCell;
use tracing::error;

use crate::config::Config;
use crate::engine::service::EngineService;
use crate::report::{RunOptions, RunReport, StatusReport};
use crate::sync_service::{ServiceError, SyncService};

/// The engine of a configuration, built on first use.
pub struct LazyEngine {
    config: Config,
    engine: OnceCell<EngineService>,
}

impl LazyEngine {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            engine: OnceCell::new(),
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
                crate::engine::build_service(self.config.clone())
                    .await
                    .inspect_err(|error| error!(error = %error, "Cannot build the sync engine."))
            })
            .await
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
