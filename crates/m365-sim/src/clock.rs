//! The simulator's clock: wall time plus an offset that tests move forward (token expiry, delta token lifetime,
//! replication delay, rate-limit windows all read this clock, never `Utc::now()` directly).

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

#[derive(Default)]
pub(crate) struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Now as Exchange and Graph write timestamps: `yyyy-MM-ddTHH:mm:ssZ`.
    pub(crate) fn stamp(&self) -> String {
        self.now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    pub(crate) fn now_secs(&self) -> i64 {
        self.now().timestamp()
    }

    pub(crate) fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}
