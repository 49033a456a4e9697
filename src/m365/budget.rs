//! The run's time budget as the HTTP layer sees it, and the pause a service imposes with `Retry-After`.
//!
//! A run sets its deadline ([`within`]); every request sent while that future runs may retry throttling and transient
//! failures for as long as a retry can still finish before the deadline (instead of a fixed handful of attempts):
//! throttling slows galbridge down, it never makes it give up. Outside a run (validate, plan of a single request)
//! the retry policy's attempt count bounds retries instead.
//!
//! [`PauseGate`] makes "wait as told" hold for a whole client, not only for the request that was told: after a
//! `Retry-After`, no request of that client (one service of one tenant) is sent before the window ends.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `future` with `deadline` as the budget of every request it sends (tasks it spawns must call this again:
/// task-locals do not cross `tokio::spawn`).
pub async fn within<F: Future>(deadline: Instant, future: F) -> F::Output {
    DEADLINE.scope(deadline, future).await
}

/// The deadline of the run this task works for, if any.
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// True once the current run's deadline has passed (never outside a run).
pub fn exhausted() -> bool {
    deadline().is_some_and(|deadline| Instant::now() >= deadline)
}

/// Whether waiting `wait` from now still leaves the current run inside its budget (`None` outside a run).
pub fn allows_wait(wait: Duration) -> Option<bool> {
    deadline().map(|deadline| Instant::now() + wait < deadline)
}

/// A pause shared by every request of one client: [`PauseGate::pause_for`] closes it until a moment, and
/// [`PauseGate::wait`] sleeps until it is open. Extending only ever moves the end later. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PauseGate {
    until: Arc<Mutex<Option<Instant>>>,
}

impl PauseGate {
    /// A gate that is open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the gate for `wait` from now (or keeps a later end already set).
    pub fn pause_for(&self, wait: Duration) {
        let end = Instant::now() + wait;
        let mut until = self.lock();
        if until.is_none_or(|current| current < end) {
            *until = Some(end);
        }
    }

    /// When the gate opens again, if it is closed now.
    pub fn closed_until(&self) -> Option<Instant> {
        self.lock().filter(|until| *until > Instant::now())
    }

    /// Sleeps until the gate is open (re-checking, since another request may extend the pause meanwhile).
    pub async fn wait(&self) {
        while let Some(until) = self.closed_until() {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_deadline_is_seen_only_inside_its_scope() {
        assert_eq!(deadline(), None);
        assert!(!exhausted());
        let end = Instant::now() + Duration::from_secs(60);
        within(end, async {
            assert_eq!(deadline(), Some(end));
            assert_eq!(allows_wait(Duration::from_secs(1)), Some(true));
            assert_eq!(allows_wait(Duration::from_secs(61)), Some(false));
        })
        .await;
        let past = Instant::now() - Duration::from_millis(1);
        within(past, async { assert!(exhausted()) }).await;
    }

    #[tokio::test]
    async fn a_pause_holds_every_waiter_and_only_grows() {
        let gate = PauseGate::new();
        assert!(gate.closed_until().is_none());
        gate.pause_for(Duration::from_millis(120));
        gate.pause_for(Duration::from_millis(10));
        let started = Instant::now();
        let (a, b) = tokio::join!(gate.wait(), gate.wait());
        let _ = (a, b);
        assert!(
            started.elapsed() >= Duration::from_millis(110),
            "a shorter pause does not shorten a longer one: {:?}",
            started.elapsed()
        );
        assert!(gate.closed_until().is_none());
    }
}
