//! Delta queries: `users/delta`, `contacts/delta` (org contacts) and, through the shared machinery, per-folder
//! personal contacts delta. Every object carries the sequence number of its last change; a round covers the changes
//! in (from, to] in id order across `@odata.nextLink` pages and ends with a `@odata.deltaLink` whose token starts the
//! next round at `to`. Objects not yet visible (replication delay) cap `to` so nothing is lost. Documented behaviour
//! reproduced: `@removed` with `changed`/`deleted`, `Prefer: return=minimal`, replays, `$deltatoken=latest`, token
//! expiry (410 Gone with `Location`, or 400 syncStateNotFound).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::odata::query_options;
use super::users::user_select;
use super::{caller, decode_token, encode_token, page_size, prefer_value};
use crate::knobs::DeltaExpiryStyle;
use crate::model::{Tombstone, Tracked};
use crate::respond::{graph_error, json_response};
use crate::state::SimState;

/// What a delta `$skiptoken` / `$deltatoken` carries (query options are encoded in the token, as Graph does).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeltaCursor {
    pub(crate) from: u64,
    pub(crate) to: u64,
    #[serde(default)]
    pub(crate) after: Option<String>,
    pub(crate) generation: u64,
    /// Sim-clock millis when the delta link that started this round was issued.
    pub(crate) issued_ms: i64,
    #[serde(default)]
    pub(crate) select: Option<Vec<String>>,
    /// Id of the last entry of the previous page (re-sent when replays are on).
    #[serde(default)]
    pub(crate) replay: Option<String>,
}

pub(crate) enum DeltaEntry<'a, T> {
    Live(&'a Tracked<T>),
    Removed(&'a str, &'static str),
}

/// The upper bound of a round starting now: the current sequence, capped below any change not yet visible.
pub(crate) fn round_end<T>(
    seq: u64,
    from: u64,
    items: &BTreeMap<String, Tracked<T>>,
    visible: impl Fn(&str, &Tracked<T>) -> bool,
) -> u64 {
    items
        .iter()
        .filter(|(id, t)| t.version > from && !visible(id, t))
        .map(|(_, t)| t.version - 1)
        .fold(seq, u64::min)
}

/// One page of a round: entries with from < version <= to, after the cursor, in id order (no `@removed` in a
/// first round).
pub(crate) fn page<'a, T>(
    items: &'a BTreeMap<String, Tracked<T>>,
    tombstones: impl Iterator<Item = (&'a String, Tombstone)>,
    cursor: &DeltaCursor,
    size: usize,
    in_scope: impl Fn(&T) -> bool,
) -> (Vec<DeltaEntry<'a, T>>, Option<String>) {
    page_with_removals(items, tombstones, cursor, size, in_scope, false)
}

