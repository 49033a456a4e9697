//! The production [`Connector`]: the engine's Graph and Exchange adapters over the m365 room's `ApiClient`
//! (allowlist of the tenant's configured hosts, bearer tokens from the token provider, retries with Retry-After,
//! transient Exchange errors, request counters) and `TokenProvider` (client secret or certificate from Key Vault,
//! environment secrets, managed-identity federation). Endpoints come from the configuration (cloud or overrides).
//! Each tenant has one Exchange client, shared by every run that writes to or reads from its Exchange, so the
//! tenant's adaptive limit and `Retry-After` pause hold across links.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::exchange::ExchangeContacts;
use super::graph::{GraphSource, tenant_id_from_token};
use super::mailbox_folder::MailboxFolderReader;
use super::transport::{JsonRequest, JsonResponse, JsonTransport, Method};
use crate::config::{Config, Credential, NamedTenant, TenantId};
use crate::engine::ports::{
    CounterSnapshot, MailContactTarget, PortError, RequestMeter, SourceDirectory,
};
use crate::engine::service::Connector;
use crate::m365::budget::PauseGate;
use crate::m365::{
    AdaptiveLimiter, ApiClient, ApiRequest, AuthError, CredentialSource, ExchangeClient,
    ExchangeError, GraphClient, HttpError, HttpSettings, LimiterSet, PlatformIdentity, RetryPolicy,
    Secret, Service, TenantAuth, TokenProvider, build_http_client,
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

impl RequestMeter for SharedCounters {
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
    retry: RetryPolicy,
    /// Exchange commands in flight per tenant at most (`service.max_concurrency`); throttling lowers it to 1.
    exchange_concurrency: u32,
    exchange: Mutex<HashMap<String, ExchangeClient>>,
    /// Where delegated sign-ins keep their refresh tokens (the state settings).
    state: crate::config::StateSettings,
    /// Whether a `[key_vault]` is configured (delegated sign-ins on table state keep their refresh tokens there).
    key_vault_configured: bool,
    /// `[service] graph_requests_per_10s`: Graph requests per 10 s per app, across every process of the deployment.
    graph_requests_per_10s: u32,
    /// The state store that keeps the per-app Graph budget shared by every process ([`Self::with_shared_budget`]).
    budget_store: Option<Arc<dyn crate::state::StateStore>>,
    /// One shared budget per app registration (client id, lower case).
    graph_budgets: Mutex<HashMap<String, Arc<crate::m365::pacer::SharedBudget>>>,
}

impl M365Connector {
    /// One HTTP client and one token provider for every tenant of the configuration.
    pub fn new(config: &Config) -> Result<M365Connector, ConnectError> {
        Self::with_secrets(config, BTreeMap::new(), None)
    }

    /// [`M365Connector::new`], except that the tenants named in `secrets` authenticate with the client secret given
    /// here instead of their configured credential (the demo and the tests hand over the simulator's secrets in
    /// process; everything else, HTTP client, TLS, retries and limits, is the production path). `extra_ca_file`, when
    /// given, replaces the configured one (the simulator's CA).
    pub fn with_secrets(
        config: &Config,
        secrets: BTreeMap<String, Secret>,
        extra_ca_file: Option<std::path::PathBuf>,
    ) -> Result<M365Connector, ConnectError> {
        let settings = match extra_ca_file {
            Some(path) => HttpSettings {
                extra_ca_file: Some(path),
                ..HttpSettings::default()
            },
            None => HttpSettings {
                extra_ca_file: config.service().extra_ca_file.clone(),
                ..HttpSettings::default()
            }
            .with_env_overrides(),
        };
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
                credential: match secrets.get(name) {
                    Some(secret) => CredentialSource::ClientSecret(secret.clone()),
                    None => credential_source(&tenant.credential),
                },
            })
            .collect();
        let key_vault = config.key_vault().map(|vault| vault.url.url().clone());
        let key_vault_configured = key_vault.is_some();
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
            retry: RetryPolicy::default(),
            exchange_concurrency: config.service().max_concurrency.max(1),
            exchange: Mutex::new(HashMap::new()),
            state: config.state().clone(),
            key_vault_configured,
            graph_requests_per_10s: config.service().graph_requests_per_10s,
            budget_store: None,
            graph_budgets: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps Graph's per-app limit (`[service] graph_requests_per_10s`) across every process that shares `store`:
    /// each app's requests are paced by a [`crate::m365::pacer::SharedBudget`] kept there (docs/microsoft-facts.md §4).
    pub fn with_shared_budget(mut self, store: Arc<dyn crate::state::StateStore>) -> Self {
        self.budget_store = Some(store);
        self
    }

    /// The shared Graph budget of `client_id`, when a store keeps one.
    fn graph_budget(&self, client_id: &str) -> Option<Arc<crate::m365::pacer::SharedBudget>> {
        let store = self.budget_store.as_ref()?;
        let mut budgets = self
            .graph_budgets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(
            budgets
                .entry(client_id.to_ascii_lowercase())
                .or_insert_with(|| {
                    Arc::new(crate::m365::pacer::SharedBudget::graph(
                        store.clone(),
                        client_id,
                        self.graph_requests_per_10s,
                    ))
                })
                .clone(),
        )
    }

    /// Uses `retry` for every client made from now on (tests shorten the backoff when no `Retry-After` is given;
    /// a service's `Retry-After` is still honoured).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The tenant's one Exchange client: its adaptive limit (`max_concurrency` down to 1 under throttling) and its
    /// `Retry-After` pause are shared by every run and every port that talks to this tenant's Exchange.
    fn exchange_client(&self, tenant: &NamedTenant) -> Result<ExchangeClient, PortError> {
        let mut clients = self
            .exchange
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&tenant.name) {
            return Ok(client.clone());
        }
        let endpoints = tenant.tenant.endpoints();
        let token = self.tokens.source(
            &tenant.name,
            &format!("{}/.default", endpoints.exchange_audience),
        );
        let api = ApiClient::new(
            self.http.clone(),
            Service::Exchange,
            &[&endpoints.exchange],
            Some(token),
        )
        .with_counters(self.counters.clone())
        .with_retry(self.retry.clone())
        .with_limiter(AdaptiveLimiter::new(
            self.exchange_concurrency,
            Duration::from_secs(1),
        ))
        .with_pause_gate(PauseGate::new());
        // [unverified] Without a known initial domain the routing header names the configured tenant id; set
        // `initial_domain` when `tenant_id` is a GUID.
        let id = tenant.tenant.tenant_id.as_str().to_owned();
        let domain = tenant
            .tenant
            .known_initial_domain()
            .unwrap_or(&id)
            .to_owned();
        let client = ExchangeClient::new(api, &endpoints.exchange, &id, &domain).map_err(
            |error: ExchangeError| PortError::Failed {
                service: "exchange".into(),
                message: error.to_string(),
            },
        )?;
        clients.insert(tenant.name.clone(), client.clone());
        Ok(client)
    }

    /// The tenant's Graph executor: its allowlist, token, counters and retry policy.
    fn graph_api(&self, tenant: &NamedTenant) -> ApiClient {
        let endpoints = tenant.tenant.endpoints();
        let token = self.tokens.source(
            &tenant.name,
            &format!("{}/.default", endpoints.graph_audience),
        );
        ApiClient::new(
            self.http.clone(),
            Service::Graph,
            &[&endpoints.graph],
            Some(token),
        )
        .with_counters(self.counters.clone())
        .with_retry(self.retry.clone())
    }

    /// A Graph client that reads one mailbox as its own user, from the refresh token `galbridge login` stored
    /// (docs/microsoft-facts.md §12).
    fn delegated_graph(
        &self,
        tenant: &NamedTenant,
        folder: &crate::config::MailboxFolderSource,
    ) -> Result<GraphClient, PortError> {
        use crate::m365::delegated::{DelegatedLogin, DelegatedTokenSource, contacts_read_scope};
        let failed = |message: String| PortError::Failed {
            service: "login".into(),
            message,
        };
        let store = self
            .refresh_token_store(&tenant.name, &folder.mailbox)
            .map_err(failed)?;
        let endpoints = tenant.tenant.endpoints();
        let login = DelegatedLogin {
            http: self.http.clone(),
            counters: self.counters.clone(),
            login_base: endpoints.login.clone(),
            tenant_id: tenant.tenant.tenant_id.as_str().to_owned(),
            tenant_name: tenant.name.clone(),
            client_id: tenant.tenant.client_id.as_str().to_owned(),
            mailbox: folder.mailbox.clone(),
            scope: contacts_read_scope(endpoints.graph_audience),
        };
        let api = ApiClient::new(
            self.http.clone(),
            Service::Graph,
            &[&endpoints.graph],
            Some(Arc::new(DelegatedTokenSource::new(login, store))),
        )
        .with_counters(self.counters.clone())
        .with_retry(self.retry.clone());
        let client_id = tenant.tenant.client_id.as_str();
        GraphClient::new(api, &endpoints.graph, LimiterSet::per_mailbox())
            .map(|graph| {
                graph.for_app_within(
                    client_id,
                    self.graph_requests_per_10s,
                    self.graph_budget(client_id),
                )
            })
            .map_err(|e| failed(e.to_string()))
    }

    /// Where the refresh token of `mailbox` in `tenant` is kept ([`super::mailbox_folder::refresh_token_store`]):
    /// the runs and `galbridge login` both ask here.
    pub fn refresh_token_store(
        &self,
        tenant: &str,
        mailbox: &str,
    ) -> Result<Arc<dyn crate::m365::delegated::RefreshTokenStore>, String> {
        super::mailbox_folder::refresh_token_store(
            &self.state,
            self.key_vault_configured.then_some(&self.tokens),
            tenant,
            mailbox,
        )
    }

    /// The HTTP client (TLS, extra CA) and counters this connector uses, for `galbridge login`.
    pub fn http_client(&self) -> (reqwest::Client, Arc<crate::m365::RequestCounters>) {
        (self.http.clone(), self.counters.clone())
    }

    fn graph_transport(&self, tenant: &NamedTenant) -> Arc<ApiTransport> {
        Arc::new(ApiTransport {
            client: self.graph_api(tenant),
            base: tenant.tenant.endpoints().graph,
        })
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
            graph: self.graph_transport(tenant),
            tenant_id: Some(tenant_id),
            exchange: Some(self.exchange_client(tenant)?),
        }))
    }

    async fn mail_contacts(
        &self,
        tenant: &NamedTenant,
    ) -> Result<Arc<dyn MailContactTarget>, PortError> {
        Ok(Arc::new(ExchangeContacts {
            exchange: self.exchange_client(tenant)?,
        }))
    }

    async fn mailbox_folder_source(
        &self,
        tenant: &NamedTenant,
        folder: &crate::config::MailboxFolderSource,
    ) -> Result<Arc<dyn SourceDirectory>, PortError> {
        let graph = match folder.sign_in {
            crate::config::MailboxSignIn::App => self.graph(tenant).await?,
            crate::config::MailboxSignIn::Delegated => self.delegated_graph(tenant, folder)?,
        };
        Ok(Arc::new(MailboxFolderReader {
            graph,
            tenant_id: self.directory_id(tenant).await?,
            tenant_name: tenant.name.clone(),
            folder: folder.clone(),
            read_ids: Default::default(),
        }))
    }

    fn counters(&self) -> Option<Arc<dyn RequestMeter>> {
        Some(Arc::new(SharedCounters(self.counters.clone())))
    }

    async fn guest_users(
        &self,
        tenant: &NamedTenant,
    ) -> Result<Arc<dyn crate::engine::ports::GuestUserTarget>, PortError> {
        Ok(Arc::new(super::guests::GuestUsers {
            graph: self.graph(tenant).await?,
            exchange: self.exchange_client(tenant)?,
        }))
    }

    async fn graph(&self, tenant: &NamedTenant) -> Result<GraphClient, PortError> {
        let api = self.graph_api(tenant);
        let endpoints = tenant.tenant.endpoints();
        let client_id = tenant.tenant.client_id.as_str();
        GraphClient::new(api, &endpoints.graph, LimiterSet::per_mailbox())
            .map(|graph| {
                graph.for_app_within(
                    client_id,
                    self.graph_requests_per_10s,
                    self.graph_budget(client_id),
                )
            })
            .map_err(|e| PortError::Failed {
                service: "graph".into(),
                message: e.to_string(),
            })
    }
}

/// The token provider's view of a configured credential.
fn credential_source(credential: &Credential) -> CredentialSource {
    match credential {
        Credential::KeyVaultSecret(secret) => CredentialSource::KeyVaultSecret(secret.clone()),
        Credential::KeyVaultCertificate(secret) => {
            CredentialSource::KeyVaultCertificate(secret.clone())
        }
        Credential::Env(variable) => CredentialSource::Env(variable.clone()),
        Credential::FederatedManagedIdentity => CredentialSource::FederatedManagedIdentity,
    }
}
