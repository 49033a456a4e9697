//! Adaptive concurrency limits (AIMD): how many requests may be in flight towards one tenant or one mailbox.
//!
//! The limit starts at its maximum, halves when the service throttles (429/503), and grows back by one unit per
//! limit's worth of successes (additive increase), never above the maximum and never below one. Outlook allows at most
//! 4 concurrent requests per app per mailbox (docs/microsoft-facts.md §4), so mailbox limiters are built with a maximum of 4;
//! [`LimiterSet`] hands out one limiter per key (tenant id, mailbox id) on demand.
//!
//! Acquisition is weighted: a `$batch` to one mailbox may take up to 4 units at once, because Outlook runs up to 4 of a
//! batch's inner requests concurrently. A request heavier than the current limit still proceeds once nothing else of
//! the key is in flight, so nothing starves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The shared state of one key's limit.
#[derive(Debug)]
struct LimiterState {
    /// The current limit, fractional so additive increase can add `1/limit` per success.
    limit: f64,
    in_flight: u32,
    last_decrease: Option<Instant>,
    /// The lowest limit reached so far (for reports and tests).
    lowest_limit: f64,
}

#[derive(Debug)]
struct LimiterInner {
    max: u32,
    decrease_cooldown: Duration,
    state: Mutex<LimiterState>,
    released: Notify,
}

/// An AIMD concurrency limiter. Cheap to clone (all clones share the limit).
#[derive(Debug, Clone)]
pub struct AdaptiveLimiter {
    inner: Arc<LimiterInner>,
}

/// Units held by one request; released on drop. Report the outcome with [`LimiterPermit::throttled`] or
/// [`LimiterPermit::succeeded`] so the limit adapts (a permit dropped without a report changes nothing).
#[derive(Debug)]
pub struct LimiterPermit {
    limiter: AdaptiveLimiter,
    weight: u32,
}

impl AdaptiveLimiter {
    /// A limiter allowing up to `max` units in flight (at least 1). Throttling halves the limit at most once per
    /// `decrease_cooldown`, so one burst of 429s on many in-flight requests counts as one congestion signal.
    pub fn new(max: u32, decrease_cooldown: Duration) -> Self {
        let max = max.max(1);
        Self {
            inner: Arc::new(LimiterInner {
                max,
                decrease_cooldown,
                state: Mutex::new(LimiterState {
                    limit: f64::from(max),
                    in_flight: 0,
                    last_decrease: None,
                    lowest_limit: f64::from(max),
                }),
                released: Notify::new(),
            }),
        }
    }

    /// The per-mailbox limiter Outlook's rules call for: 4 concurrent requests.
    pub fn for_mailbox() -> Self {
        Self::new(4, Duration::from_secs(1))
    }

    fn state(&self) -> MutexGuard<'_, LimiterState> {
        // A poisoned lock only means another task panicked while holding it; the counters are still meaningful.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `weight` units fit under the current limit (weight is clamped to the maximum).
    pub async fn acquire(&self, weight: u32) -> LimiterPermit {
        let weight = weight.clamp(1, self.inner.max);
        loop {
            let notified = self.inner.released.notified();
            tokio::pin!(notified);
            // Register interest before checking, so a release between the check and the await is not lost.
            notified.as_mut().enable();
            {
                let mut state = self.state();
                let allowed = state.limit.floor().max(1.0);
                if state.in_flight == 0 || f64::from(state.in_flight + weight) <= allowed {
                    state.in_flight += weight;
                    return LimiterPermit {
                        limiter: self.clone(),
                        weight,
                    };
                }
            }
            notified.await;
        }
    }

    /// The current limit, rounded down (what may be in flight right now).
    pub fn current_limit(&self) -> u32 {
        // The limit is kept within 1..=max, so the cast cannot truncate meaningfully.
        self.state().limit.floor() as u32
    }

    /// The lowest limit this limiter has shrunk to.
    pub fn lowest_limit(&self) -> u32 {
        self.state().lowest_limit.floor() as u32
    }

    /// Units in flight right now.
    pub fn in_flight(&self) -> u32 {
        self.state().in_flight
    }

    /// The service throttled a request of this key: halve the limit (once per cooldown).
    pub fn record_throttle(&self) {
        let mut state = self.state();
        let now = Instant::now();
        let cooled_down = state
            .last_decrease
            .is_none_or(|at| now.duration_since(at) >= self.inner.decrease_cooldown);
        if cooled_down {
            state.limit = (state.limit / 2.0).max(1.0);
            state.lowest_limit = state.lowest_limit.min(state.limit);
            state.last_decrease = Some(now);
        }
    }

