//! A request budget shared by every process of one deployment (Graph's per-app limit, docs/microsoft-facts.md §4):
//! the arithmetic every store applies inside its own compare-and-swap ([`StateStore::take_budget`]).
//!
//! The budget row counts *grants* (tokens handed to processes) in slots of `window / slots` (Graph: 10 s in 20 slots
//! of 500 ms). A claim in slot `s` succeeds while the slots `s - slots - 1 ..= s` (two more than a window's worth)
//! hold no more than `limit` tokens, and its tokens must be spent before slot `s` ends. Any real window of `window`
//! length overlaps at most `slots + 1` slots, and the extra slot absorbs requests that reach Microsoft up to one slot
//! later than they were sent (network delays, clocks of different hosts apart by less than a slot), so the requests
//! of any window never exceed `limit`, whichever process sent them and however the window is aligned. The price is
//! `2 / (slots + 2)` of the limit (Graph: 130,000 per 11 s instead of per 10 s). A process that dies with an unspent
//! grant wastes it only until its slot ends; nothing is held that could leak.
//!
//! [`StateStore::take_budget`]: super::StateStore::take_budget

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// How a shared budget is kept: at most `limit` requests in any `window`, counted in `slots` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetRule {
    pub limit: u32,
    pub window: Duration,
    /// Slots per window (more slots: less of the limit lost to the extra slot, more claims per second).
    pub slots: u32,
}

impl BudgetRule {
    /// Graph's per-app limit as galbridge keeps it: `limit` requests per 10 s, in 20 slots of 500 ms.
    pub fn per_10_seconds(limit: u32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(10),
            slots: 20,
        }
    }

    /// The length of one slot in milliseconds (at least 1).
    pub fn slot_ms(&self) -> i64 {
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        (window_ms / i64::from(self.slots.max(1))).max(1)
    }

    /// The slot `at` falls in.
    pub fn slot_of(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp_millis().div_euclid(self.slot_ms())
    }

    /// When slot `slot` starts.
    pub fn slot_start(&self, slot: i64) -> DateTime<Utc> {
        let ms = slot.saturating_mul(self.slot_ms());
        Utc.timestamp_millis_opt(ms)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// What one claim got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetGrant {
    /// Tokens granted: `want` when there was room, fewer when only part fitted, 0 when not even `at_least` did.
    pub granted: u32,
    /// The tokens are void from this moment (the end of the slot they were counted in).
    pub spend_by: DateTime<Utc>,
    /// When a claim that fell short can first succeed (the start of the first slot with room); `now` otherwise.
    pub retry_at: DateTime<Utc>,
    /// Tokens granted over the counted slots after this claim (this grant included), for operators and tests.
    pub used: u32,
}

/// The stored row of one budget: tokens granted per recent slot, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCounts {
    /// `(slot, tokens)`; slots older than the counted range are dropped on every claim.
    pub slots: Vec<(i64, u32)>,
}