/// `page`, optionally sending `@removed` entries in a first round as well.
pub(crate) fn page_with_removals<'a, T>(
    items: &'a BTreeMap<String, Tracked<T>>,
    tombstones: impl Iterator<Item = (&'a String, Tombstone)>,
    cursor: &DeltaCursor,
    size: usize,
    in_scope: impl Fn(&T) -> bool,
    removed_in_initial_round: bool,
) -> (Vec<DeltaEntry<'a, T>>, Option<String>) {
    let start = cursor
        .after
        .as_ref()
        .map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
    let in_round = |v: u64| v > cursor.from && v <= cursor.to;
    let mut live = items
        .range((start, Bound::Unbounded))
        .filter(|(_, t)| in_round(t.version) && in_scope(&t.value))
        .peekable();
    let skip_removals = cursor.from == 0 && !removed_in_initial_round;
    let mut dead = tombstones
        .filter(|(id, t)| {
            !skip_removals && in_round(t.version) && cursor.after.as_ref().is_none_or(|a| *id > a)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .peekable();
    let mut out = Vec::with_capacity(size);
    let mut last: Option<String> = None;
    loop {
        let take_live = match (live.peek(), dead.peek()) {
            (None, None) => return (out, None),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((a, _)), Some((b, _))) => a <= b,
        };
        if out.len() == size {
            return (out, last);
        }
        if take_live {
            if let Some((id, t)) = live.next() {
                last = Some(id.clone());
                out.push(DeltaEntry::Live(t));
            }
        } else if let Some((id, t)) = dead.next() {
            last = Some(id.clone());
            out.push(DeltaEntry::Removed(id.as_str(), t.reason));
        }
    }
}

/// The answer to an expired or invalidated token.
pub(crate) fn expired(state: &SimState, fresh_path: &str) -> Response {
    match state.knobs.read().delta_expiry_style {
        DeltaExpiryStyle::Gone410 => {
            let mut r = graph_error(
                StatusCode::GONE,
                "resyncRequired",
                "The delta token is expired; the client must synchronize again from the Location.",
            );
            // Quirk (delta overview, "Synchronization reset"): the Location is the initial request "with an empty
            // $deltaToken"; clients should follow it as given (an empty token starts a fresh round here).
            let separator = if fresh_path.contains('?') { '&' } else { '?' };
            let location = state.url(&format!("{fresh_path}{separator}$deltatoken="));
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        DeltaExpiryStyle::SyncStateNotFound400 => graph_error(
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        ),
    }
}

/// Reads `$skiptoken`/`$deltatoken` into a cursor, or None for a fresh round.
pub(crate) enum Start {
    Fresh,
    Latest,
    Continue(DeltaCursor, bool),
    Invalid,
}

pub(crate) fn start_of(opts: &std::collections::HashMap<String, String>) -> Start {
    if let Some(t) = opts.get("deltatoken").filter(|t| !t.is_empty()) {
        if t == "latest" {
            return Start::Latest;
        }
        return decode_token(t).map_or(Start::Invalid, |c| Start::Continue(c, true));
    }
    if let Some(t) = opts.get("skiptoken") {
        return decode_token(t).map_or(Start::Invalid, |c| Start::Continue(c, false));
    }
    Start::Fresh
}

/// Assembles the response body for a page.
pub(crate) fn delta_body(
    state: &SimState,
    context: &str,
    path: &str,
    values: Vec<Value>,
    next: Option<DeltaCursor>,
    delta: Option<DeltaCursor>,
) -> Value {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(state.url(&format!("/v1.0/$metadata#{context}"))),
    );
    if let Some(n) = next {
        m.insert(
            "@odata.nextLink".into(),
            json!(state.url(&format!("{path}?$skiptoken={}", encode_token(&n)))),
        );
    }
    if let Some(d) = delta {
        m.insert(
            "@odata.deltaLink".into(),
            json!(state.url(&format!("{path}?$deltatoken={}", encode_token(&d)))),
        );
    }
    m.insert("value".into(), Value::Array(values));
    Value::Object(m)
}

pub(crate) async fn users_delta(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["User.Read.All", "User.ReadWrite.All"]) {
        return r;
    }
    let opts = query_options(raw.as_deref());
    // Quirk: users delta refuses $expand, $top and $orderby (docs/microsoft-facts.md §2).
    for refused in ["expand", "top", "orderby"] {
        if opts.contains_key(refused) {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &format!("Unsupported query option '${refused}' for delta queries on users."),
            );
        }
    }
    if opts.contains_key("filter") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Only id filters are supported for users delta; the simulator supports none.",
        );
    }
    let size = page_size(&state, &opts, &headers, 999).unwrap_or(100);
    let minimal =
        prefer_value(&headers, "return").is_some_and(|v| v.eq_ignore_ascii_case("minimal"));
    let knobs = state.knobs();
    let now = state.clock.now_ms();
    let dir = caller.tenant.dir.read();
    let cursor = match start_of(&opts) {
        Start::Invalid => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The delta token is not valid.",
            );
        }
        Start::Latest => {
            let d = DeltaCursor {
                from: dir.seq,
                to: dir.seq,
                after: None,
                generation: dir.delta_generation,
                issued_ms: now,
                select: select_list_opt(&opts),
                replay: None,
            };
            return json_response(
                StatusCode::OK,
                &delta_body(
                    &state,
                    "users",
                    "/v1.0/users/delta",
                    Vec::new(),
                    None,
                    Some(d),
                ),
            );
        }
        Start::Fresh => {
            let to = round_end(dir.seq, 0, &dir.users, |_, t| t.visible_from_ms <= now);
            DeltaCursor {
                from: 0,
                to,
                after: None,
                generation: dir.delta_generation,
                issued_ms: now,
                select: select_list_opt(&opts),
                replay: None,
            }
        }
        Start::Continue(c, is_delta_link) => {
            let ttl_ms =
                i64::try_from(knobs.delta_token_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            if c.generation != dir.delta_generation || (is_delta_link && now - c.issued_ms > ttl_ms)
            {
                let fresh = match &c.select {
                    Some(s) => format!("/v1.0/users/delta?$select={}", s.join(",")),
                    None => "/v1.0/users/delta".to_string(),
                };
                return expired(&state, &fresh);
            }
            if is_delta_link {
                let to = round_end(dir.seq, c.to, &dir.users, |_, t| t.visible_from_ms <= now);
                DeltaCursor {
                    from: c.to,
                    to,
                    after: None,
                    issued_ms: now,
                    replay: None,
                    ..c
                }
            } else {
                c
            }
        }
    };
    // `manager` is a navigation property: users delta tracks it as `manager@delta` when selected.
    let with_manager = cursor
        .select
        .as_ref()
        .is_some_and(|s| s.iter().any(|p| p.eq_ignore_ascii_case("manager")));
    let select_opts: std::collections::HashMap<String, String> = cursor
        .select
        .as_ref()
        .map(|s| {
            let plain: Vec<&str> = s
                .iter()
                .map(String::as_str)
                .filter(|p| !p.eq_ignore_ascii_case("manager"))
                .collect();
            [("select".to_string(), plain.join(","))]
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    let select = match user_select(&select_opts) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (entries, last) = page_with_removals(
        &dir.users,
        dir.user_tombstones.iter().map(|(k, v)| (k, *v)),
        &cursor,
        size,
        |_| true,
        knobs.delta_removed_in_initial_round,
    );
    let mut values = Vec::with_capacity(entries.len() + 1);
    if knobs.delta_replays
        && let Some(t) = cursor.replay.as_ref().and_then(|id| dir.users.get(id))
    {
        values.push(Value::Object(delta_render(t, &select)));
    }
    let mut last_live = None;
    for e in entries {
        values.push(match e {
            DeltaEntry::Live(t) => {
                last_live = Some(t.value.id.clone());
                let props: Vec<&'static str> = if minimal && t.created_version <= cursor.from {
                    select
                        .iter()
                        .copied()
                        .filter(|p| t.prop_versions.get(p).is_some_and(|v| *v > cursor.from))
                        .collect()
                } else {
                    select.clone()
                };
                let mut obj = delta_render(t, &props);
                let manager_news = !minimal
                    || t.created_version > cursor.from
                    || t.prop_versions
                        .get("manager")
                        .is_some_and(|v| *v > cursor.from);
                if with_manager && manager_news {
                    let link: Vec<Value> = t
                        .value
                        .manager_id
                        .iter()
                        .map(|m| json!({"@odata.type": "#microsoft.graph.user", "id": m}))
                        .collect();
                    obj.insert("manager@delta".into(), Value::Array(link));
                }
                Value::Object(obj)
            }
            DeltaEntry::Removed(id, reason) => json!({"id": id, "@removed": {"reason": reason}}),
        });
    }
    drop(dir);
    let (next, delta) = match last {
        Some(after) => (
            Some(DeltaCursor {
                after: Some(after),
                replay: last_live,
                ..cursor
            }),
            None,
        ),
        None => (
            None,
            Some(DeltaCursor {
                from: cursor.to,
                after: None,
                replay: None,
                ..cursor
            }),
        ),
    };
    let mut resp = json_response(
        StatusCode::OK,
        &delta_body(&state, "users", "/v1.0/users/delta", values, next, delta),
    );
    if minimal {
        resp.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("return=minimal"),
        );
    }
    resp
}

