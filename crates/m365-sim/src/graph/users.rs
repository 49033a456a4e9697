//! `/v1.0/users`: list (with `$select`, the `$filter` subset, `$top`, `@odata.nextLink` paging), get by id or UPN,
//! PATCH (guest attributes, directory write budget), manager, and profile photos (Outlook-backed: mailbox limits,
//! `ErrorNonExistentMailbox` for users without a mailbox).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};

use super::odata::{parse_filter, query_options, select_list};
use super::{Caller, bad_request, caller, collection, not_found, page_size};
use crate::model::user::{DEFAULT_USER_PROPS, MailboxKind, User, canonical_user_prop};
use crate::respond::{graph_error, json_response, no_content, throttled};
use crate::state::SimState;
use crate::tenant::{Directory, PatchError};

/// Resolves `$select` against the user schema; unknown properties are refused as Graph does.
pub(crate) fn user_select(opts: &HashMap<String, String>) -> Result<Vec<&'static str>, Response> {
    match select_list(opts) {
        None => Ok(DEFAULT_USER_PROPS.to_vec()),
        Some(list) => list
            .iter()
            .map(|p| {
                canonical_user_prop(p).ok_or_else(|| {
                    graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!(
                            "Could not find a property named '{p}' on type 'microsoft.graph.user'."
                        ),
                    )
                })
            })
            .collect(),
    }
}

/// `$expand=manager` / `$expand=manager($select=id,displayName)`: the manager properties to inline, if asked.
pub(crate) fn manager_expand(
    opts: &HashMap<String, String>,
) -> Result<Option<Vec<&'static str>>, Response> {
    let Some(expand) = opts.get("expand") else {
        return Ok(None);
    };
    let unsupported = || {
        graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &format!("Unsupported $expand: {expand}"),
        )
    };
    let Some(rest) = expand.strip_prefix("manager") else {
        return Err(unsupported());
    };
    if rest.is_empty() {
        return Ok(Some(vec!["id", "displayName"]));
    }
    let inner = rest
        .strip_prefix("($select=")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(unsupported)?;
    let props = inner
        .split(',')
        .map(|p| canonical_user_prop(p.trim()).ok_or_else(unsupported))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(props))
}

/// Inlines the manager (Graph omits the property when there is none).
pub(crate) fn inline_manager(
    dir: &Directory,
    user: &User,
    props: &[&'static str],
    out: &mut Map<String, Value>,
) {
    if let Some(m) = user.manager_id.as_ref().and_then(|m| dir.users.get(m)) {
        let mut obj = m.value.render(props);
        obj.insert(
            "@odata.type".into(),
            Value::String("#microsoft.graph.user".into()),
        );
        out.insert("manager".into(), Value::Object(obj));
    }
}

/// A user's id from an id or a userPrincipalName.
pub(crate) fn find_user<'a>(dir: &'a Directory, key: &str) -> Option<&'a User> {
    if let Some(t) = dir.users.get(key) {
        return Some(&t.value);
    }
    dir.users
        .values()
        .map(|t| &t.value)
        .find(|u| u.user_principal_name.eq_ignore_ascii_case(key))
}

pub(crate) async fn list(
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
    let select = match user_select(&opts) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let top = match page_size(&state, &opts, &headers, 999) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let expand = match manager_expand(&opts) {
        Ok(e) => e,
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
    let advanced = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
    if filter.as_ref().is_some_and(|f| f.needs_advanced_query()) && !advanced {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported or invalid query filter clause specified for property of resource 'User'. This query needs ConsistencyLevel: eventual and $count=true.",
        );
    }
    let after = opts.get("skiptoken").cloned();
    let now = state.clock.now_ms();
    let dir = caller.tenant.dir.read();
    let start = after
        .as_ref()
        .map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
    let mut items = Vec::with_capacity(top);
    let mut last = None;
    let mut more = false;
    for (id, tracked) in dir.users.range((start, Bound::Unbounded)) {
        if tracked.visible_from_ms > now {
            continue;
        }
        if let Some(f) = &filter
            && !f.eval(&Value::Object(tracked.value.render_all()))
        {
            continue;
        }
        if items.len() == top {
            more = true;
            break;
        }
        let mut obj = tracked.value.render(&select);
        if let Some(props) = &expand {
            inline_manager(&dir, &tracked.value, props, &mut obj);
        }
        items.push(Value::Object(obj));
        last = Some(id.clone());
    }
    drop(dir);
    let next = match (more, last) {
        (true, Some(last)) => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &opts {
                if k != "skiptoken" {
                    q.append_pair(&format!("${k}"), v);
                }
            }
            q.append_pair("$skiptoken", &last);
            Some(state.url(&format!("/v1.0/users?{}", q.finish())))
        }
        _ => None,
    };
    json_response(StatusCode::OK, &collection(&state, "users", items, next))
}