    /// A request of this key succeeded: grow the limit by `1/limit` (one unit per round of successes).
    pub fn record_success(&self) {
        let mut state = self.state();
        let max = f64::from(self.inner.max);
        if state.limit < max {
            state.limit = (state.limit + 1.0 / state.limit).min(max);
        }
    }

    fn release(&self, weight: u32) {
        {
            let mut state = self.state();
            state.in_flight = state.in_flight.saturating_sub(weight);
        }
        self.inner.released.notify_waiters();
    }
}

impl LimiterPermit {
    /// The request was throttled (429/503): shrink the limit.
    pub fn throttled(&self) {
        self.limiter.record_throttle();
    }

    /// The request succeeded: let the limit grow back.
    pub fn succeeded(&self) {
        self.limiter.record_success();
    }

    /// Units this permit holds.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

impl Drop for LimiterPermit {
    fn drop(&mut self) {
        self.limiter.release(self.weight);
    }
}

/// One [`AdaptiveLimiter`] per key (mailbox id, tenant id), created on first use with the same maximum.
#[derive(Debug, Clone)]
pub struct LimiterSet {
    max: u32,
    decrease_cooldown: Duration,
    limiters: Arc<Mutex<HashMap<String, AdaptiveLimiter>>>,
}

impl LimiterSet {
    /// Limiters of at most `max` units each.
    pub fn new(max: u32, decrease_cooldown: Duration) -> Self {
        Self {
            max,
            decrease_cooldown,
            limiters: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Outlook's per-mailbox rule: 4 concurrent requests per (app, mailbox).
    pub fn per_mailbox() -> Self {
        Self::new(4, Duration::from_secs(1))
    }

    /// The limiter of `key`, created if new.
    pub fn get(&self, key: &str) -> AdaptiveLimiter {
        let mut limiters = self
            .limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        limiters
            .entry(key.to_ascii_lowercase())
            .or_insert_with(|| AdaptiveLimiter::new(self.max, self.decrease_cooldown))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn never_more_in_flight_than_the_limit() {
        let limiter = AdaptiveLimiter::new(4, Duration::from_secs(1));
        let peak = Arc::new(AtomicU32::new(0));
        let current = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (limiter, peak, current) = (limiter.clone(), peak.clone(), current.clone());
            tasks.push(tokio::spawn(async move {
                let permit = limiter.acquire(1).await;
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                current.fetch_sub(1, Ordering::SeqCst);
                permit.succeeded();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test]
    async fn throttling_halves_and_successes_grow_back() {
        let limiter = AdaptiveLimiter::new(8, Duration::ZERO);
        limiter.record_throttle();
        assert_eq!(limiter.current_limit(), 4);
        limiter.record_throttle();
        limiter.record_throttle();
        limiter.record_throttle();
        assert_eq!(limiter.current_limit(), 1, "never below one");
        for _ in 0..100 {
            limiter.record_success();
        }
        assert_eq!(
            limiter.current_limit(),
            8,
            "grows back to the maximum, not beyond"
        );
        assert_eq!(limiter.lowest_limit(), 1);
    }

    #[tokio::test]
    async fn one_burst_of_429s_counts_once_within_the_cooldown() {
        let limiter = AdaptiveLimiter::new(8, Duration::from_secs(60));
        for _ in 0..5 {
            limiter.record_throttle();
        }
        assert_eq!(limiter.current_limit(), 4);
    }

    #[tokio::test]
    async fn a_heavy_request_waits_for_room_then_proceeds() {
        let limiter = AdaptiveLimiter::new(4, Duration::from_secs(1));
        let small = limiter.acquire(1).await;
        let heavy = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire(4).await.weight() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!heavy.is_finished(), "4 units do not fit beside 1");
        drop(small);
        assert_eq!(heavy.await.unwrap(), 4);
    }

    #[test]
    fn limiter_set_shares_one_limiter_per_key_case_insensitively() {
        let set = LimiterSet::per_mailbox();
        set.get("Ada@Northern.example").record_throttle();
        assert_eq!(set.get("ada@northern.example").current_limit(), 2);
        assert_eq!(set.get("bob@northern.example").current_limit(), 4);
    }
}
