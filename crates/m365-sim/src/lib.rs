//! m365-sim: a faithful local double of the Microsoft 365 endpoints galbridge calls (Entra token endpoint, Graph
//! v1.0, Exchange Online `InvokeCommand`, Key Vault secrets, the App Service managed identity endpoint), with
//! Microsoft's limits, injectable faults, deterministic seeded tenants and a control API for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), m365_sim::SimError> {
//! let sim = m365_sim::start(m365_sim::SimConfig {
//!     tenants: vec![m365_sim::TenantSeed::new("acme", 550), m365_sim::TenantSeed::new("northern", 160)],
//!     ..m365_sim::SimConfig::default()
//! }).await?;
//! let acme = sim.tenant("acme").expect("seeded");
//! println!("{} {} {}", sim.base_url(), acme.tenant_id, sim.ca_pem_path().display());
//! # Ok(()) }
//! ```

// Handlers return `Result<_, Response>`: the error *is* the HTTP answer, built once and sent as is.
#![allow(clippy::result_large_err)]

pub mod auth;
mod clock;
pub mod control;
mod exchange;
mod graph;
pub mod jpeg;
mod keyvault;
pub mod knobs;
mod limits;
mod metrics;
pub mod model;
mod respond;
mod seed;
mod server;
mod state;
mod tenant;
mod tls;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use control::Control;
pub use graph::app_budget::AppLoad;
pub use knobs::{
    DeltaExpiryStyle, ExchangeErrorShape, ExchangeRateLimit, Fault, FaultRule, Knobs, Latency,
    LatencyModel, Service,
};
pub use limits::MailboxLoad;
pub use metrics::CounterRow;
pub use seed::TenantSeed;
pub use tenant::DEFAULT_PERMISSIONS;

use crate::state::{ManagedIdentity, SimState};
use crate::tenant::{AppRegistration, Directory, Tenant};

/// Errors starting or running the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("I/O failed ({what}): {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("unknown tenant '{0}'")]
    UnknownTenant(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("refused: {0}")]
    Refused(String),
}

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub tenants: Vec<TenantSeed>,
    /// Seed of the deterministic generator (same seed, same tenants, ids and secrets).
    pub seed: u64,
    /// HTTPS listener address (default 127.0.0.1:0); the plain-HTTP listener takes another free port on the same IP.
    pub bind: SocketAddr,
    /// Where the CA PEM is written (default: a temp dir removed when the simulator stops).
    pub state_dir: Option<PathBuf>,
    pub knobs: Knobs,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            tenants: vec![TenantSeed::new("acme", 50), TenantSeed::new("northern", 20)],
            seed: 7,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            knobs: Knobs::default(),
        }
    }
}

/// What a client needs to reach one tenant. The secret is fake (this is a local double), but it is still kept out
/// of `Debug` output so it never lands in a log by accident.
#[derive(Clone)]
pub struct TenantInfo {
    pub name: String,
    pub tenant_id: String,
    pub initial_domain: String,
    pub mail_domain: String,
    /// The galbridge app registration's client id in this tenant.
    pub client_id: String,
    pub client_secret: String,
    /// Key Vault secret holding the client secret.
    pub secret_name: String,
    /// Key Vault secret holding the app certificate and its private key (PEM).
    pub certificate_secret_name: String,
    /// Token endpoint of this tenant on the simulator.
    pub token_url: url::Url,
}

impl std::fmt::Debug for TenantInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantInfo")
            .field("name", &self.name)
            .field("tenant_id", &self.tenant_id)
            .field("initial_domain", &self.initial_domain)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The App Service managed identity the simulator serves (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`).
#[derive(Clone)]
pub struct IdentityInfo {
    /// Value for `IDENTITY_ENDPOINT`: `http://127.0.0.1:PORT/msi/token`.
    pub endpoint: url::Url,
    /// Value for `IDENTITY_HEADER` (sent back as `X-IDENTITY-HEADER`).
    pub header: String,
    pub client_id: String,
    pub principal_id: String,
    pub home_tenant_id: String,
}

impl std::fmt::Debug for IdentityInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityInfo")
            .field("endpoint", &self.endpoint.as_str())
            .field("principal_id", &self.principal_id)
            .finish_non_exhaustive()
    }
}