/// A user as delta sends it. Quirk (user-delta doc, "Default: return the same properties"): a property that has
/// never been set is not included at all, while one set to null after creation is sent as null. Clients must
/// therefore read a missing property of a new object as "empty", not as an error.
fn delta_render(
    t: &Tracked<crate::model::user::User>,
    props: &[&'static str],
) -> Map<String, Value> {
    let mut obj = t.value.render(props);
    obj.retain(|k, v| k == "id" || !v.is_null() || t.prop_versions.contains_key(k.as_str()));
    obj
}

fn select_list_opt(opts: &std::collections::HashMap<String, String>) -> Option<Vec<String>> {
    super::odata::select_list(opts)
}

pub(crate) async fn contacts_delta(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["OrgContact.Read.All"]) {
        return r;
    }
    let opts = query_options(raw.as_deref());
    let size = page_size(&state, &opts, &headers, 999).unwrap_or(100);
    let knobs = state.knobs();
    let now = state.clock.now_ms();
    let dir = caller.tenant.dir.read();
    let visible = |id: &str, _: &Tracked<crate::model::mail_contact::MailContact>| {
        dir.contact_replicated_at
            .get(id)
            .is_none_or(|at| *at <= now)
    };
    let cursor = match start_of(&opts) {
        Start::Invalid => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The delta token is not valid.",
            );
        }
        Start::Latest => {
            let d = DeltaCursor {
                from: dir.seq,
                to: dir.seq,
                after: None,
                generation: dir.delta_generation,
                issued_ms: now,
                select: None,
                replay: None,
            };
            return json_response(
                StatusCode::OK,
                &delta_body(
                    &state,
                    "contacts",
                    "/v1.0/contacts/delta",
                    Vec::new(),
                    None,
                    Some(d),
                ),
            );
        }
        Start::Fresh => DeltaCursor {
            from: 0,
            to: round_end(dir.seq, 0, &dir.contacts, visible),
            after: None,
            generation: dir.delta_generation,
            issued_ms: now,
            select: None,
            replay: None,
        },
        Start::Continue(c, is_delta_link) => {
            let ttl_ms =
                i64::try_from(knobs.delta_token_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            if c.generation != dir.delta_generation || (is_delta_link && now - c.issued_ms > ttl_ms)
            {
                return expired(&state, "/v1.0/contacts/delta");
            }
            if is_delta_link {
                DeltaCursor {
                    from: c.to,
                    to: round_end(dir.seq, c.to, &dir.contacts, visible),
                    after: None,
                    issued_ms: now,
                    ..c
                }
            } else {
                c
            }
        }
    };
    let (entries, last) = page_with_removals(
        &dir.contacts,
        dir.contact_tombstones.iter().map(|(k, v)| (k, *v)),
        &cursor,
        size,
        |_| true,
        knobs.delta_removed_in_initial_round,
    );
    let values: Vec<Value> = entries
        .into_iter()
        .map(|e| match e {
            DeltaEntry::Live(t) => Value::Object(t.value.render_org_contact()),
            DeltaEntry::Removed(id, reason) => json!({"id": id, "@removed": {"reason": reason}}),
        })
        .collect();
    drop(dir);
    let (next, delta) = match last {
        Some(after) => (
            Some(DeltaCursor {
                after: Some(after),
                ..cursor
            }),
            None,
        ),
        None => (
            None,
            Some(DeltaCursor {
                from: cursor.to,
                after: None,
                ..cursor
            }),
        ),
    };
    json_response(
        StatusCode::OK,
        &delta_body(
            &state,
            "contacts",
            "/v1.0/contacts/delta",
            values,
            next,
            delta,
        ),
    )
}
