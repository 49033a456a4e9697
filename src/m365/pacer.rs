//! Graph's global limit, kept on our side: 130,000 requests per 10 seconds per app across all tenants
//! (docs/microsoft-facts.md §4). Every Graph request of one app registration (client id) in this process goes through that
//! app's [`AppPacer`]; each inner request of a `$batch` counts, as Graph evaluates them one by one.
//!
//! The pacer is a GCRA (generic cell rate algorithm): a steady rate plus a burst allowance, chosen so that no 10 s
//! window can exceed the limit: burst + rate × 10 s = 130,000. Requests reserve their slot in arrival order and sleep
//! until it comes, so a run that could go faster (many mailboxes in flight, short latencies) settles at the limit
//! instead of collecting 429s from the whole tenant's traffic.
//!
//! The limit is per app, not per process: when several processes share one app registration (Functions instances
//! working on the shards of one phones run, or a CLI beside the function app), [`SharedBudget`] is the layer above
//! the GCRA. It claims *grants* of tokens from a budget row in the state store ([`crate::state::budget`]) and spends
//! them locally, so the sum over every process stays under the limit without a state round trip per request: one
//! claim per 500 ms slot while busy, sized to the process's recent rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::state::{BudgetRule, StateStore};

/// Graph: 130,000 requests per 10 s per app.
pub const GRAPH_REQUESTS_PER_10_SECONDS: f64 = 130_000.0;
/// The share of the limit taken as an instant burst; the rest is the steady rate.
const BURST_REQUESTS: f64 = 10_000.0;

/// A request-rate pacer for one app. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AppPacer {
    /// Time one request "costs" at the steady rate.
    interval: Duration,
    /// How far ahead of now reservations may run before a caller waits.
    burst: Duration,
    /// The theoretical arrival time of the next request (GCRA's TAT).
    next: Mutex<Option<Instant>>,
}

