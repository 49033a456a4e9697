//! When and how long to wait before retrying a Microsoft request.
//!
//! Owns the retry policy (attempts, exponential backoff with jitter, `Retry-After` honouring), the parsing of
//! `Retry-After` (delta-seconds or an HTTP date, RFC 9110 §10.2.3), and the classification of which answers are worth
//! retrying: 429/503/504 everywhere (docs/microsoft-facts.md §4), plus Exchange's transient errors, which arrive as HTTP 400
//! or 5xx with the exception name in the body (docs/microsoft-facts.md §1).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// How a client retries throttled and transient failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts per request, the first one included (default 6).
    pub max_attempts: u32,
    /// First backoff step when the service gave no `Retry-After` (Graph SDK default: 3 s).
    pub base_delay: Duration,
    /// Longest backoff step (Graph SDK default: 180 s).
    pub max_delay: Duration,
    /// Longest wait a `Retry-After` header may impose; larger values are clamped. Tests shrink it to keep the suite fast
    /// while the simulator still sends realistic headers.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_secs(3),
            max_delay: Duration::from_secs(180),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Short backoff steps where the service gives no `Retry-After` (tests against the local simulator, whose
    /// faults would otherwise cost seconds each); a `Retry-After` is honoured exactly as in production.
    pub fn short_backoff() -> Self {
        Self {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            ..Self::default()
        }
    }

    /// The wait before attempt number `attempt + 1` (`attempt` counts from 1 for the first failed try).
    /// A `Retry-After` from the service wins (clamped to `max_retry_after`); otherwise exponential backoff with
    /// "equal jitter": half the exponential step for sure, the other half random, so waits never collapse to zero.
    pub fn delay_for(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let exponent = attempt.saturating_sub(1).min(20);
        let step = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = step / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = if jitter_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
        };
        half + jitter
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"5"`, also a fractional `"0.5"` some services send) or an HTTP date
/// (`"Wed, 21 Oct 2026 07:28:00 GMT"`). A date in the past means "now". Unparseable values are ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Some(Duration::from_secs_f64(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Statuses every Microsoft service uses for "slow down / try again" (docs/microsoft-facts.md §4).
pub fn is_throttling_status(status: u16) -> bool {
    matches!(status, 429 | 503 | 504)
}

/// Exception names that mark an Exchange `InvokeCommand` failure as transient. Exchange sends them as HTTP 400 or 5xx
/// with the name somewhere in the JSON error body (docs/microsoft-facts.md §1), so the body decides, not the status.
/// "Too many requests" is the text of a throttled command whose exception name is generic (seen with 429 and, in
/// some shapes, with 400) [unverified which statuses carry it].
pub const EXCHANGE_TRANSIENT_MARKERS: [&str; 5] = [
    "ServerBusyException",
    "TransientException",
    "BackendCommunicationException",
    "CmdletProxyNotAvailableFailure",
    "Too many requests",
];

/// True when an Exchange answer (status 400 or 5xx) names one of the transient exceptions.
pub fn is_exchange_transient(status: u16, body: &[u8]) -> bool {
    if status != 400 && !(500..600).contains(&status) {
        return false;
    }
    let text = String::from_utf8_lossy(body);
    EXCHANGE_TRANSIENT_MARKERS
        .iter()
        .any(|marker| text.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_fractions_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-10-21T07:27:50Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means retry now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_cap() {
        let policy = RetryPolicy::default();
        for attempt in 1..=10 {
            let step =
                Duration::from_secs(3 * (1u64 << (attempt - 1))).min(Duration::from_secs(180));
            let wait = policy.delay_for(attempt, None);
            assert!(
                wait >= step / 2 && wait <= step,
                "attempt {attempt}: {wait:?} vs step {step:?}"
            );
        }
    }

    #[test]
    fn retry_after_wins_over_backoff_but_is_clamped() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay_for(1, Some(Duration::from_secs(12))),
            Duration::from_secs(12)
        );
        assert_eq!(
            policy.delay_for(1, Some(Duration::from_secs(9999))),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn exchange_transient_errors_are_recognised_by_body_not_status() {
        let busy = br#"{"error":{"code":"InternalServerError","message":"|Microsoft.Exchange.Data.Storage.ServerBusyException|The server is busy."}}"#;
        assert!(is_exchange_transient(400, busy));
        assert!(is_exchange_transient(500, busy));
        assert!(!is_exchange_transient(404, busy), "404 is never transient");
        let proxy = br#"{"error":{"message":"ProxyAddressExistsException: already used"}}"#;
        assert!(!is_exchange_transient(400, proxy));
    }
}
