//! Org contacts (`/v1.0/contacts`: Exchange mail contacts seen from Graph, read-only, visible after the replication
//! delay) and groups' transitive user members.

use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::odata::{parse_filter, query_options};
use super::users::user_select;
use super::{caller, collection, not_found, page_size};
use crate::respond::{graph_error, json_response};
use crate::state::SimState;

pub(crate) async fn list(
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
    let top = match page_size(&state, &opts, &headers, 999) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let filter = match opts.get("filter").map(|f| parse_filter(f)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Invalid filter clause: {e}"),
            );
        }
    };
    let now = state.clock.now_ms();
    let dir = caller.tenant.dir.read();
    let start = opts
        .get("skiptoken")
        .map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
    let mut items = Vec::new();
    let mut next = None;
    for (id, t) in dir.contacts.range((start, Bound::Unbounded)) {
        if dir
            .contact_replicated_at
            .get(id)
            .is_some_and(|at| *at > now)
        {
            continue;
        }
        let json = Value::Object(t.value.render_org_contact());
        if filter.as_ref().is_some_and(|f| !f.eval(&json)) {
            continue;
        }
        if items.len() == top {
            let last = items
                .last()
                .and_then(|v: &Value| v.get("id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            next = Some(state.url(&format!("/v1.0/contacts?$top={top}&$skiptoken={last}")));
            break;
        }
        items.push(json);
    }
    json_response(StatusCode::OK, &collection(&state, "contacts", items, next))
}

pub(crate) async fn get_one(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["OrgContact.Read.All"]) {
        return r;
    }
    let now = state.clock.now_ms();
    let dir = caller.tenant.dir.read();
    match dir.contacts.get(&id) {
        Some(t)
            if dir
                .contact_replicated_at
                .get(&id)
                .is_none_or(|at| *at <= now) =>
        {
            json_response(StatusCode::OK, &Value::Object(t.value.render_org_contact()))
        }
        _ => not_found(&id),
    }
}

/// Quirk: orgContact is read-only in Graph (docs/microsoft-facts.md §1); the exact refusal is unverified, the sim answers
/// 405 with Graph's error shape.
fn refused(method: &str) -> Response {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        &format!(
            "The HTTP method '{method}' is not supported for orgContact: organizational contacts are read-only in Microsoft Graph. Use Exchange Online to manage mail contacts."
        ),
    )
}

pub(crate) async fn write_refused(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    refused("POST")
}

pub(crate) async fn write_refused_id(
    State(state): State<Arc<SimState>>,
    method: axum::http::Method,
    headers: HeaderMap,
    Path(_id): Path<String>,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    refused(method.as_str())
}

pub(crate) async fn transitive_users(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["GroupMember.Read.All", "Group.Read.All"]) {
        return r;
    }
    let opts = query_options(raw.as_deref());
    let select = match user_select(&opts) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let top = match page_size(&state, &opts, &headers, 999) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let dir = caller.tenant.dir.read();
    if !dir.groups.contains_key(&id) {
        return not_found(&id);
    }
    let members = dir.transitive_user_members(&id);
    let skip: usize = opts
        .get("skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let items: Vec<Value> = members
        .iter()
        .skip(skip)
        .take(top)
        .filter_map(|m| dir.users.get(m))
        .map(|t| {
            let mut o = t.value.render(&select);
            o.insert(
                "@odata.type".into(),
                Value::String("#microsoft.graph.user".into()),
            );
            Value::Object(o)
        })
        .collect();
    let next = (skip + top < members.len()).then(|| {
        let sel = opts.get("select").map(|s| format!("&$select={s}")).unwrap_or_default();
        state.url(&format!("/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$top={top}&$skiptoken={}{sel}", skip + top))
    });
    json_response(StatusCode::OK, &collection(&state, "users", items, next))
}
