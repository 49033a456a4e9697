//! PLACEHOLDER until the engine lands: the one place where the front doors get a real [`SyncService`].
//! The lead replaces [`build_service`]'s body with `crate::engine::build_service(config)`; nothing else in the CLI
//! or the Functions handler needs to change. Until then every run answers `internal error: engine not built`,
//! and status lists the configured links without history.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::report::{LinkStatus, RunOptions, RunReport, StatusReport};
use crate::service::{ServiceError, SyncService};

/// Builds the service the CLI and `serve` talk to.
pub fn build_service(config: Config) -> Result<EngineNotBuilt, ServiceError> {
    Ok(EngineNotBuilt { config })
}

/// Answers every request with "engine not built" (after checking link names, so 404s are already real).
pub struct EngineNotBuilt {
    config: Config,
}

impl EngineNotBuilt {
    fn check_link(&self, name: &str) -> Result<(), ServiceError> {
        match self.config.link(name) {
            Some(_) => Ok(()),
            None => Err(ServiceError::UnknownLink {
                name: name.to_owned(),
                suggestion: self.config.suggest_link(name).map(str::to_owned),
            }),
        }
    }
}

fn not_built() -> ServiceError {
    ServiceError::Internal("engine not built".to_owned())
}

impl SyncService for EngineNotBuilt {
    async fn run_link(&self, link: &str, _options: RunOptions) -> Result<RunReport, ServiceError> {
        self.check_link(link)?;
        Err(not_built())
    }

    async fn run_all(&self, _options: RunOptions) -> Vec<Result<RunReport, ServiceError>> {
        self.config
            .links()
            .iter()
            .map(|_| Err(not_built()))
            .collect()
    }

    async fn run_due(&self, _now: DateTime<Utc>) -> Vec<Result<RunReport, ServiceError>> {
        self.config
            .links()
            .iter()
            .filter(|link| link.enabled)
            .map(|_| Err(not_built()))
            .collect()
    }

    /// The configured links with no run history: what status shows before the engine has run anything.
    async fn status(&self) -> Result<StatusReport, ServiceError> {
        let links = self
            .config
            .links()
            .iter()
            .map(|link| LinkStatus {
                link: link.name.clone(),
                source_tenant: link.source_tenant.name.clone(),
                target_tenant: link.target_tenant.name.clone(),
                target_kind: link.target.kind_name().to_owned(),
                last_run: None,
                next_due: None,
                managed_objects: 0,
                quarantine: None,
                running: None,
            })
            .collect();
        Ok(StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            links,
        })
    }
}