impl AppPacer {
    /// Paces to `per_10_seconds` requests per 10 s (burst included).
    pub fn new(per_10_seconds: f64) -> Self {
        let burst_requests = BURST_REQUESTS.min(per_10_seconds / 2.0);
        let rate = ((per_10_seconds - burst_requests) / 10.0).max(1.0);
        Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            burst: Duration::from_secs_f64(burst_requests / rate),
            next: Mutex::new(None),
        }
    }

    /// The pacer shared by every Graph client of `client_id` in this process.
    pub fn for_app(client_id: &str) -> Arc<Self> {
        Self::for_app_with_limit(client_id, GRAPH_REQUESTS_PER_10_SECONDS)
    }

    /// [`AppPacer::for_app`] with the limit `[service] graph_requests_per_10s` sets (the first caller's limit wins).
    pub fn for_app_with_limit(client_id: &str, per_10_seconds: f64) -> Arc<Self> {
        static PACERS: OnceLock<Mutex<HashMap<String, Arc<AppPacer>>>> = OnceLock::new();
        let pacers = PACERS.get_or_init(Default::default);
        let mut pacers = pacers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pacers
            .entry(client_id.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(Self::new(per_10_seconds)))
            .clone()
    }

    /// How long the caller must wait before sending `requests` requests; reserves their slot.
    fn reserve(&self, requests: u32, now: Instant) -> Duration {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = next.map_or(now, |next| next.max(now));
        let end = start + self.interval * requests;
        *next = Some(end);
        end.saturating_duration_since(now)
            .saturating_sub(self.burst)
    }

    /// How many more requests this pacer would let out within `within` from now (after what is reserved already).
    pub fn capacity_within(&self, within: Duration) -> u32 {
        let now = Instant::now();
        let next = *self
            .next
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = next.map_or(now, |next| next.max(now));
        let room = (now + within + self.burst).saturating_duration_since(start);
        let requests = room.as_secs_f64() / self.interval.as_secs_f64();
        if requests >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            requests as u32
        }
    }

    /// Waits for the slot of `requests` requests (returns at once while the burst allowance lasts).
    pub async fn pace(&self, requests: u32) {
        let wait = self.reserve(requests, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Pacing applied to each attempt of a request right before it is sent ([`super::http::ApiRequest::paced`]).
#[async_trait::async_trait]
pub trait RequestPacer: Send + Sync + std::fmt::Debug {
    /// Waits until `requests` more requests may go out.
    async fn pace(&self, requests: u32);
}

/// One app's Graph pacing: this process's GCRA, then, when the state store keeps one, the budget shared by every
/// process of the deployment.
#[derive(Debug)]
pub struct GraphAppPacing {
    pub local: Arc<AppPacer>,
    pub shared: Option<Arc<SharedBudget>>,
}

#[async_trait::async_trait]
impl RequestPacer for GraphAppPacing {
    async fn pace(&self, requests: u32) {
        self.local.pace(requests).await;
        if let Some(shared) = &self.shared {
            shared.take(requests, &self.local).await;
        }
    }
}

/// The smallest grant a process claims, at Graph's limit; a small limit claims less (a sixteenth of its share of a
/// slot), since unspent tokens are lost to every process.
const MIN_GRANT: u32 = 16;

/// One app's request budget shared by every process of a deployment through the state store. Cheap to share.
pub struct SharedBudget {
    store: Arc<dyn StateStore>,
    key: String,
    rule: BudgetRule,
    local: tokio::sync::Mutex<LocalGrant>,
    claims: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudget")
            .field("key", &self.key)
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

/// What this process holds of the current slot's budget.
#[derive(Debug, Default)]
struct LocalGrant {
    left: u32,
    spend_by: Option<DateTime<Utc>>,
    /// The slot being counted, and the tokens spent in it and in the one before (to size the next claim).
    slot: i64,
    spent_this_slot: u32,
    spent_last_slot: u32,
    /// When the last warning about an unreachable store was logged.
    warned_at: Option<Instant>,
}

impl SharedBudget {
    /// The budget of app `client_id` (Graph: `limit` requests per 10 s across every process sharing `store`).
    pub fn graph(store: Arc<dyn StateStore>, client_id: &str, limit: u32) -> Self {
        Self {
            store,
            key: format!("graph|{}", client_id.to_ascii_lowercase()),
            rule: BudgetRule::per_10_seconds(limit),
            local: tokio::sync::Mutex::new(LocalGrant::default()),
            claims: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many claims this process made (each one state round trip).
    pub fn claims(&self) -> u64 {
        self.claims.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `requests` tokens are this process's, claiming from the shared budget when the local grant is
    /// spent or void; waits for the slot the budget names when the app's limit is reached. A store that cannot be
    /// reached delays requests (warned about once a minute); it never lets them past the limit.
    /// `local_pacer` is this process's pacer (already passed by this request).
    pub async fn take(&self, requests: u32, local_pacer: &AppPacer) {
        let requests = requests.clamp(1, self.rule.limit.max(1));
        let mut local = self.local.lock().await;
        loop {
            let now = Utc::now();
            let slot = self.rule.slot_of(now);
            if slot != local.slot {
                local.spent_last_slot = if slot == local.slot + 1 {
                    local.spent_this_slot
                } else {
                    0
                };
                local.spent_this_slot = 0;
                local.slot = slot;
            }
            let usable = local.spend_by.is_some_and(|spend_by| now < spend_by);
            if !usable {
                local.left = 0;
            }
            if local.left >= requests {
                local.left -= requests;
                local.spent_this_slot = local.spent_this_slot.saturating_add(requests);
                return;
            }
            // Enough for this slot at the rate of the last one plus a quarter, or as much as this slot already
            // spent when the process speeds up (so claims double); never more than this process's pacer lets out
            // before the slot ends, never less than the request itself. Unspent tokens are void at the slot's end
            // and count against every process, so a grant is sized to what this one will spend.
            let slot_left = (self.rule.slot_start(slot + 1) - now)
                .to_std()
                .unwrap_or_default();
            let sendable = requests.saturating_add(local_pacer.capacity_within(slot_left));
            let min_grant =
                (self.rule.limit / (self.rule.slots.saturating_add(2) * 16)).clamp(1, MIN_GRANT);
            let want = (local
                .spent_last_slot
                .saturating_add(local.spent_last_slot / 4))
            .max(local.spent_this_slot)
            .max(min_grant)
            .min(sendable)
            .max(requests)
            .min(self.rule.limit);
            self.claims
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self
                .store
                .take_budget(&self.key, want, requests, &self.rule, now)
                .await
            {
                Ok(grant) if grant.granted >= requests => {
                    // What is left of an earlier grant of the same slot stays usable beside the new one.
                    local.left = if usable { local.left } else { 0 } + grant.granted;
                    local.spend_by = Some(grant.spend_by);
                }
                Ok(grant) => {
                    let wait = (grant.retry_at - Utc::now()).to_std().unwrap_or_default();
                    tracing::debug!(
                        budget = %self.key,
                        used = grant.used,
                        wait_ms = wait.as_millis() as u64,
                        "the app's shared Graph budget is spent; waiting for the next slot with room"
                    );
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
                Err(error) => {
                    if local
                        .warned_at
                        .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                    {
                        tracing::warn!(
                            budget = %self.key,
                            %error,
                            "cannot claim from the shared Graph budget in the state store; Graph requests wait"
                        );
                        local.warned_at = Some(Instant::now());
                    }
                    let slot_ms = u64::try_from(self.rule.slot_ms()).unwrap_or(500);
                    tokio::time::sleep(Duration::from_millis(slot_ms)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ten_second_window_exceeds_the_limit() {
        let pacer = AppPacer::new(GRAPH_REQUESTS_PER_10_SECONDS);
        let start = Instant::now();
        // A client that sends a batch of 20 the moment it is allowed to: when does request 130,001 go out?
        let mut clock = start;
        let mut sent = 0u32;
        let mut sent_in_first_10s = 0u32;
        while sent < 200_000 {
            clock += pacer.reserve(20, clock);
            sent += 20;
            if clock < start + Duration::from_secs(10) {
                sent_in_first_10s += 20;
            }
        }
        assert!(sent_in_first_10s <= 130_000, "{sent_in_first_10s}");
        assert!(
            sent_in_first_10s >= 125_000,
            "the pacer wastes the budget: {sent_in_first_10s}"
        );
        // The steady state: 200,000 requests take at least (200,000 - burst) / 12,000 per second.
        let elapsed = clock - start;
        assert!(
            elapsed >= Duration::from_secs_f64(190_000.0 / 12_000.0) - Duration::from_millis(5),
            "{elapsed:?}"
        );
    }

    #[test]
    fn a_quiet_app_is_not_slowed_down() {
        let pacer = AppPacer::new(GRAPH_REQUESTS_PER_10_SECONDS);
        let now = Instant::now();
        for n in 0..400 {
            assert_eq!(pacer.reserve(20, now), Duration::ZERO, "batch {n}");
        }
    }

    #[test]
    fn apps_are_paced_apart_and_client_ids_ignore_case() {
        let a = AppPacer::for_app("11111111-1111-1111-1111-111111111111");
        let same = AppPacer::for_app(
            "11111111-1111-1111-1111-111111111111"
                .to_uppercase()
                .as_str(),
        );
        let b = AppPacer::for_app("22222222-2222-2222-2222-222222222222");
        assert!(Arc::ptr_eq(&a, &same));
        assert!(!Arc::ptr_eq(&a, &b));
    }

    /// A single process is not slowed by the shared layer: it claims a few grants per slot, never one per request.
    /// Prints the request rate with the process's pacer alone and with the shared budget (file store) above it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_process_keeps_its_rate_with_the_shared_budget() {
        const BATCHES: u32 = 4_000;
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn StateStore> =
            Arc::new(crate::state::FileStore::open(dir.path()).expect("file store"));
        let alone = AppPacer::new(GRAPH_REQUESTS_PER_10_SECONDS);
        let started = Instant::now();
        for _ in 0..BATCHES {
            alone.pace(20).await;
        }
        let without = started.elapsed();
        let paced = AppPacer::new(GRAPH_REQUESTS_PER_10_SECONDS);
        let shared = SharedBudget::graph(store, "11111111-1111-1111-1111-111111111111", 130_000);
        let started = Instant::now();
        let pacing = GraphAppPacing {
            local: Arc::new(paced),
            shared: Some(Arc::new(shared)),
        };
        for _ in 0..BATCHES {
            pacing.pace(20).await;
        }
        let shared = pacing.shared.as_ref().expect("shared");
        let with = started.elapsed();
        let requests = f64::from(BATCHES * 20);
        println!(
            "{requests} requests in batches of 20: {:.0}/s with the process's pacer alone ({without:?}), {:.0}/s with \
             the shared budget over a file store ({with:?}, {} claims); ratio {:.2}",
            requests / without.as_secs_f64(),
            requests / with.as_secs_f64(),
            shared.claims(),
            with.as_secs_f64() / without.as_secs_f64()
        );
        assert!(
            shared.claims() < u64::from(BATCHES) / 20,
            "{} claims for {BATCHES} batches",
            shared.claims()
        );
        assert!(
            with <= without + without / 5 + Duration::from_millis(300),
            "{with:?} against {without:?}"
        );
    }
}
