//! The production [`Connector`]: the engine's Graph and Exchange adapters over the m365 room's `ApiClient`
//! (allowlist of the tenant's configured hosts, bearer tokens from the token provider, retries with Retry-After,
//! transient Exchange errors, request counters) and `TokenProvider` (client secret or certificate from Key Vault,
//! environment secrets, managed-identity federation). Endpoints come from the configuration (cloud or overrides).

use std::sync::Arc;

use async_trait::async_trait;

use super::exchange::{ExchangeContacts, anchor_mailbox};
use super::graph::{GraphSource, tenant_id_from_token};
use super::transport::{JsonRequest, JsonResponse, JsonTransport, Method};
use crate::config::{Config, Credential, NamedTenant, TenantId};
use crate::engine::ports::{
    CounterSnapshot, MailContactTarget, PortError, RequestCounters, SourceDirectory,
};
use crate::engine::service::Connector;
use crate::m365::{
    ApiClient, ApiRequest, AuthError, CredentialSource, GraphClient, HttpError, HttpSettings,
    LimiterSet, PlatformIdentity, Service, TenantAuth, TokenProvider, build_http_client,
};

/// A [`JsonTransport`] over an m365 `ApiClient`.
pub struct ApiTransport {
    client: ApiClient,
    base: url::Url,
}

#[async_trait]
impl JsonTransport for ApiTransport {
    async fn send(&self, request: JsonRequest) -> Result<JsonResponse, PortError> {
        let service = self.client.service().as_str();
        let url = url::Url::parse(&request.url).map_err(|e| PortError::Failed {
            service: service.into(),
            message: format!("bad URL: {e}"),
        })?;
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut api = ApiRequest::new(method, url).idempotent(request.idempotent);
        for (name, value) in request.headers {
            api = api.header(name, value);
        }
        if let Some(body) = &request.body {
            api = api.json(body);
        }
        let response = self.client.send(api).await.map_err(|e| PortError::Failed {
            service: service.into(),
            message: e.to_string(),
        })?;
        let body = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
        Ok(JsonResponse {
            status: response.status.as_u16(),
            body,
        })
    }

    fn base(&self) -> &url::Url {
        &self.base
    }

    fn count_retry(&self) {
        self.client.counters().count_throttled_retry();
    }
}

/// The m365 counters as the runner reads them. They are shared by every run of the process, so a run's figures
/// include requests of runs of other links that overlap it in time (runs of one service call are sequential).
struct SharedCounters(Arc<crate::m365::RequestCounters>);

impl RequestCounters for SharedCounters {
    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: self.0.requests(),
            throttled_retries: self.0.throttled_retries(),
        }
    }
}

/// Why the production connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Connects the engine to the configured tenants through the m365 clients.
pub struct M365Connector {
    http: reqwest::Client,
    tokens: TokenProvider,
    counters: Arc<crate::m365::RequestCounters>,
}

impl M365Connector {
    /// One HTTP client and one token provider for every tenant of the configuration.
    pub fn new(config: &Config) -> Result<M365Connector, ConnectError> {
        let settings = HttpSettings {
            extra_ca_file: config.service().extra_ca_file.clone(),
            ..HttpSettings::default()
        }
        .with_env_overrides();
        let http = build_http_client(&settings)?;
        let counters = crate::m365::RequestCounters::shared();
        let tenants = config
            .file()
            .tenants
            .iter()
            .map(|(name, tenant)| TenantAuth {
                name: name.clone(),
                tenant_id: tenant.tenant_id.as_str().to_owned(),
                client_id: tenant.client_id.as_str().to_owned(),
                login_base: tenant.endpoints().login,
                credential: match &tenant.credential {
                    Credential::KeyVaultSecret(secret) => {
                        CredentialSource::KeyVaultSecret(secret.clone())
                    }
                    Credential::KeyVaultCertificate(secret) => {
                        CredentialSource::KeyVaultCertificate(secret.clone())
                    }
                    Credential::Env(variable) => CredentialSource::Env(variable.clone()),
                    Credential::FederatedManagedIdentity => {
                        CredentialSource::FederatedManagedIdentity
                    }
                },
            })
            .collect();
        let key_vault = config.key_vault().map(|vault| vault.url.url().clone());
        let tokens = TokenProvider::new(
            http.clone(),
            tenants,
            key_vault,
            PlatformIdentity::FromEnvironment,
            counters.clone(),
        )?;
        Ok(M365Connector {
            http,
            tokens,
            counters,
        })
    }