impl BudgetCounts {
    /// Claims up to `want` tokens at `now` (nothing unless at least `at_least` fit) and records the grant.
    pub fn claim(
        &mut self,
        want: u32,
        at_least: u32,
        rule: &BudgetRule,
        now: DateTime<Utc>,
    ) -> BudgetGrant {
        // The slots counted besides the current one.
        let slots = i64::from(rule.slots.max(1)) + 1;
        let current = rule.slot_of(now);
        // Slots ahead of ours (another host's clock runs ahead) still count: they were granted.
        self.slots.retain(|(slot, _)| *slot >= current - slots);
        self.slots.sort_by_key(|(slot, _)| *slot);
        let used: u32 = self.slots.iter().map(|(_, tokens)| *tokens).sum();
        let room = rule.limit.saturating_sub(used);
        let granted = if room >= at_least.max(1) {
            want.min(room)
        } else {
            0
        };
        if granted > 0 {
            match self.slots.iter_mut().find(|(slot, _)| *slot == current) {
                Some((_, tokens)) => *tokens = tokens.saturating_add(granted),
                None => {
                    self.slots.push((current, granted));
                    self.slots.sort_by_key(|(slot, _)| *slot);
                }
            }
        }
        let used = used + granted;
        let retry_at = if granted >= want {
            now
        } else {
            // The first later slot whose counted range has room for `at_least` once older slots drop out.
            let need = at_least.max(1);
            let mut next = current + slots + 1;
            for ahead in 1..=slots + 1 {
                let oldest_counted = current + ahead - slots;
                let still: u32 = self
                    .slots
                    .iter()
                    .filter(|(slot, _)| *slot >= oldest_counted)
                    .map(|(_, tokens)| *tokens)
                    .sum();
                if rule.limit.saturating_sub(still) >= need {
                    next = current + ahead;
                    break;
                }
            }
            rule.slot_start(next)
        };
        BudgetGrant {
            granted,
            spend_by: rule.slot_start(current + 1),
            retry_at,
            used,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().expect("valid time")
    }

    #[test]
    fn grants_fit_the_limit_and_a_full_budget_names_when_to_return() {
        let rule = BudgetRule::per_10_seconds(600);
        let mut counts = BudgetCounts::default();
        let first = counts.claim(400, 1, &rule, at(1_000_100));
        assert_eq!(first.granted, 400);
        assert_eq!(first.spend_by, at(1_000_500));
        let second = counts.claim(400, 1, &rule, at(1_000_200));
        assert_eq!(second.granted, 200, "only the rest fits");
        assert_eq!(second.used, 600);
        let third = counts.claim(10, 1, &rule, at(1_000_300));
        assert_eq!(third.granted, 0);
        // Slot 2000 holds 600: it leaves the counted range (22 slots) at slot 2022.
        assert_eq!(third.retry_at, at(2022 * 500));
        assert_eq!(counts.claim(10, 1, &rule, at(2022 * 500 - 1)).granted, 0);
        assert_eq!(counts.claim(10, 1, &rule, third.retry_at).granted, 10);
    }

    #[test]
    fn no_window_of_any_alignment_exceeds_the_limit() {
        // Greedy claimers spend each grant in its slot, each request reaching the server up to 400 ms late; count
        // every 10 s span of arrivals.
        let rule = BudgetRule::per_10_seconds(600);
        let mut counts = BudgetCounts::default();
        let mut sent: Vec<i64> = Vec::new();
        let mut now = 5_000_000_i64;
        let mut seed = 7_u64;
        while now < 5_000_000 + 120_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let want = u32::try_from(seed >> 58).unwrap_or(1) + 1;
            let grant = counts.claim(want, 1, &rule, at(now));
            let spend_by = grant.spend_by.timestamp_millis();
            for n in 0..grant.granted {
                let delay = i64::from(n * 37 % 400);
                sent.push(now + i64::from(n) % (spend_by - now).max(1) + delay);
            }
            now += i64::try_from(seed % 97).unwrap_or(1) + 1;
        }
        sent.sort_unstable();
        let mut max = 0;
        let mut start = 0;
        for end in 0..sent.len() {
            while sent[end] - sent[start] >= 10_000 {
                start += 1;
            }
            max = max.max(end - start + 1);
        }
        assert!(max <= 600, "{max} requests in one 10 s span");
        assert!(max >= 500, "the budget wastes the limit: {max}");
    }

    #[test]
    fn at_least_keeps_a_batch_whole() {
        let rule = BudgetRule::per_10_seconds(100);
        let mut counts = BudgetCounts::default();
        assert_eq!(counts.claim(95, 1, &rule, at(0)).granted, 95);
        let short = counts.claim(20, 20, &rule, at(1));
        assert_eq!(short.granted, 0, "5 left, a batch of 20 waits");
        assert_eq!(short.retry_at, at(22 * 500));
        assert_eq!(counts.claim(5, 1, &rule, at(2)).granted, 5);
    }
}