/// Secret names in the simulated Key Vault (one vault serves all tenants).
pub fn secret_name_for(tenant: &str) -> String {
    format!("{tenant}-client-secret")
}
pub fn certificate_secret_name_for(tenant: &str) -> String {
    format!("{tenant}-app-cert")
}

struct Running {
    state: Arc<SimState>,
    ca_pem_path: PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    _state_dir: tls::StateDir,
}

/// A running simulator. Cheap to clone; stops on `shutdown()` (or when the runtime ends).
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Running>,
}

impl SimHandle {
    /// `https://127.0.0.1:PORT/`: login, Graph (`/v1.0`), Exchange (`/adminapi`), Key Vault (`/secrets`), control.
    pub fn base_url(&self) -> &url::Url {
        &self.inner.state.base_url
    }

    /// `http://127.0.0.1:PORT2/`: the managed identity endpoint (`/msi/token`).
    pub fn http_base_url(&self) -> &url::Url {
        &self.inner.state.http_base_url
    }

    /// PEM of the CA that signed the server certificate (SAN localhost, 127.0.0.1, ::1).
    pub fn ca_pem_path(&self) -> &Path {
        &self.inner.ca_pem_path
    }

    pub fn tenant(&self, name: &str) -> Option<TenantInfo> {
        self.inner
            .state
            .tenant(name)
            .map(|t| tenant_info(&self.inner.state, t))
    }

    pub fn tenants(&self) -> Vec<TenantInfo> {
        self.inner
            .state
            .tenants
            .iter()
            .map(|t| tenant_info(&self.inner.state, t))
            .collect()
    }

    pub fn identity(&self) -> IdentityInfo {
        let s = &self.inner.state;
        IdentityInfo {
            endpoint: s
                .http_base_url
                .join("msi/token")
                .unwrap_or_else(|_| s.http_base_url.clone()),
            header: s.identity.header_secret.clone(),
            client_id: s.identity.client_id.clone(),
            principal_id: s.identity.principal_id.clone(),
            home_tenant_id: s.identity.home_tenant_id.clone(),
        }
    }

    pub fn control(&self) -> Control {
        Control::new(Arc::clone(&self.inner.state))
    }

