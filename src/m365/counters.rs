//! Request counters per Microsoft service, and the count of retries after throttling.
//!
//! Atomic and cheap: every request of every client increments one counter. The engine gives each run its own
//! [`RequestCounters`] (clients are re-bound with `with_counters`) and copies [`RequestCounters::requests`] and
//! [`RequestCounters::throttled_retries`] into the run report (`requests`, `throttled_retries`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The service a request went to; the names are the keys of the run report's `requests` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Microsoft Graph (`graph` in reports). A `$batch` counts once here; its inner requests count in `graph_batch_inner`.
    Graph,
    /// Exchange Online `InvokeCommand` (`exchange`).
    Exchange,
    /// Entra ID token endpoint (`login`).
    Login,
    /// Azure Key Vault (`key_vault`).
    KeyVault,
    /// The managed identity endpoint (`managed_identity`).
    ManagedIdentity,
}

impl Service {
    /// The report key of this service.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Graph => "graph",
            Service::Exchange => "exchange",
            Service::Login => "login",
            Service::KeyVault => "key_vault",
            Service::ManagedIdentity => "managed_identity",
        }
    }
}

/// Counters shared by the clients of one run (or of the whole process).
#[derive(Debug, Default)]
pub struct RequestCounters {
    graph: AtomicU64,
    graph_batch_inner: AtomicU64,
    exchange: AtomicU64,
    login: AtomicU64,
    key_vault: AtomicU64,
    managed_identity: AtomicU64,
    throttled_retries: AtomicU64,
}

impl RequestCounters {
    /// Fresh counters behind an `Arc`, ready to hand to clients.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn slot(&self, service: Service) -> &AtomicU64 {
        match service {
            Service::Graph => &self.graph,
            Service::Exchange => &self.exchange,
            Service::Login => &self.login,
            Service::KeyVault => &self.key_vault,
            Service::ManagedIdentity => &self.managed_identity,
        }
    }

    /// One request sent (every attempt counts: a retried request is two requests).
    pub fn count(&self, service: Service) {
        self.slot(service).fetch_add(1, Ordering::Relaxed);
    }

    /// `inner` requests carried by one `$batch` attempt.
    pub fn count_batch_inner(&self, inner: u64) {
        self.graph_batch_inner.fetch_add(inner, Ordering::Relaxed);
    }

    /// One request (or one inner batch request) retried after 429/503/504 or a transient Exchange error.
    pub fn count_throttled_retry(&self) {
        self.throttled_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent to `service` so far.
    pub fn get(&self, service: Service) -> u64 {
        self.slot(service).load(Ordering::Relaxed)
    }

    /// Inner requests sent inside `$batch` requests so far (retries included).
    pub fn batch_inner(&self) -> u64 {
        self.graph_batch_inner.load(Ordering::Relaxed)
    }

    /// Retries after throttling or transient errors so far.
    pub fn throttled_retries(&self) -> u64 {
        self.throttled_retries.load(Ordering::Relaxed)
    }

    /// The report's `requests` map: every service with at least one request (plus `graph_batch_inner` when batches ran).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        let services = [
            Service::Graph,
            Service::Exchange,
            Service::Login,
            Service::KeyVault,
            Service::ManagedIdentity,
        ];
        let mut map: BTreeMap<String, u64> = services
            .into_iter()
            .map(|service| (service.as_str().to_owned(), self.get(service)))
            .filter(|(_, count)| *count > 0)
            .collect();
        let inner = self.batch_inner();
        if inner > 0 {
            map.insert("graph_batch_inner".to_owned(), inner);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_map_lists_only_services_that_were_used() {
        let counters = RequestCounters::default();
        counters.count(Service::Graph);
        counters.count(Service::Graph);
        counters.count(Service::Login);
        counters.count_batch_inner(20);
        counters.count_throttled_retry();
        let map = counters.requests();
        assert_eq!(map.get("graph"), Some(&2));
        assert_eq!(map.get("login"), Some(&1));
        assert_eq!(map.get("graph_batch_inner"), Some(&20));
        assert!(!map.contains_key("exchange"));
        assert_eq!(counters.throttled_retries(), 1);
    }
}
