//! Building the engine from a loaded configuration: the state store `[state]` names (a local folder, or Azure Table
//! Storage with a connection string from the environment or the managed identity), and the [`EngineService`] over
//! a [`Connector`] to the tenants.

use std::sync::Arc;

use super::service::{Connector, EngineService};
use crate::config::{Config, StateSettings, TableAuth as TableAuthSetting};
use crate::state::{FileStore, StateStore, TableAuth, TableStore, TableStoreConfig};

/// Why the state store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenStateError {
    #[error("state: environment variable {0} with the Table Storage connection string is not set")]
    MissingConnectionString(String),
    #[error(
        "state: kind = \"table\" with managed identity needs an endpoint (or GALBRIDGE_STATE_TABLE_ENDPOINT)"
    )]
    MissingEndpoint,
    #[error("state: cannot set up the managed identity for Table Storage: {0}")]
    Identity(String),
    #[error("state: {0}")]
    Store(#[from] crate::state::StateError),
}

/// Opens the state store the configuration names. `managed_identity_client_id` selects a user-assigned identity.
pub async fn open_state_store(config: &Config) -> Result<Arc<dyn StateStore>, OpenStateError> {
    match config.state() {
        StateSettings::File(file) => Ok(Arc::new(FileStore::open(&file.path)?)),
        StateSettings::Table(table) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let store_config = match &table.auth {
                TableAuthSetting::ConnectionStringEnv(variable) => {
                    let connection_string = std::env::var(variable)
                        .ok()
                        .filter(|v| !v.trim().is_empty())
                        .ok_or_else(|| OpenStateError::MissingConnectionString(variable.clone()))?;
                    let mut store_config =
                        TableStoreConfig::from_connection_string(&connection_string, &table.table)?;
                    if let Some(endpoint) = &table.endpoint {
                        store_config.endpoint = endpoint.url().clone();
                    }
                    store_config
                }
                TableAuthSetting::ManagedIdentity => {
                    let endpoint = table
                        .endpoint
                        .as_ref()
                        .ok_or(OpenStateError::MissingEndpoint)?;
                    let options = azure_identity::ManagedIdentityCredentialOptions {
                        user_assigned_id: config.service().managed_identity_client_id.as_ref().map(
                            |id| azure_identity::UserAssignedId::ClientId(id.as_str().to_owned()),
                        ),
                        ..Default::default()
                    };
                    let credential = azure_identity::ManagedIdentityCredential::new(Some(options))
                        .map_err(|e| OpenStateError::Identity(e.to_string()))?;
                    TableStoreConfig {
                        endpoint: endpoint.url().clone(),
                        table: table.table.clone(),
                        auth: TableAuth::Token(credential),
                        retry: Default::default(),
                    }
                }
            };
            Ok(Arc::new(TableStore::open(store_config).await?))
        }
    }
}

/// The engine the front doors use (`galbridge sync`, `serve`): the configuration's state store, and the tenants
/// reached through the m365 clients (credentials from Key Vault, the environment or managed-identity federation).
/// The CLI runs a phones run's shards itself; see [`build_serving_service`] for `serve`.
pub async fn build_service(
    config: Config,
) -> Result<EngineService, crate::sync_service::ServiceError> {
    let internal = |e: String| crate::sync_service::ServiceError::Internal(e);
    let store = open_state_store(&config)
        .await
        .map_err(|e| internal(e.to_string()))?;
    // Graph's per-app budget is kept in the same store, so every process of the deployment shares it.
    let connector = super::adapters::m365::M365Connector::new(&config)
        .map_err(|e| internal(e.to_string()))?
        .with_shared_budget(store.clone());
    Ok(EngineService::new(&config, store, Arc::new(connector)))
}

/// The engine of `galbridge serve`: [`build_service`], sending phones shards to the shard queue the configuration
/// names (`[service.shard_queue]`, or the Functions connection settings `GALBRIDGE_QUEUE`), if any; `PhonesShard`
/// consumes them on whichever instance the host gives each message to.
pub async fn build_serving_service(
    config: Config,
) -> Result<EngineService, crate::sync_service::ServiceError> {
    let queue = crate::queue::from_config(&config)
        .map_err(|e| crate::sync_service::ServiceError::Internal(e.to_string()))?;
    let service = build_service(config).await?;
    Ok(match queue {
        // host.json `extensions.queues.maxDequeueCount`.
        Some(queue) => service.with_shard_queue(
            queue,
            crate::engine::targets::personal_contacts::shards::DEFAULT_MAX_DEQUEUE,
        ),
        None => service,
    })
}

/// The engine over the configuration's state store and the given connector to the tenants.
pub async fn build_service_with(
    config: &Config,
    connector: Arc<dyn Connector>,
) -> Result<EngineService, OpenStateError> {
    let store = open_state_store(config).await?;
    Ok(EngineService::new(config, store, connector))
}

// Against the in-process simulator, through its connector (the `demo` feature).
#[cfg(all(test, feature = "demo"))]
mod tests {
    use super::*;
    use crate::report::RunOptions;
    use crate::sync_service::SyncService;
    use std::path::Path;

    #[tokio::test]
    async fn the_file_store_is_the_default_and_keeps_state_between_services() {
        let dir = std::env::temp_dir().join(format!("galbridge-build-{}", uuid::Uuid::new_v4()));
        let sim = m365_sim::start(m365_sim::SimConfig {
            tenants: vec![
                m365_sim::TenantSeed::new("acme", 12),
                m365_sim::TenantSeed::new("northern", 4),
            ],
            ..m365_sim::SimConfig::default()
        })
        .await
        .unwrap();
        let mut toml = format!(
            "[state]\nkind = \"file\"\npath = {:?}\n",
            dir.display().to_string()
        );
        for name in ["acme", "northern"] {
            let info = sim.tenant(name).unwrap();
            toml.push_str(&format!(
                "[tenants.{name}]\ntenant_id = \"{}\"\nclient_id = \"{}\"\ncredential = {{ env = \"X\" }}\n\
                 [tenants.{name}.endpoints]\nlogin = \"{b}\"\ngraph = \"{b}\"\nexchange = \"{b}\"\n",
                info.tenant_id,
                info.client_id,
                b = sim.base_url()
            ));
        }
        toml.push_str("[[links]]\nname = \"a-to-n\"\n[links.source]\ntenant = \"acme\"\n[links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n");
        let config = Config::from_toml_str(&toml, Path::new("galbridge.toml")).unwrap();
        let connect = || -> Arc<dyn Connector> {
            Arc::new(crate::engine::adapters::simulated::sim_connector(&sim, &config).unwrap())
        };
        let first = build_service_with(&config, connect()).await.unwrap();
        first
            .run_link("a-to-n", RunOptions::default())
            .await
            .unwrap();
        drop(first);
        let second = build_service_with(&config, connect()).await.unwrap();
        let report = second
            .run_link("a-to-n", RunOptions::default())
            .await
            .unwrap();
        assert_eq!(
            report.mode,
            crate::report::RunMode::Incremental,
            "the checkpoint survived in {}",
            dir.display()
        );
        assert!(dir.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