    pub async fn shutdown(self) {
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn tenant_info(state: &SimState, t: &Tenant) -> TenantInfo {
    TenantInfo {
        name: t.name.clone(),
        tenant_id: t.id.clone(),
        initial_domain: t.initial_domain.clone(),
        mail_domain: t.mail_domain.clone(),
        client_id: t.app.client_id.clone(),
        client_secret: t.app.client_secret.clone(),
        secret_name: secret_name_for(&t.name),
        certificate_secret_name: certificate_secret_name_for(&t.name),
        token_url: state
            .base_url
            .join(&format!("{}/oauth2/v2.0/token", t.id))
            .unwrap_or_else(|_| state.base_url.clone()),
    }
}

/// Starts the simulator: generates TLS material and tenants, binds both listeners, serves in the background.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    if config.tenants.is_empty() {
        return Err(SimError::Config("at least one tenant is needed".into()));
    }
    let mut names = BTreeSet::new();
    for t in &config.tenants {
        let valid = !t.name.is_empty()
            && t.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(SimError::Config(format!(
                "tenant name '{}' must be lowercase letters, digits or '-'",
                t.name
            )));
        }
        if !names.insert(t.name.clone()) {
            return Err(SimError::Config(format!(
                "tenant '{}' is listed twice",
                t.name
            )));
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state_dir = tls::StateDir::open(config.state_dir.as_deref())?;
    let material = tls::generate()?;
    let ca_pem_path = state_dir.path.join("m365-sim-ca.pem");
    std::fs::write(&ca_pem_path, &material.ca_pem).map_err(|e| SimError::Io {
        what: format!("write {}", ca_pem_path.display()),
        source: e,
    })?;

    let https = TcpListener::bind(config.bind)
        .await
        .map_err(|e| SimError::Io {
            what: format!("bind {}", config.bind),
            source: e,
        })?;
    let http_bind = SocketAddr::new(config.bind.ip(), 0);
    let http = TcpListener::bind(http_bind)
        .await
        .map_err(|e| SimError::Io {
            what: format!("bind {http_bind}"),
            source: e,
        })?;
    let https_addr = https.local_addr().map_err(|e| SimError::Io {
        what: "local address".into(),
        source: e,
    })?;
    let http_addr = http.local_addr().map_err(|e| SimError::Io {
        what: "local address".into(),
        source: e,
    })?;
    let base_url = url::Url::parse(&format!("https://{https_addr}/"))
        .map_err(|e| SimError::Config(e.to_string()))?;
    let http_base_url = url::Url::parse(&format!("http://{http_addr}/"))
        .map_err(|e| SimError::Config(e.to_string()))?;

    let mut tenants = Vec::new();
    for (index, spec) in config.tenants.iter().enumerate() {
        tenants.push(Arc::new(build_tenant(config.seed, index, spec)));
    }
    let mut id_rng =
        <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(config.seed ^ 0x4D53_4921);
    let identity = ManagedIdentity {
        client_id: seed::uuid_from(&mut id_rng),
        principal_id: seed::uuid_from(&mut id_rng),
        home_tenant_id: tenants[0].id.clone(),
        header_secret: hex::encode(rand::random::<[u8; 16]>()),
    };
    let issuer = format!("{}{}/v2.0", base_url, identity.home_tenant_id);
    for t in &tenants {
        t.app
            .federations
            .write()
            .push((issuer.clone(), identity.principal_id.clone()));
    }
    let state = Arc::new(SimState::new(
        tenants,
        config.knobs.clone(),
        auth::tokens::TokenSigner::new(config.seed),
        base_url,
        http_base_url,
        identity,
    ));
    let router = router(Arc::clone(&state));
    let _ = state.router.set(router.clone());

    // App certificates (RSA) are generated lazily, on first use (Key Vault read or client assertion), so start-up
    // stays fast and test runs that never need them never pay for RSA key generation.

    let (shutdown, rx) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&material.server_config));
    let tasks = vec![
        tokio::spawn(server::serve(
            https,
            Some(acceptor),
            router.clone(),
            rx.clone(),
        )),
        tokio::spawn(server::serve(
            http,
            None,
            msi_router(Arc::clone(&state)),
            rx,
        )),
    ];
    Ok(SimHandle {
        inner: Arc::new(Running {
            state,
            ca_pem_path,
            shutdown,
            tasks: parking_lot::Mutex::new(tasks),
            _state_dir: state_dir,
        }),
    })
}

fn build_tenant(seed: u64, index: usize, spec: &TenantSeed) -> Tenant {
    let generated = seed::generate(seed, index, spec);
    let mut dir = Directory::default();
    for u in generated.users {
        dir.insert_user(u, 0);
    }
    for g in generated.groups {
        dir.insert_group(g, 0);
    }
    let tenant = Tenant {
        id: generated.tenant_id,
        name: spec.name.clone(),
        initial_domain: format!("{}.onmicrosoft.com", spec.name),
        mail_domain: format!("{}.example", spec.name),
        app: AppRegistration {
            client_id: generated.client_id,
            client_secret: generated.client_secret,
            certificate: tokio::sync::OnceCell::new(),
            permissions: RwLock::new(
                DEFAULT_PERMISSIONS
                    .iter()
                    .map(|p| (*p).to_string())
                    .collect(),
            ),
            federations: RwLock::new(Vec::new()),
            cert_seed: seed ^ (index as u64 + 17),
            mailbox_scope: Default::default(),
        },
        dir: RwLock::new(dir),
        mailboxes: RwLock::new(Default::default()),
        delegated: Default::default(),
    };
    if spec.user_contacts_per_mailbox > 0 {
        control::seed_user_made_contacts(&tenant, spec.user_contacts_per_mailbox);
    }
    tenant
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .merge(auth::login::routes())
        .merge(graph::routes())
        .merge(exchange::routes())
        .merge(keyvault::routes())
        .merge(control::http::routes())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            server::pipeline,
        ))
        .with_state(state)
}

fn msi_router(state: Arc<SimState>) -> Router {
    auth::msi::routes()
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            server::pipeline,
        ))
        .with_state(state)
}
