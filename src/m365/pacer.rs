//! Graph's global limit, kept on our side: 130,000 requests per 10 seconds per app across all tenants
//! (docs/microsoft-facts.md §4). Every Graph request of one app registration (client id) in this process goes through that
//! app's [`AppPacer`]; each inner request of a `$batch` counts, as Graph evaluates them one by one.
//!
//! The pacer is a GCRA (generic cell rate algorithm): a steady rate plus a burst allowance, chosen so that no 10 s
//! window can exceed the limit: burst + rate × 10 s = 130,000. Requests reserve their slot in arrival order and sleep
//! until it comes, so a run that could go faster (many mailboxes in flight, short latencies) settles at the limit
//! instead of collecting 429s from the whole tenant's traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
        static PACERS: OnceLock<Mutex<HashMap<String, Arc<AppPacer>>>> = OnceLock::new();
        let pacers = PACERS.get_or_init(Default::default);
        let mut pacers = pacers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pacers
            .entry(client_id.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(Self::new(GRAPH_REQUESTS_PER_10_SECONDS)))
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

    /// Waits for the slot of `requests` requests (returns at once while the burst allowance lasts).
    pub async fn pace(&self, requests: u32) {
        let wait = self.reserve(requests, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
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
}