pub(crate) async fn get_one(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
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
    let select = match user_select(&opts) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let expand = match manager_expand(&opts) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let dir = caller.tenant.dir.read();
    match find_user(&dir, &id) {
        Some(u) => {
            let mut body = u.render(&select);
            if let Some(props) = &expand {
                inline_manager(&dir, u, props, &mut body);
            }
            body.insert(
                "@odata.context".into(),
                Value::String(state.url("/v1.0/$metadata#users/$entity")),
            );
            json_response(StatusCode::OK, &Value::Object(body))
        }
        None => not_found(&id),
    }
}

pub(crate) async fn manager(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["User.Read.All", "User.ReadWrite.All"]) {
        return r;
    }
    let dir = caller.tenant.dir.read();
    let Some(user) = find_user(&dir, &id) else {
        return not_found(&id);
    };
    match user.manager_id.as_ref().and_then(|m| dir.users.get(m)) {
        Some(m) => {
            let mut body = m.value.render(DEFAULT_USER_PROPS);
            body.insert(
                "@odata.type".into(),
                Value::String("#microsoft.graph.user".into()),
            );
            json_response(StatusCode::OK, &Value::Object(body))
        }
        None => not_found("manager"),
    }
}

/// Applies the directory write budget per (app, tenant) (docs/microsoft-facts.md §4: 3,000 writes / 150 s).
pub(crate) fn directory_write_budget(state: &SimState, caller: &Caller) -> Result<(), Response> {
    let limit = state.knobs.read().directory_writes_per_150_s;
    state
        .limits
        .admit(
            "directory-writes",
            &format!("{}|{}", caller.app_id, caller.tenant.id),
            state.clock.now_ms(),
            150_000,
            limit,
        )
        .map_err(|t| {
            // Graph throttling-limits doc: scope `<Scope>/<Limit>/<ApplicationId>/<TenantId>`, and the reason.
            let mut r = throttled(
                t.retry_after_secs,
                &format!(
                    "Tenant_Application/Write/{}/{}",
                    caller.app_id, caller.tenant.id
                ),
            );
            r.headers_mut().insert(
                "x-ms-throttle-information",
                HeaderValue::from_static("WriteLimitExceeded"),
            );
            r
        })
}

pub(crate) async fn patch(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["User.ReadWrite.All"]) {
        return r;
    }
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        );
    };
    if let Err(r) = directory_write_budget(&state, &caller) {
        return r;
    }
    let mut dir = caller.tenant.dir.write();
    let Some(user_id) = find_user(&dir, &id).map(|u| u.id.clone()) else {
        return not_found(&id);
    };
    let patch: Map<String, Value> = patch
        .into_iter()
        .filter(|(k, _)| !k.starts_with("@odata"))
        .collect();
    match dir.patch_user(&user_id, &patch, &state.clock.stamp()) {
        Ok(_) => {
            drop(dir);
            super::subscriptions::user_changed(&state, &caller.tenant, &user_id, "updated");
            no_content()
        }
        Err(PatchError::NotFound) => not_found(&id),
        Err(PatchError::Invalid(msg)) => {
            graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", &msg)
        }
    }
}

pub(crate) async fn photo(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&[
        "ProfilePhoto.Read.All",
        "User.Read.All",
        "User.ReadWrite.All",
    ]) {
        return r;
    }
    let (user_id, mailbox, photo) = {
        let dir = caller.tenant.dir.read();
        let Some(u) = find_user(&dir, &id) else {
            return not_found(&id);
        };
        (u.id.clone(), u.mailbox, u.photo.clone())
    };
    if mailbox == MailboxKind::None {
        // Quirk: photos live in Exchange; a user without a mailbox answers ErrorNonExistentMailbox (docs/microsoft-facts.md §2).
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorNonExistentMailbox",
            "The SMTP address has no mailbox associated with it.",
        );
    }
    if let Err(r) = super::contacts::outlook_permit(&state, &caller, &user_id) {
        return r;
    }
    match photo {
        Some(bytes) => {
            let mut r = Response::new(Body::from(bytes.as_ref().clone()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            r
        }
        None => graph_error(
            StatusCode::NOT_FOUND,
            "ImageNotFound",
            "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown.",
        ),
    }
}
