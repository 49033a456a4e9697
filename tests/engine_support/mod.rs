//! Test support for the engine's end-to-end tests: m365-sim started in-process, a galbridge configuration pointing
//! every tenant at it, and a connector that builds the engine's Graph and Exchange adapters over a small test
//! transport (client-credential tokens from the simulator's login endpoint, bounded retries of 429/5xx).

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use galbridge::config::{Config, NamedTenant};
use galbridge::engine::adapters::exchange::{ExchangeContacts, anchor_mailbox};
use galbridge::engine::adapters::graph::GraphSource;
use galbridge::engine::adapters::transport::{JsonRequest, JsonResponse, JsonTransport, Method};
use galbridge::engine::ports::{
    CounterSnapshot, MailContactTarget, PortError, RequestCounters, SourceDirectory,
};
use galbridge::engine::service::{Connector, EngineService};
use galbridge::state::FileStore;
use m365_sim::{SimConfig, SimHandle, TenantSeed};

/// Retries of 429/5xx/dropped connections a test transport makes before giving the answer to the engine.
pub const TEST_RETRIES: u32 = 3;

pub struct TestTransport {
    http: reqwest::Client,
    base: url::Url,
    token_url: url::Url,
    client_id: String,
    secret: String,
    scope: String,
    token: tokio::sync::Mutex<Option<String>>,
    counters: Arc<Counters>,
    service: &'static str,
}

#[derive(Default)]
pub struct Counters {
    pub graph: AtomicU64,
    pub exchange: AtomicU64,
    pub login: AtomicU64,
    pub retries: AtomicU64,
}

impl RequestCounters for Counters {
    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: [
                ("graph".to_owned(), self.graph.load(Ordering::SeqCst)),
                ("exchange".to_owned(), self.exchange.load(Ordering::SeqCst)),
                ("login".to_owned(), self.login.load(Ordering::SeqCst)),
            ]
            .into_iter()
            .collect(),
            throttled_retries: self.retries.load(Ordering::SeqCst),
        }
    }
}

impl TestTransport {
    async fn bearer(&self) -> Result<String, PortError> {
        let mut token = self.token.lock().await;
        if let Some(token) = token.as_ref() {
            return Ok(token.clone());
        }
        self.counters.login.fetch_add(1, Ordering::SeqCst);
        let response = self
            .http
            .post(self.token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.as_str()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| failed("login", e))?;
        let body: serde_json::Value = response.json().await.map_err(|e| failed("login", e))?;
        let access = body["access_token"]
            .as_str()
            .ok_or_else(|| PortError::Failed {
                service: "login".into(),
                message: format!("no token: {body}"),
            })?
            .to_owned();
        *token = Some(access.clone());
        Ok(access)
    }
}

fn failed(service: &str, error: impl std::fmt::Display) -> PortError {
    PortError::Failed {
        service: service.into(),
        message: error.to_string(),
    }
}

#[async_trait]
impl JsonTransport for TestTransport {
    async fn send(&self, request: JsonRequest) -> Result<JsonResponse, PortError> {
        let url = url::Url::parse(&request.url).map_err(|e| failed(self.service, e))?;
        if url.origin() != self.base.origin() {
            return Err(failed(self.service, format!("refusing foreign host {url}")));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let counter = if self.service == "graph" {
                &self.counters.graph
            } else {
                &self.counters.exchange
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let token = self.bearer().await?;
            let mut builder = match request.method {
                Method::Get => self.http.get(url.clone()),
                Method::Post => self.http.post(url.clone()),
            };
            builder = builder.bearer_auth(token);
            for (name, value) in &request.headers {
                builder = builder.header(*name, value);
            }
            if let Some(body) = &request.body {
                builder = builder.json(body);
            }
            let retry_after = match builder.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let bytes = response.bytes().await.unwrap_or_default();
                    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                    let retryable = status == 429
                        || status == 503
                        || status == 504
                        || (status == 200 && body.is_null());
                    if !retryable || attempt > TEST_RETRIES {
                        return Ok(JsonResponse { status, body });
                    }
                    retry_after.unwrap_or(0)
                }
                Err(error) => {
                    if attempt > TEST_RETRIES
                        || (!request.idempotent && !error.is_connect()) && attempt > 1
                    {
                        return Err(failed(self.service, error));
                    }
                    0
                }
            };
            self.counters.retries.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis((retry_after * 1000).min(300) + 20)).await;
        }
    }

    fn base(&self) -> &url::Url {
        &self.base
    }

    fn count_retry(&self) {
        self.counters.retries.fetch_add(1, Ordering::SeqCst);
    }
}