    fn transport(&self, tenant: &NamedTenant, service: Service) -> Arc<ApiTransport> {
        let endpoints = tenant.tenant.endpoints();
        let (base, audience) = match service {
            Service::Exchange => (endpoints.exchange, endpoints.exchange_audience),
            _ => (endpoints.graph, endpoints.graph_audience),
        };
        let token = self
            .tokens
            .source(&tenant.name, &format!("{audience}/.default"));
        let client = ApiClient::new(self.http.clone(), service, &[&base], Some(token))
            .with_counters(self.counters.clone());
        Arc::new(ApiTransport { client, base })
    }

    /// `(InvokeCommand path segment, X-AnchorMailbox)`. [unverified] Without a known initial domain the routing
    /// header names the configured tenant id; set `initial_domain` when `tenant_id` is a GUID.
    fn exchange_route(tenant: &NamedTenant) -> (String, String) {
        let id = tenant.tenant.tenant_id.as_str().to_owned();
        let domain = tenant
            .tenant
            .known_initial_domain()
            .unwrap_or(&id)
            .to_owned();
        (id, anchor_mailbox(&domain))
    }

    async fn directory_id(&self, tenant: &NamedTenant) -> Result<String, PortError> {
        if let TenantId::Guid(guid) = &tenant.tenant.tenant_id {
            return Ok(guid.as_str().to_ascii_lowercase());
        }
        // The configuration names the tenant by its initial domain: the token's `tid` claim gives the GUID the
        // anchors need (anchors must not change if a tenant is later configured by GUID).
        let endpoints = tenant.tenant.endpoints();
        let token = self
            .tokens
            .token(
                &tenant.name,
                &format!("{}/.default", endpoints.graph_audience),
            )
            .await
            .map_err(|e| PortError::Failed {
                service: "login".into(),
                message: e.to_string(),
            })?;
        tenant_id_from_token(token.expose()).ok_or_else(|| PortError::Failed {
            service: "login".into(),
            message: format!(
                "tenant {:?}: the access token carries no tenant id",
                tenant.name
            ),
        })
    }
}

#[async_trait]
impl Connector for M365Connector {
    async fn source(&self, tenant: &NamedTenant) -> Result<Arc<dyn SourceDirectory>, PortError> {
        let tenant_id = self.directory_id(tenant).await?;
        Ok(Arc::new(GraphSource {
            graph: self.transport(tenant, Service::Graph),
            tenant_id: Some(tenant_id),
            exchange: Some(self.transport(tenant, Service::Exchange)),
            exchange_route: Some(Self::exchange_route(tenant)),
        }))
    }

    async fn mail_contacts(
        &self,
        tenant: &NamedTenant,
    ) -> Result<Arc<dyn MailContactTarget>, PortError> {
        let (path, anchor_mailbox) = Self::exchange_route(tenant);
        Ok(Arc::new(ExchangeContacts {
            exchange: self.transport(tenant, Service::Exchange),
            tenant: path,
            anchor_mailbox,
        }))
    }

    fn counters(&self) -> Option<Arc<dyn RequestCounters>> {
        Some(Arc::new(SharedCounters(self.counters.clone())))
    }

    async fn graph(&self, tenant: &NamedTenant) -> Result<GraphClient, PortError> {
        let endpoints = tenant.tenant.endpoints();
        let token = self.tokens.source(
            &tenant.name,
            &format!("{}/.default", endpoints.graph_audience),
        );
        let api = ApiClient::new(
            self.http.clone(),
            Service::Graph,
            &[&endpoints.graph],
            Some(token),
        )
        .with_counters(self.counters.clone());
        GraphClient::new(api, &endpoints.graph, LimiterSet::per_mailbox())
            .map(|graph| graph.for_app(tenant.tenant.client_id.as_str()))
            .map_err(|e| PortError::Failed {
                service: "graph".into(),
                message: e.to_string(),
            })
    }
}
