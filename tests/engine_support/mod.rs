//! Test support for the engine's end-to-end tests: m365-sim started in-process, a galbridge configuration pointing
//! every tenant at it, and the production connector over it (the same HTTP client, TLS, retries and limits as in
//! Azure; the simulator's CA and client secrets handed over in process).

#![allow(dead_code)]

#[path = "../support/exchange_errors.rs"]
mod exchange_errors;

use std::sync::Arc;

use galbridge::config::{Config, NamedTenant};
use galbridge::engine::adapters::m365::M365Connector;
use galbridge::engine::adapters::simulated::sim_connector;
use galbridge::engine::service::{Connector, EngineService};
use galbridge::state::{FileStore, StateStore};
use m365_sim::{SimConfig, SimHandle, TenantSeed};

/// A running simulator, its state directory and the engine over it.
pub struct World {
    pub sim: SimHandle,
    pub state_dir: tempfile::TempDir,
    pub service: EngineService,
    pub connector: Arc<M365Connector>,
    pub config: Config,
}

impl World {
    /// The production Graph client to one simulated tenant (as the engine builds it).
    pub async fn graph(&self, tenant: &str) -> galbridge::m365::GraphClient {
        let named = NamedTenant {
            name: tenant.to_owned(),
            tenant: self
                .config
                .tenant(tenant)
                .expect("configured tenant")
                .clone(),
        };
        self.connector.graph(&named).await.expect("graph client")
    }
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
    world_over(seeds, links_toml, |store| store).await
}

/// [`world`], with the engine's file store wrapped by `wrap` (e.g. to count what the engine reads).
pub async fn world_over(
    seeds: &[(&str, usize)],
    links_toml: &str,
    wrap: impl FnOnce(Arc<dyn StateStore>) -> Arc<dyn StateStore>,
) -> World {
    let sim = m365_sim::start(SimConfig {
        tenants: seeds
            .iter()
            .map(|(name, users)| TenantSeed::new(name, *users))
            .collect(),
        knobs: exchange_errors::knobs(),
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
    let connector = Arc::new(sim_connector(&sim, &config).expect("simulator reachable"));
    let store = FileStore::open(state_dir.path()).expect("file store");
    let service = EngineService::new(&config, wrap(Arc::new(store)), connector.clone());
    World {
        sim,
        state_dir,
        service,
        connector,
        config,
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
