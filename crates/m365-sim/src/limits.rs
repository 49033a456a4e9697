//! Microsoft's throttling, reproduced: Outlook's 4 concurrent requests and 10,000 requests per 10 minutes per
//! (app, mailbox); the directory write budget per (app, tenant); invitations per tenant; optional Exchange budgets (sliding 10 s, fixed windows, concurrency).
//! Windows are sliding (ten buckets per window), the stricter reading of "N per period".

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// A request refused by a limit, with the seconds the client should wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throttled {
    pub(crate) retry_after_secs: u64,
}

/// Counts events in a sliding window made of ten buckets.
#[derive(Default)]
pub(crate) struct SlidingWindow {
    buckets: VecDeque<(i64, u32)>,
}

impl SlidingWindow {
    /// Admits one event at `now_ms` if fewer than `limit` happened in the last `window_ms`.
    pub(crate) fn try_admit(
        &mut self,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<(), Throttled> {
        let bucket_ms = (window_ms / 10).max(1);
        while self
            .buckets
            .front()
            .is_some_and(|(start, _)| *start + window_ms <= now_ms)
        {
            self.buckets.pop_front();
        }
        let used: u32 = self.buckets.iter().map(|(_, n)| *n).sum();
        if used >= limit {
            let oldest = self
                .buckets
                .front()
                .map(|(start, _)| *start)
                .unwrap_or(now_ms);
            let wait_ms = (oldest + window_ms - now_ms).max(1);
            return Err(Throttled {
                retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1),
            });
        }
        let bucket_start = now_ms - now_ms.rem_euclid(bucket_ms);
        match self.buckets.back_mut() {
            Some((start, n)) if *start == bucket_start => *n += 1,
            _ => self.buckets.push_back((bucket_start, 1)),
        }
        Ok(())
    }
}

#[derive(Default)]
struct MailboxSlot {
    in_flight: usize,
    peak: usize,
    window: SlidingWindow,
    throttled: u64,
}

/// Observed load on one mailbox for one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MailboxLoad {
    pub app_id: String,
    pub mailbox: String,
    pub peak_concurrency: usize,
    pub in_flight: usize,
    pub throttled: u64,
}

/// A fixed window: started by the first served event after the previous window ended.
#[derive(Clone, Copy, Default)]
struct FixedWindow {
    start_ms: i64,
    served: u32,
}

#[derive(Default)]
pub(crate) struct Limits {
    mailboxes: Mutex<HashMap<(String, String), MailboxSlot>>,
    windows: Mutex<HashMap<(&'static str, String), SlidingWindow>>,
    fixed: Mutex<HashMap<(&'static str, String), FixedWindow>>,
    in_flight: Mutex<HashMap<(&'static str, String), usize>>,
}

/// Held while a request limited by concurrency runs; frees its slot when dropped.
pub(crate) struct ConcurrencyPermit {
    limits: Arc<Limits>,
    key: (&'static str, String),
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        let mut table = self.limits.in_flight.lock();
        if let Some(n) = table.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(&self.key);
            }
        }
    }
}

/// Held while an Outlook request runs; frees its concurrency slot when dropped.
pub(crate) struct MailboxPermit {
    limits: Arc<Limits>,
    key: (String, String),
}

impl Drop for MailboxPermit {
    fn drop(&mut self) {
        if let Some(slot) = self.limits.mailboxes.lock().get_mut(&self.key) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }
}

impl Limits {
    pub(crate) fn acquire_mailbox(
        self: &Arc<Self>,
        app_id: &str,
        mailbox_id: &str,
        now_ms: i64,
        max_concurrent: usize,
        per_10_min: u32,
        retry_after_secs: u64,
    ) -> Result<MailboxPermit, Throttled> {
        let key = (app_id.to_string(), mailbox_id.to_string());
        let mut table = self.mailboxes.lock();
        let slot = table.entry(key.clone()).or_default();
        if slot.in_flight >= max_concurrent {
            slot.throttled += 1;
            return Err(Throttled { retry_after_secs });
        }
        if let Err(t) = slot.window.try_admit(now_ms, 600_000, per_10_min) {
            slot.throttled += 1;
            return Err(t);
        }
        slot.in_flight += 1;
        slot.peak = slot.peak.max(slot.in_flight);
        Ok(MailboxPermit {
            limits: Arc::clone(self),
            key,
        })
    }

    /// A budget of `limit` events per `window_ms` under `(kind, key)`.
    pub(crate) fn admit(
        &self,
        kind: &'static str,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<(), Throttled> {
        if limit == 0 {
            return Ok(());
        }
        let mut windows = self.windows.lock();
        windows
            .entry((kind, key.to_string()))
            .or_default()
            .try_admit(now_ms, window_ms, limit)
    }

    /// At most `limit` events per fixed window of `window_ms` under `(kind, key)`: the first event admitted after a
    /// window has ended starts the next one; refused events never do. `limit` 0 = unlimited.
    pub(crate) fn admit_fixed(
        &self,
        kind: &'static str,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        limit: u32,
    ) -> Result<(), Throttled> {
        if limit == 0 {
            return Ok(());
        }
        let mut table = self.fixed.lock();
        let w = table.entry((kind, key.to_string())).or_default();
        if w.served == 0 || now_ms >= w.start_ms + window_ms {
            *w = FixedWindow {
                start_ms: now_ms,
                served: 1,
            };
            return Ok(());
        }
        if w.served < limit {
            w.served += 1;
            return Ok(());
        }
        let wait_ms = (w.start_ms + window_ms - now_ms).max(1);
        Err(Throttled {
            retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1),
        })
    }

    /// A slot among at most `max` concurrent requests under `(kind, key)` (0 = unlimited).
    pub(crate) fn acquire_concurrent(
        self: &Arc<Self>,
        kind: &'static str,
        key: &str,
        max: usize,
        retry_after_secs: u64,
    ) -> Result<Option<ConcurrencyPermit>, Throttled> {
        if max == 0 {
            return Ok(None);
        }
        let key = (kind, key.to_string());
        let mut table = self.in_flight.lock();
        let n = table.entry(key.clone()).or_default();
        if *n >= max {
            return Err(Throttled { retry_after_secs });
        }
        *n += 1;
        Ok(Some(ConcurrencyPermit {
            limits: Arc::clone(self),
            key,
        }))
    }

    pub(crate) fn mailbox_loads(&self) -> Vec<MailboxLoad> {
        let table = self.mailboxes.lock();
        let mut loads: Vec<MailboxLoad> = table
            .iter()
            .map(|((app, mailbox), slot)| MailboxLoad {
                app_id: app.clone(),
                mailbox: mailbox.clone(),
                peak_concurrency: slot.peak,
                in_flight: slot.in_flight,
                throttled: slot.throttled,
            })
            .collect();
        loads.sort_by(|a, b| (&a.app_id, &a.mailbox).cmp(&(&b.app_id, &b.mailbox)));
        loads
    }

    pub(crate) fn reset(&self) {
        let mut table = self.mailboxes.lock();
        table.retain(|_, slot| slot.in_flight > 0);
        for slot in table.values_mut() {
            slot.peak = slot.in_flight;
            slot.throttled = 0;
            slot.window = SlidingWindow::default();
        }
        self.windows.lock().clear();
        self.fixed.lock().clear();
    }
}
