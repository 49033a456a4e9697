//! The identity-and-access (directory) resource-unit budget per (app, tenant), as Graph's throttling-limits doc
//! describes it: every directory request costs resource units (GET `users` 2, GET `groups/{id}/transitiveMembers` 5,
//! any other directory path 1; `$select` −1, `$expand` +1, `$top` under 20 −1; never below 1) and an (app, tenant)
//! pair may spend S 3,500 / M 5,000 / L 8,000 units per 10 s (tenants under 50 / 50–500 / over 500 users).
//! Requests over the budget get 429 with `Retry-After`, `x-ms-throttle-scope: Tenant_Application/Read/{app}/{tenant}`
//! and `x-ms-throttle-information: ResourceUnitLimitExceeded`; answered requests carry `x-ms-resource-unit`.
//! Outlook-backed paths (contacts, folders, photos) and `$batch` itself are not directory requests: inner `$batch`
//! requests are charged one by one. Knob `directory_budget` (on by default).

use std::collections::{HashMap, VecDeque};

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use parking_lot::Mutex;

use crate::auth::AUDIENCE_GRAPH;
use crate::auth::tokens::bearer;
use crate::respond::graph_error;
use crate::state::SimState;

const WINDOW_MS: i64 = 10_000;

/// (app id, tenant id): who pays.
type Payer = (String, String);
/// (sim-clock ms, units) of each admitted request still inside the window.
type Spending = VecDeque<(i64, u32)>;

/// Units spent per (app, tenant) in the last 10 s.
#[derive(Default)]
pub(crate) struct DirectoryBudget {
    spent: Mutex<HashMap<Payer, Spending>>,
}

/// What one admitted request cost and how much of the budget is now used.
pub(crate) struct Charged {
    pub(crate) units: u32,
    pub(crate) used_fraction: f64,
}

/// The base cost of a directory route (None: not a directory request).
fn base_cost(method: &Method, route: &str) -> Option<u32> {
    let directory = route == "/v1.0/users"
        || route == "/v1.0/users/delta"
        || route == "/v1.0/users/{id}"
        || route == "/v1.0/users/{id}/manager"
        || route.starts_with("/v1.0/contacts")
        || route.starts_with("/v1.0/groups/")
        || route == "/v1.0/invitations";
    if !directory {
        return None;
    }
    Some(if *method != Method::GET {
        1
    } else if route.starts_with("/v1.0/groups/{id}/transitiveMembers") {
        5
    } else if route == "/v1.0/users" || route == "/v1.0/users/delta" {
        // users/delta reads the users collection: charged as GET `users` (a guess; the doc lists `users` only).
        2
    } else {
        1
    })
}

/// The cost after the query-option adjustments the doc lists.
fn cost(base: u32, query: Option<&str>) -> u32 {
    let opts = super::odata::query_options(query);
    let mut units = i64::from(base);
    if opts.contains_key("select") {
        units -= 1;
    }
    if opts.contains_key("expand") {
        units += 1;
    }
    if opts
        .get("top")
        .and_then(|t| t.parse::<u32>().ok())
        .is_some_and(|t| t < 20)
    {
        units -= 1;
    }
    u32::try_from(units.max(1)).unwrap_or(1)
}

/// The (app, tenant) of the request's Graph token, if it carries a valid one (others fail later, uncharged).
fn payer(state: &SimState, headers: &axum::http::HeaderMap) -> Option<(String, String, usize)> {
    let token = bearer(headers)?;
    let claims = state
        .signer
        .verify(token, AUDIENCE_GRAPH, state.clock.now_secs())
        .ok()?;
    let tenant = state.tenant(&claims.tid)?;
    let users = tenant.dir.read().users.len();
    Some((claims.appid.clone(), tenant.id.clone(), users))
}

/// The pair's budget per 10 s by tenant size (S under 50 users, M 50–500, L over 500).
fn limit_for(users: usize) -> u32 {
    match users {
        n if n < 50 => 3_500,
        n if n <= 500 => 5_000,
        _ => 8_000,
    }
}

impl DirectoryBudget {
    /// Charges a request, or answers the 429 Graph would send. `Ok(None)`: not a directory request.
    pub(crate) fn charge(
        &self,
        state: &SimState,
        method: &Method,
        route: Option<&str>,
        query: Option<&str>,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<Charged>, Response> {
        let Some(base) = route.and_then(|r| base_cost(method, r)) else {
            return Ok(None);
        };
        let Some((app, tenant, users)) = payer(state, headers) else {
            return Ok(None);
        };
        let units = cost(base, query);
        let limit = state
            .knobs
            .read()
            .directory_units_per_10_s
            .unwrap_or_else(|| limit_for(users));
        let now = state.clock.now_ms();
        let mut spent = self.spent.lock();
        let events = spent.entry((app.clone(), tenant.clone())).or_default();
        while events.front().is_some_and(|(at, _)| at + WINDOW_MS <= now) {
            events.pop_front();
        }
        let used: u32 = events.iter().map(|(_, u)| *u).sum();
        if used + units > limit {
            // Wait until enough of the oldest spending leaves the window.
            let mut freed = 0;
            let mut wait_ms = WINDOW_MS;
            for (at, u) in events.iter() {
                freed += u;
                if used - freed + units <= limit {
                    wait_ms = (at + WINDOW_MS - now).max(1);
                    break;
                }
            }
            let mut r = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests. The application's resource unit budget for this tenant is used up.",
            );
            let retry_after = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            if let Ok(v) = HeaderValue::from_str(&format!("Tenant_Application/Read/{app}/{tenant}"))
            {
                h.insert("x-ms-throttle-scope", v);
            }
            h.insert(
                "x-ms-throttle-information",
                HeaderValue::from_static("ResourceUnitLimitExceeded"),
            );
            return Err(r);
        }
        events.push_back((now, units));
        Ok(Some(Charged {
            units,
            used_fraction: f64::from(used + units) / f64::from(limit),
        }))
    }
}

/// Marks an answered directory request with its cost, and with the share of the budget used once above 80 %.
pub(crate) fn annotate(response: &mut Response, charged: &Charged) {
    let h = response.headers_mut();
    h.insert("x-ms-resource-unit", HeaderValue::from(charged.units));
    if charged.used_fraction >= 0.8
        && let Ok(v) = HeaderValue::from_str(&format!("{:.1}", charged.used_fraction))
    {
        h.insert("x-ms-throttle-limit-percentage", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_documented_table_and_modifiers() {
        let get = Method::GET;
        assert_eq!(base_cost(&get, "/v1.0/users"), Some(2));
        assert_eq!(
            base_cost(
                &get,
                "/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user"
            ),
            Some(5)
        );
        assert_eq!(base_cost(&get, "/v1.0/users/{id}"), Some(1));
        assert_eq!(base_cost(&Method::PATCH, "/v1.0/users/{id}"), Some(1));
        assert_eq!(
            base_cost(&get, "/v1.0/users/{id}/contactFolders"),
            None,
            "Outlook"
        );
        assert_eq!(base_cost(&Method::POST, "/v1.0/$batch"), None);
        assert_eq!(cost(2, Some("$select=id")), 1);
        assert_eq!(cost(2, Some("$select=id&$top=5")), 1, "never below 1");
        assert_eq!(cost(5, Some("$select=id&$top=999")), 4);
        assert_eq!(cost(1, Some("$expand=manager")), 2);
        assert_eq!(limit_for(49), 3_500);
        assert_eq!(limit_for(50), 5_000);
        assert_eq!(limit_for(501), 8_000);
    }
}
