//! The engine connected to an in-process m365-sim (the demo, end-to-end tests, benchmarks) through the production
//! connector, [`M365Connector`]: the configuration's tenants point at the simulator, its CA is trusted as an extra
//! CA, and each simulated tenant's client secret is handed over in process. The HTTP client, TLS, retries, limits
//! and the Exchange and Graph clients are the ones that run in Azure; only the backoff steps taken when the service
//! gives no `Retry-After` are shorter ([`RetryPolicy::short_backoff`]).

use std::collections::BTreeMap;

use super::m365::{ConnectError, M365Connector};
use crate::config::Config;
use crate::m365::{RetryPolicy, Secret};

/// Why the simulator cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum SimConnectError {
    #[error("tenant {0:?} of the configuration is not one of the simulator's")]
    UnknownTenant(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// The production connector to a running simulator, for every tenant of `config` (each must be a simulated tenant
/// of the same name).
pub fn sim_connector(
    sim: &m365_sim::SimHandle,
    config: &Config,
) -> Result<M365Connector, SimConnectError> {
    let mut secrets = BTreeMap::new();
    for name in config.file().tenants.keys() {
        let info = sim
            .tenant(name)
            .ok_or_else(|| SimConnectError::UnknownTenant(name.clone()))?;
        secrets.insert(name.clone(), Secret::new(info.client_secret.clone()));
    }
    Ok(
        M365Connector::with_secrets(config, secrets, Some(sim.ca_pem_path().to_path_buf()))?
            .with_retry(RetryPolicy::short_backoff()),
    )
}
