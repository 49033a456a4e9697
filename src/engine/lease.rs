//! The lease a run holds on its link while it runs: renewed every third of its lifetime, released by the run, and
//! never kept alive by a run that is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, Notify};

use crate::state::{Lease, StateError, StateStore};

/// A run's hold on its link: the lease (shared with its renewal), the flag the renewal raises when the lease is
/// lost, and the renewal itself. Every kind of run (sync, purge, of either target kind) takes it through `lifecycle::run_leased`.
pub(crate) struct HeldLease {
    pub(crate) lease: Arc<Mutex<Lease>>,
    pub(crate) cancelled: Arc<AtomicBool>,
    pub(crate) renewal: LeaseRenewal,
}

impl HeldLease {
    /// Takes the link's lease for `holder` and starts renewing it; a lease another run holds is
    /// [`StateError::LeaseHeld`] (the caller refuses the run, naming the holder).
    pub(crate) async fn acquire(
        store: &Arc<dyn StateStore>,
        link: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<Self, StateError> {
        let lease = store.acquire_lease(link, holder, ttl).await?;
        let lease = Arc::new(Mutex::new(lease));
        let cancelled = Arc::new(AtomicBool::new(false));
        let renewal = LeaseRenewal::start(store.clone(), lease.clone(), cancelled.clone(), ttl);
        Ok(HeldLease {
            lease,
            cancelled,
            renewal,
        })
    }
}

/// Keeps a run's lease alive: renews it every third of its lifetime until [`LeaseRenewal::finish`]. Finishing
/// waits for a renewal in flight, so the lease the run then releases is the current one (releasing a stale copy
/// would leave the link locked until expiry). Dropped without finishing (the run's future was dropped: a cancelled
/// request, a killed task), it stops renewing at once, so a dead run never holds the lease past one lifetime.
pub(crate) struct LeaseRenewal {
    stop: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseRenewal {
    pub(crate) fn start(
        store: Arc<dyn StateStore>,
        lease: Arc<Mutex<Lease>>,
        cancelled: Arc<AtomicBool>,
        ttl: chrono::Duration,
    ) -> Self {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(renew_lease(store, lease, cancelled, ttl, stop.clone()));
        LeaseRenewal {
            stop,
            task: Some(task),
        }
    }

    /// Stops renewing, after the renewal in flight (if any) has landed in the shared lease.
    pub(crate) async fn finish(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn renew_lease(
    store: Arc<dyn StateStore>,
    lease: Arc<Mutex<Lease>>,
    cancelled: Arc<AtomicBool>,
    ttl: chrono::Duration,
    stop: Arc<Notify>,
) {
    let every = (ttl / 3)
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(20))
        .max(std::time::Duration::from_millis(50));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.notified() => return,
        }
        let current = lease.lock().await.clone();
        match store.renew_lease(&current, ttl).await {
            Ok(renewed) => *lease.lock().await = renewed,
            Err(error) => {
                tracing::warn!(link = %current.link, error = %error, "Lease lost; stopping the run.");
                cancelled.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::testing::MemStore;
    use crate::state::StateError;

    const TTL_MS: i64 = 150;

    async fn held(store: &Arc<MemStore>) -> (Arc<Mutex<Lease>>, LeaseRenewal) {
        let ttl = chrono::Duration::milliseconds(TTL_MS);
        let lease = store.acquire_lease("link", "run", ttl).await.unwrap();
        let shared = Arc::new(Mutex::new(lease));
        let store: Arc<dyn StateStore> = store.clone();
        let renewal =
            LeaseRenewal::start(store, shared.clone(), Arc::new(AtomicBool::new(false)), ttl);
        (shared, renewal)
    }

    #[tokio::test]
    async fn finishing_waits_for_the_renewal_in_flight_so_the_release_frees_the_link() {
        let store = Arc::new(MemStore::default());
        // The store applies a renewal at once but its answer takes 100 ms: finishing in that window must not
        // leave the run holding a stale copy of the lease (its release would then miss, locking the link).
        store.answer_renewals_after(Duration::from_millis(100));
        let (shared, renewal) = held(&store).await;
        // Renewals start every 50 ms (a third of 150 ms): at 70 ms the first one is applied, its answer pending.
        tokio::time::sleep(Duration::from_millis(70)).await;
        renewal.finish().await;
        let current = shared.lock().await.clone();
        store.release_lease(&current).await.unwrap();
        store
            .acquire_lease("link", "next run", chrono::Duration::seconds(5))
            .await
            .expect("the released link is free at once");
    }

    #[tokio::test]
    async fn a_dropped_run_stops_renewing_and_its_lease_expires() {
        let store = Arc::new(MemStore::default());
        let (_shared, renewal) = held(&store).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            matches!(
                store
                    .acquire_lease("link", "other", chrono::Duration::seconds(5))
                    .await,
                Err(StateError::LeaseHeld { .. })
            ),
            "renewed while the run lives"
        );
        drop(renewal);
        tokio::time::sleep(Duration::from_millis(TTL_MS as u64 + 100)).await;
        store
            .acquire_lease("link", "other", chrono::Duration::seconds(5))
            .await
            .expect("nobody renews a dropped run's lease");
    }
}
