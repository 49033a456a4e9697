//! `/_control/…`: the HTTP face of `Control`, for the standalone binary and for tests in other languages.
//! Unauthenticated by design (a local test double); JSON in and out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Control;
use crate::SimError;
use crate::knobs::{FaultRule, Knobs};
use crate::respond::json_response;
use crate::state::SimState;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/_control/tenants", get(tenants))
        .route("/_control/identity", get(identity))
        .route("/_control/tenants/{t}/users", get(users).post(add_user))
        .route(
            "/_control/tenants/{t}/users/{id}",
            axum::routing::patch(update_user).delete(delete_user),
        )
        .route(
            "/_control/tenants/{t}/users/{id}/restore",
            post(restore_user),
        )
        .route(
            "/_control/tenants/{t}/groups",
            get(super::groups::list).post(super::groups::add),
        )
        .route(
            "/_control/tenants/{t}/groups/{id}",
            axum::routing::patch(super::groups::update).delete(super::groups::delete),
        )
        .route(
            "/_control/tenants/{t}/mail-contacts",
            get(mail_contacts).post(add_mail_contact),
        )
        .route(
            "/_control/tenants/{t}/mailboxes/{user}/folders",
            get(folders),
        )
        .route(
            "/_control/tenants/{t}/mailboxes/{user}/contacts",
            get(mailbox_contacts).post(add_mailbox_contact),
        )
        .route("/_control/tenants/{t}/expire-delta-tokens", post(expire))
        .route(
            "/_control/tenants/{t}/permissions",
            axum::routing::put(permissions),
        )
        .route("/_control/counters", get(counters).delete(reset_counters))
        .route("/_control/mailbox-load", get(mailbox_load))
        .route("/_control/app-load", get(app_load))
        .route("/_control/clock/advance", post(advance))
        .route(
            "/_control/knobs",
            get(get_knobs).put(put_knobs).patch(patch_knobs),
        )
        .route(
            "/_control/faults",
            get(get_faults).put(put_faults).post(add_fault),
        )
}

pub(super) fn ctl(state: &Arc<SimState>) -> Control {
    Control::new(Arc::clone(state))
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

fn fail(e: &SimError) -> Response {
    let status = match e {
        SimError::UnknownTenant(_) | SimError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    json_response(status, &json!({"error": e.to_string()}))
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("invalid JSON: {e}")}),
        )
    })
}

pub(super) fn done<T: serde::Serialize>(r: Result<T, SimError>) -> Response {
    match r {
        Ok(v) => ok(serde_json::to_value(v).unwrap_or(Value::Null)),
        Err(e) => fail(&e),
    }
}

async fn tenants(State(s): State<Arc<SimState>>) -> Response {
    let list: Vec<Value> = s
        .tenants
        .iter()
        .map(|t| json!({"name": t.name, "tenant_id": t.id, "initial_domain": t.initial_domain, "mail_domain": t.mail_domain, "client_id": t.app.client_id, "client_secret": t.app.client_secret, "secret_name": crate::secret_name_for(&t.name), "certificate_secret_name": crate::certificate_secret_name_for(&t.name)}))
        .collect();
    ok(Value::Array(list))
}

/// The managed identity as App Service would expose it to the function (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
async fn identity(State(s): State<Arc<SimState>>) -> Response {
    let endpoint = s
        .http_base_url
        .join("msi/token")
        .map(String::from)
        .unwrap_or_default();
    ok(json!({
        "endpoint": endpoint,
        "header": s.identity.header_secret,
        "client_id": s.identity.client_id,
        "principal_id": s.identity.principal_id,
        "home_tenant_id": s.identity.home_tenant_id,
    }))
}

async fn users(State(s): State<Arc<SimState>>, Path(t): Path<String>) -> Response {
    done(ctl(&s).users(&t))
}

async fn add_user(State(s): State<Arc<SimState>>, Path(t): Path<String>, body: Bytes) -> Response {
    match parse::<Value>(&body) {
        Ok(v) => done(ctl(&s).add_user(&t, v).map(|id| json!({"id": id}))),
        Err(r) => r,
    }
}