/// Builds adapters to the simulator's tenants.
pub struct SimConnector {
    http: reqwest::Client,
    sim_base: url::Url,
    tenants: Vec<m365_sim::TenantInfo>,
    pub counters: Arc<Counters>,
}

impl SimConnector {
    fn info(&self, tenant: &NamedTenant) -> Result<&m365_sim::TenantInfo, PortError> {
        self.tenants
            .iter()
            .find(|t| t.name == tenant.name)
            .ok_or_else(|| failed("test", format!("no simulated tenant {}", tenant.name)))
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
        Arc::new(TestTransport {
            http: self.http.clone(),
            base: self.sim_base.clone(),
            token_url: info.token_url.clone(),
            client_id: info.client_id.clone(),
            secret: info.client_secret.clone(),
            scope: scope.into(),
            token: tokio::sync::Mutex::new(None),
            counters: self.counters.clone(),
            service,
        })
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
}

/// A running simulator, its state directory and the engine over it.
pub struct World {
    pub sim: SimHandle,
    pub state_dir: tempfile::TempDir,
    pub service: EngineService,
    pub connector: Arc<SimConnector>,
}

/// The `[tenants.*]` sections for the simulator's tenants.
pub fn tenants_toml(sim: &SimHandle, names: &[&str]) -> String {
    let mut toml = String::new();
    for name in names {
        let info = sim.tenant(name).expect("seeded tenant");
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{}\"\ninitial_domain = \"{}\"\nclient_id = \"{}\"\ncredential = {{ env = \"UNUSED_{}\" }}\n\
             [tenants.{name}.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nexchange = \"{base}\"\n\n",
            info.tenant_id,
            info.initial_domain,
            info.client_id,
            name.to_uppercase(),
            base = sim.base_url(),
        ));
    }
    toml
}

/// Starts the simulator with `seeds` and an engine configured by `links_toml` (tenants are added).
pub async fn world(seeds: &[(&str, usize)], links_toml: &str) -> World {
    let sim = m365_sim::start(SimConfig {
        tenants: seeds
            .iter()
            .map(|(name, users)| TenantSeed::new(name, *users))
            .collect(),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let names: Vec<&str> = seeds.iter().map(|(name, _)| *name).collect();
    let state_dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "[service]\nmax_concurrency = 4\n[state]\nkind = \"file\"\npath = \"{}\"\n\n{}{}",
        state_dir.path().display(),
        tenants_toml(&sim, &names),
        links_toml
    );
    let config = Config::from_toml_str(&toml, std::path::Path::new("galbridge.toml"))
        .expect("valid configuration");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(sim.ca_pem_path()).expect("simulator CA");
    let http = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("CA parses"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let connector = Arc::new(SimConnector {
        http,
        sim_base: sim.base_url().clone(),
        tenants: names
            .iter()
            .map(|name| sim.tenant(name).expect("seeded"))
            .collect(),
        counters: Arc::new(Counters::default()),
    });
    let store = FileStore::open(state_dir.path()).expect("file store");
    let service = EngineService::new(&config, Arc::new(store), connector.clone());
    World {
        sim,
        state_dir,
        service,
        connector,
    }
}

/// Whether a simulated user should appear in other tenants by default (independent of the engine's scope code):
/// an enabled member with an address, shown in the address lists.
pub fn in_default_scope(user: &serde_json::Value) -> bool {
    user["userType"] == "Member"
        && user["accountEnabled"] == true
        && user["mail"].as_str().is_some_and(|m| m.contains('@'))
        && user["hiddenFromAddressLists"] != true
}

/// Mail contacts of a tenant carrying a galbridge anchor in CustomAttribute15.
pub fn anchored_contacts(world: &World, tenant: &str) -> Vec<serde_json::Value> {
    world
        .sim
        .control()
        .mail_contacts(tenant)
        .expect("tenant")
        .into_iter()
        .filter(|c| {
            c["CustomAttribute15"]
                .as_str()
                .is_some_and(|a| a.starts_with("galbridge:"))
        })
        .collect()
}
