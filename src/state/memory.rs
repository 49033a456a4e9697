//! `MemoryStore`: the whole sync state in process memory, for fast engine tests (and `--dry-run` experiments).
//!
//! Same semantics as the real stores (it passes the same conformance suite): leases are compare-and-swap with a
//! generation counter as the ETag, object maps are per (link, scope), run records are capped. Nothing survives the
//! process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::Utc;

use super::{
    BudgetCounts, BudgetGrant, BudgetRule, Lease, LinkCheckpoint, ObjectRecord, RUN_RECORDS_KEPT,
    StateError, StateStore,
};
use crate::report::RunReport;

#[derive(Debug, Default)]
struct LinkState {
    lease: Option<Lease>,
    generation: u64,
    checkpoint: LinkCheckpoint,
    /// scope -> anchor -> record.
    objects: HashMap<String, BTreeMap<String, ObjectRecord>>,
    /// Newest first.
    runs: Vec<RunReport>,
}

/// In-memory [`StateStore`]. Cheap to create; share it with `Arc`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    links: Mutex<HashMap<String, LinkState>>,
    /// Shared request budgets by key.
    budgets: Mutex<HashMap<String, BudgetCounts>>,
    /// Unit tests: how long a lease renewal's answer takes *after* the store applied it (a response still on the
    /// wire).
    #[cfg(test)]
    renewal_answer_delay_ms: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unit tests: renewals are applied at once but answered `delay` later.
    #[cfg(test)]
    pub fn answer_renewals_after(&self, delay: std::time::Duration) {
        self.renewal_answer_delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Unit tests: the link-wide object records of `link`.
    #[cfg(test)]
    pub fn objects(&self, link: &str) -> Vec<ObjectRecord> {
        self.with_links(|links| {
            links
                .get(link)
                .and_then(|state| state.objects.get(""))
                .map(|records| records.values().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
    }

    fn with_links<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, LinkState>) -> T,
    ) -> Result<T, StateError> {
        // A poisoned lock means a panic in another test thread mid-update; the map itself is still consistent
        // (every update is a single assignment), so carry on with it.
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(&mut links))
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn acquire_lease(
        &self,
        link: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<Lease, StateError> {
        self.with_links(|links| {
            let state = links.entry(link.to_owned()).or_default();
            let now = Utc::now();
            if let Some(current) = &state.lease
                && current.until > now
            {
                return Err(StateError::LeaseHeld {
                    link: link.to_owned(),
                    holder: current.holder.clone(),
                    until: current.until,
                });
            }
            state.generation += 1;
            let lease = Lease {
                link: link.to_owned(),
                holder: holder.to_owned(),
                until: now + ttl,
                etag: state.generation.to_string(),
            };
            state.lease = Some(lease.clone());
            Ok(lease)
        })?
    }

    async fn renew_lease(&self, lease: &Lease, ttl: chrono::Duration) -> Result<Lease, StateError> {
        let renewed = self.with_links(|links| {
            let lost = || StateError::LeaseLost {
                link: lease.link.clone(),
            };
            let state = links.get_mut(&lease.link).ok_or_else(lost)?;
            match &state.lease {
                Some(current) if current.etag == lease.etag && current.holder == lease.holder => {}
                _ => return Err(lost()),
            }
            state.generation += 1;
            let renewed = Lease {
                until: Utc::now() + ttl,
                etag: state.generation.to_string(),
                ..lease.clone()
            };
            state.lease = Some(renewed.clone());
            Ok(renewed)
        })??;
        #[cfg(test)]
        {
            let delay = self
                .renewal_answer_delay_ms
                .load(std::sync::atomic::Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
        }
        Ok(renewed)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        self.with_links(|links| {
            if let Some(state) = links.get_mut(&lease.link)
                && state
                    .lease
                    .as_ref()
                    .is_some_and(|current| current.etag == lease.etag)
            {
                state.lease = None;
            }
        })
    }

    async fn current_lease(&self, link: &str) -> Result<Option<Lease>, StateError> {
        self.with_links(|links| {
            links
                .get(link)
                .and_then(|state| state.lease.clone())
                .filter(|lease| lease.until > Utc::now())
        })
    }

    async fn load_checkpoint(&self, link: &str) -> Result<LinkCheckpoint, StateError> {
        self.with_links(|links| {
            links
                .get(link)
                .map(|state| state.checkpoint.clone())
                .unwrap_or_default()
        })
    }

    async fn save_checkpoint(
        &self,
        link: &str,
        checkpoint: &LinkCheckpoint,
    ) -> Result<(), StateError> {
        self.with_links(|links| {
            links.entry(link.to_owned()).or_default().checkpoint = checkpoint.clone()
        })
    }

    async fn list_objects(&self, link: &str, scope: &str) -> Result<Vec<ObjectRecord>, StateError> {
        self.with_links(|links| {
            links
                .get(link)
                .and_then(|state| state.objects.get(scope))
                .map(|map| map.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn get_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<Vec<ObjectRecord>, StateError> {
        let wanted: BTreeSet<&str> = anchors.iter().map(String::as_str).collect();
        self.with_links(|links| {
            let Some(map) = links.get(link).and_then(|state| state.objects.get(scope)) else {
                return Vec::new();
            };
            wanted
                .into_iter()
                .filter_map(|anchor| map.get(anchor).cloned())
                .collect()
        })
    }

    async fn put_objects(
        &self,
        link: &str,
        scope: &str,
        records: &[ObjectRecord],
    ) -> Result<(), StateError> {
        if records.is_empty() {
            return Ok(());
        }
        self.with_links(|links| {
            let map = links
                .entry(link.to_owned())
                .or_default()
                .objects
                .entry(scope.to_owned())
                .or_default();
            for record in records {
                map.insert(record.anchor.clone(), record.clone());
            }
        })
    }

    async fn delete_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<(), StateError> {
        self.with_links(|links| {
            if let Some(state) = links.get_mut(link)
                && let Some(map) = state.objects.get_mut(scope)
            {
                for anchor in anchors {
                    map.remove(anchor);
                }
                if map.is_empty() {
                    state.objects.remove(scope);
                }
            }
        })
    }

    async fn list_scopes(&self, link: &str) -> Result<Vec<String>, StateError> {
        self.with_links(|links| {
            let mut scopes: Vec<String> = links
                .get(link)
                .map(|state| {
                    state
                        .objects
                        .iter()
                        .filter(|(scope, map)| !scope.is_empty() && !map.is_empty())
                        .map(|(scope, _)| scope.clone())
                        .collect()
                })
                .unwrap_or_default();
            scopes.sort();
            scopes
        })
    }

    async fn put_run_record(&self, report: &RunReport) -> Result<(), StateError> {
        self.with_links(|links| {
            let runs = &mut links.entry(report.link.clone()).or_default().runs;
            runs.retain(|existing| existing.run_id != report.run_id);
            runs.push(report.clone());
            sort_newest_first(runs);
            runs.truncate(RUN_RECORDS_KEPT);
        })
    }

    async fn list_run_records(
        &self,
        link: &str,
        limit: usize,
    ) -> Result<Vec<RunReport>, StateError> {
        self.with_links(|links| {
            links
                .get(link)
                .map(|state| state.runs.iter().take(limit).cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn delete_link(&self, link: &str) -> Result<(), StateError> {
        self.with_links(|links| {
            links.remove(link);
        })
    }

    async fn take_budget(
        &self,
        key: &str,
        want: u32,
        at_least: u32,
        rule: &BudgetRule,
        now: chrono::DateTime<Utc>,
    ) -> Result<BudgetGrant, StateError> {
        let mut budgets = self
            .budgets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(budgets
            .entry(key.to_owned())
            .or_default()
            .claim(want, at_least, rule, now))
    }
}

/// Newest `started_at` first; ties broken by run id (descending) so every store agrees on the order.
pub(crate) fn sort_newest_first(runs: &mut [RunReport]) {
    runs.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.run_id.cmp(&a.run_id))
    });
}
