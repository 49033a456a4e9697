//! Graph's global limit per app across all tenants: 130,000 requests per 10 s (docs/microsoft-facts.md §4). Every
//! Graph request carrying a valid token is counted for its app (each inner `$batch` request on its own, the `$batch`
//! envelope not at all); with knob `graph_app_requests_per_10_s` set, a request that would make the last 10 s hold more
//! than the limit gets 429 with `Retry-After` and `x-ms-throttle-scope: Application/All/{app}` (the scope's shape
//! follows the tenant-application one Graph documents; the exact text for the global limit is a guess).
//!
//! Counting happens whether or not the knob is set, so a test can read, per app, how many requests it sent, the
//! most it sent within any 10 s (a sliding window: every alignment), and its requests per fixed 10 s window
//! (`GET /_control/app-load`, [`crate::Control::app_loads`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use parking_lot::Mutex;
use serde::Serialize;

use crate::auth::AUDIENCE_GRAPH;
use crate::auth::tokens::bearer;
use crate::respond::graph_error;
use crate::state::SimState;

const WINDOW_MS: i64 = 10_000;
/// Fixed windows kept per app for the report (one hour).
const WINDOWS_KEPT: usize = 360;

/// One app's Graph traffic as the simulator saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AppLoad {
    /// The app's client id.
    pub app_id: String,
    /// Requests admitted (answered by a handler), inner `$batch` requests one by one.
    pub requests: u64,
    /// Requests refused with 429 by the per-app limit.
    pub throttled: u64,
    /// The most admitted requests within any 10 s (sliding: every alignment).
    pub max_in_any_10_s: u32,
    /// `(window start in sim-clock ms, admitted requests)` per fixed, aligned 10 s window, oldest first.
    pub windows: Vec<(i64, u32)>,
}

#[derive(Default)]
struct Traffic {
    /// Sim-clock ms of each admitted request of the last 10 s.
    recent: VecDeque<i64>,
    load: AppLoad,
    windows: BTreeMap<i64, u32>,
}

/// Requests per app in the last 10 s, and what each app sent so far.
#[derive(Default)]
pub(crate) struct AppBudget {
    apps: Mutex<HashMap<String, Traffic>>,
}

/// The app id of a Graph request's token, if it carries a valid one (others fail later, uncounted).
fn app_of(state: &SimState, headers: &axum::http::HeaderMap) -> Option<String> {
    let token = bearer(headers)?;
    let claims = state
        .signer
        .verify(token, AUDIENCE_GRAPH, state.clock.now_secs())
        .ok()?;
    Some(claims.appid.to_ascii_lowercase())
}

impl AppBudget {
    /// Counts a Graph request for its app, or answers the 429 Graph would send when the app's limit is reached.
    /// `$batch` envelopes are not counted (their inner requests come through here one by one).
    pub(crate) fn admit(
        &self,
        state: &SimState,
        route: Option<&str>,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), Response> {
        if route == Some("/v1.0/$batch") {
            return Ok(());
        }
        let Some(app) = app_of(state, headers) else {
            return Ok(());
        };
        let limit = state.knobs.read().graph_app_requests_per_10_s;
        let now = state.clock.now_ms();
        let mut apps = self.apps.lock();
        let traffic = apps.entry(app.clone()).or_default();
        while traffic
            .recent
            .front()
            .is_some_and(|at| at + WINDOW_MS <= now)
        {
            traffic.recent.pop_front();
        }
        let in_window = u32::try_from(traffic.recent.len()).unwrap_or(u32::MAX);
        if let Some(limit) = limit
            && in_window >= limit
        {
            traffic.load.throttled += 1;
            // The oldest request that must leave the window before one more fits.
            let index = usize::try_from(in_window - limit).unwrap_or(0);
            let frees_at = traffic
                .recent
                .get(index)
                .map_or(now + WINDOW_MS, |at| at + WINDOW_MS);
            let retry_after = u64::try_from((frees_at - now + 999) / 1000)
                .unwrap_or(1)
                .max(1);
            let mut r = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests. The application is over Graph's request limit across all tenants.",
            );
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            if let Ok(v) = HeaderValue::from_str(&format!("Application/All/{app}")) {
                h.insert("x-ms-throttle-scope", v);
            }
            h.insert(
                "x-ms-throttle-information",
                HeaderValue::from_static("ApplicationRequestLimitExceeded"),
            );
            return Err(r);
        }
        traffic.recent.push_back(now);
        traffic.load.requests += 1;
        traffic.load.max_in_any_10_s = traffic.load.max_in_any_10_s.max(in_window + 1);
        *traffic
            .windows
            .entry(now.div_euclid(WINDOW_MS) * WINDOW_MS)
            .or_default() += 1;
        while traffic.windows.len() > WINDOWS_KEPT {
            traffic.windows.pop_first();
        }
        Ok(())
    }

    /// Every app's traffic so far, by app id.
    pub(crate) fn loads(&self) -> Vec<AppLoad> {
        let apps = self.apps.lock();
        let mut loads: Vec<AppLoad> = apps
            .iter()
            .map(|(app, traffic)| AppLoad {
                app_id: app.clone(),
                windows: traffic.windows.iter().map(|(at, n)| (*at, *n)).collect(),
                ..traffic.load.clone()
            })
            .collect();
        loads.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        loads
    }

    /// Forgets what was counted (with the request counters).
    pub(crate) fn reset(&self) {
        self.apps.lock().clear();
    }
}
