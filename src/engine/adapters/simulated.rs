//! The engine connected to an in-process m365-sim (the demo, end-to-end tests, benchmarks): Graph and Exchange
//! adapters over [`DirectTransport`]s with each simulated tenant's client secret.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::direct::{Counters, DEFAULT_RETRIES, DirectTransport};
use super::exchange::{ExchangeContacts, anchor_mailbox};
use super::graph::GraphSource;
use super::transport::JsonTransport;
use crate::config::{NamedTenant, Secret};
use crate::engine::ports::{MailContactTarget, PortError, RequestCounters, SourceDirectory};
use crate::engine::service::Connector;

fn failed(service: &str, error: impl std::fmt::Display) -> PortError {
    PortError::Failed {
        service: service.into(),
        message: error.to_string(),
    }
}

/// Builds adapters to the simulator's tenants.
pub struct SimConnector {
    http: reqwest::Client,
    sim_base: url::Url,
    tenants: Vec<m365_sim::TenantInfo>,
    pub counters: Arc<Counters>,
    retries: u32,
}

/// Why the simulator cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum SimConnectError {
    #[error("cannot read the simulator's CA {path}: {source}")]
    Ca {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl SimConnector {
    /// A connector to every tenant of a running simulator (trusting its CA).
    pub fn new(
        sim: &m365_sim::SimHandle,
        tenants: &[&str],
    ) -> Result<SimConnector, SimConnectError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = sim.ca_pem_path();
        let ca = std::fs::read(path).map_err(|source| SimConnectError::Ca {
            path: path.display().to_string(),
            source,
        })?;
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca)?)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(SimConnector {
            http,
            sim_base: sim.base_url().clone(),
            tenants: tenants.iter().filter_map(|name| sim.tenant(name)).collect(),
            counters: Arc::new(Counters::default()),
            retries: DEFAULT_RETRIES,
        })
    }

    /// Retries per request of every transport made from now on.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

impl SimConnector {
    fn info(&self, tenant: &NamedTenant) -> Result<&m365_sim::TenantInfo, PortError> {
        self.tenants
            .iter()
            .find(|t| t.name == tenant.name)
            .ok_or_else(|| failed("simulator", format!("no simulated tenant {}", tenant.name)))
    }

    fn transport(
        &self,
        info: &m365_sim::TenantInfo,
        service: &'static str,
    ) -> Arc<dyn JsonTransport> {
        let scope = if service == "graph" {
            "https://graph.microsoft.com/.default"
        } else {
            "https://outlook.office365.com/.default"
        };
        Arc::new(
            DirectTransport::new(
                self.http.clone(),
                self.sim_base.clone(),
                info.token_url.clone(),
                info.client_id.clone(),
                Secret::new(info.client_secret.clone()),
                scope.into(),
                self.counters.clone(),
                service,
            )
            .with_retries(self.retries),
        )
    }
}

#[async_trait]
impl Connector for SimConnector {
    async fn source(&self, tenant: &NamedTenant) -> Result<Arc<dyn SourceDirectory>, PortError> {
        let info = self.info(tenant)?;
        Ok(Arc::new(GraphSource {
            graph: self.transport(info, "graph"),
            tenant_id: Some(info.tenant_id.clone()),
            exchange: Some(self.transport(info, "exchange")),
            exchange_route: Some((info.tenant_id.clone(), anchor_mailbox(&info.initial_domain))),
        }))
    }

    async fn mail_contacts(
        &self,
        tenant: &NamedTenant,
    ) -> Result<Arc<dyn MailContactTarget>, PortError> {
        let info = self.info(tenant)?;
        Ok(Arc::new(ExchangeContacts {
            exchange: self.transport(info, "exchange"),
            tenant: info.tenant_id.clone(),
            anchor_mailbox: anchor_mailbox(&info.initial_domain),
        }))
    }

    fn counters(&self) -> Option<Arc<dyn RequestCounters>> {
        Some(self.counters.clone())
    }

    async fn graph(&self, tenant: &NamedTenant) -> Result<crate::m365::GraphClient, PortError> {
        let info = self.info(tenant)?;
        sim_graph_client(&self.http, &self.sim_base, info)
    }
}

/// A Graph client (the m365 room's, with `$batch` and per-mailbox limiters) to one simulated tenant, authenticating
/// with the tenant's client secret handed over in process.
pub fn sim_graph_client(
    http: &reqwest::Client,
    sim_base: &url::Url,
    info: &m365_sim::TenantInfo,
) -> Result<crate::m365::GraphClient, PortError> {
    use crate::m365::{
        ApiClient, CredentialSource, GraphClient, LimiterSet, PlatformIdentity, Service,
        TenantAuth, TokenProvider,
    };
    let counters = crate::m365::RequestCounters::shared();
    let tokens = TokenProvider::new(
        http.clone(),
        vec![TenantAuth {
            name: info.name.clone(),
            tenant_id: info.tenant_id.clone(),
            client_id: info.client_id.clone(),
            login_base: sim_base.clone(),
            credential: CredentialSource::ClientSecret(crate::m365::Secret::new(
                info.client_secret.clone(),
            )),
        }],
        None,
        PlatformIdentity::FromEnvironment,
        counters.clone(),
    )
    .map_err(|e| failed("login", e))?;
    let token = tokens.source(&info.name, "https://graph.microsoft.com/.default");
    let api = ApiClient::new(http.clone(), Service::Graph, &[sim_base], Some(token))
        .with_counters(counters);
    GraphClient::new(api, sim_base, LimiterSet::per_mailbox())
        .map(|graph| graph.for_app(&info.client_id))
        .map_err(|e| failed("graph", e))
}
