//! The simulator's shared state: tenants (looked up by short name, GUID or domain), clock, knobs, faults, counters,
//! limits and the token signer. Locks are per tenant (directory) and per mailbox; none is held across an await.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::Router;
use parking_lot::RwLock;

use crate::auth::tokens::TokenSigner;
use crate::clock::SimClock;
use crate::graph::budget::DirectoryBudget;
use crate::knobs::Knobs;
use crate::limits::Limits;
use crate::metrics::{Counters, FaultTable};
use crate::tenant::Tenant;

/// The function app's (user-assigned) managed identity, served on the plain-HTTP listener.
pub(crate) struct ManagedIdentity {
    pub(crate) client_id: String,
    pub(crate) principal_id: String,
    pub(crate) home_tenant_id: String,
    pub(crate) header_secret: String,
}

pub(crate) struct SimState {
    pub(crate) tenants: Vec<Arc<Tenant>>,
    by_key: HashMap<String, Arc<Tenant>>,
    pub(crate) clock: SimClock,
    pub(crate) knobs: RwLock<Knobs>,
    pub(crate) faults: FaultTable,
    pub(crate) counters: Counters,
    pub(crate) limits: Arc<Limits>,
    /// Directory resource units spent per (app, tenant) (knob `directory_budget`).
    pub(crate) directory_budget: DirectoryBudget,
    /// Graph requests per app across all tenants (knob `graph_app_requests_per_10_s`).
    pub(crate) app_budget: crate::graph::app_budget::AppBudget,
    pub(crate) signer: TokenSigner,
    pub(crate) base_url: url::Url,
    pub(crate) http_base_url: url::Url,
    pub(crate) identity: ManagedIdentity,
    /// The full router, for `$batch` to dispatch inner requests through the same middleware.
    pub(crate) router: OnceLock<Router>,
    /// Change-notification subscriptions and their delivery queue.
    pub(crate) subscriptions: crate::graph::subscriptions::Subscriptions,
    /// Key Vault secrets written with `PUT /secrets/{name}`: every version, oldest first, by lowercase name.
    pub(crate) vault_secrets: crate::keyvault::WrittenSecrets,
}

impl SimState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        tenants: Vec<Arc<Tenant>>,
        knobs: Knobs,
        signer: TokenSigner,
        base_url: url::Url,
        http_base_url: url::Url,
        identity: ManagedIdentity,
    ) -> Self {
        let mut by_key = HashMap::new();
        for t in &tenants {
            for key in [&t.name, &t.id, &t.initial_domain, &t.mail_domain] {
                by_key.insert(key.to_ascii_lowercase(), Arc::clone(t));
            }
        }
        SimState {
            tenants,
            by_key,
            clock: SimClock::default(),
            knobs: RwLock::new(knobs),
            faults: FaultTable::default(),
            counters: Counters::default(),
            limits: Arc::new(Limits::default()),
            directory_budget: DirectoryBudget::default(),
            app_budget: Default::default(),
            signer,
            base_url,
            http_base_url,
            identity,
            router: OnceLock::new(),
            subscriptions: Default::default(),
            vault_secrets: Default::default(),
        }
    }

    /// A tenant by short name, GUID, initial domain or mail domain (case-insensitive).
    pub(crate) fn tenant(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_key.get(&key.to_ascii_lowercase())
    }

    pub(crate) fn knobs(&self) -> Knobs {
        self.knobs.read().clone()
    }

    /// The absolute URL of a path on the HTTPS listener.
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            path_and_query
        )
    }
}