async fn update_user(
    State(s): State<Arc<SimState>>,
    Path((t, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match parse::<Value>(&body) {
        Ok(v) => done(ctl(&s).update_user(&t, &id, v)),
        Err(r) => r,
    }
}

async fn delete_user(
    State(s): State<Arc<SimState>>,
    Path((t, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let soft = q.get("soft").is_some_and(|v| v == "true");
    done(ctl(&s).delete_user(&t, &id, soft))
}

async fn restore_user(
    State(s): State<Arc<SimState>>,
    Path((t, id)): Path<(String, String)>,
) -> Response {
    done(ctl(&s).restore_user(&t, &id))
}

async fn mail_contacts(State(s): State<Arc<SimState>>, Path(t): Path<String>) -> Response {
    done(ctl(&s).mail_contacts(&t))
}

async fn add_mail_contact(
    State(s): State<Arc<SimState>>,
    Path(t): Path<String>,
    body: Bytes,
) -> Response {
    let v: Value = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
    let email = v.get("email").and_then(Value::as_str).unwrap_or_default();
    done(
        ctl(&s)
            .create_user_made_mail_contact(&t, name, email)
            .map(|id| json!({"id": id})),
    )
}

async fn folders(
    State(s): State<Arc<SimState>>,
    Path((t, user)): Path<(String, String)>,
) -> Response {
    done(ctl(&s).contact_folders(&t, &user).map(|f| f.into_iter().map(|(id, name, parent)| json!({"id": id, "displayName": name, "parentFolderId": parent})).collect::<Vec<_>>()))
}

async fn mailbox_contacts(
    State(s): State<Arc<SimState>>,
    Path((t, user)): Path<(String, String)>,
) -> Response {
    done(ctl(&s).mailbox_contacts(&t, &user))
}

async fn add_mailbox_contact(
    State(s): State<Arc<SimState>>,
    Path((t, user)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut v: Value = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let folder = v
        .as_object_mut()
        .and_then(|m| m.remove("folderId"))
        .and_then(|f| f.as_str().map(str::to_string));
    done(
        ctl(&s)
            .create_user_made_contact(&t, &user, folder.as_deref(), v)
            .map(|id| json!({"id": id})),
    )
}

async fn expire(State(s): State<Arc<SimState>>, Path(t): Path<String>) -> Response {
    done(ctl(&s).expire_delta_tokens(&t))
}

async fn permissions(
    State(s): State<Arc<SimState>>,
    Path(t): Path<String>,
    body: Bytes,
) -> Response {
    let list: Vec<String> = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    done(ctl(&s).set_permissions(&t, &refs))
}

async fn counters(State(s): State<Arc<SimState>>) -> Response {
    ok(json!({"rows": ctl(&s).counters(), "throttled": ctl(&s).throttled_count()}))
}

async fn app_load(State(s): State<Arc<SimState>>) -> Response {
    ok(json!({"apps": ctl(&s).app_loads()}))
}

async fn reset_counters(State(s): State<Arc<SimState>>) -> Response {
    ctl(&s).reset_counters();
    ok(json!({}))
}

async fn mailbox_load(State(s): State<Arc<SimState>>) -> Response {
    ok(serde_json::to_value(ctl(&s).mailbox_loads()).unwrap_or(Value::Null))
}

async fn advance(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    let v: Value = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let secs = v.get("secs").and_then(Value::as_u64).unwrap_or(0);
    ctl(&s).advance_clock(Duration::from_secs(secs));
    ok(json!({"now": s.clock.now().to_rfc3339()}))
}

async fn get_knobs(State(s): State<Arc<SimState>>) -> Response {
    ok(serde_json::to_value(ctl(&s).knobs()).unwrap_or(Value::Null))
}

async fn put_knobs(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse::<Knobs>(&body) {
        Ok(k) => {
            ctl(&s).set_knobs(k);
            ok(json!({}))
        }
        Err(r) => r,
    }
}

/// Merges the given fields into the current knobs (PUT replaces them all, absent fields taking their defaults).
async fn patch_knobs(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    let patch: Value = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut current = serde_json::to_value(ctl(&s).knobs()).unwrap_or(Value::Null);
    merge_json(&mut current, patch);
    match serde_json::from_value::<Knobs>(current) {
        Ok(k) => {
            ctl(&s).set_knobs(k);
            ok(serde_json::to_value(ctl(&s).knobs()).unwrap_or(Value::Null))
        }
        Err(e) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("invalid knobs: {e}")}),
        ),
    }
}

/// JSON merge patch (RFC 7386) without null-removal: objects merge recursively, anything else replaces.
fn merge_json(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge_json(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

async fn get_faults(State(s): State<Arc<SimState>>) -> Response {
    ok(serde_json::to_value(ctl(&s).faults()).unwrap_or(Value::Null))
}

async fn put_faults(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse::<Vec<FaultRule>>(&body) {
        Ok(rules) => {
            ctl(&s).set_faults(rules);
            ok(json!({}))
        }
        Err(r) => r,
    }
}

async fn add_fault(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse::<FaultRule>(&body) {
        Ok(rule) => {
            ctl(&s).add_fault(rule);
            ok(json!({}))
        }
        Err(r) => r,
    }
}
