//! Graph change-notification subscriptions (`POST/GET/PATCH/DELETE /v1.0/subscriptions`) on `/users`, the
//! validation handshake to the notification URL before a create answers, change notifications when a user
//! changes (with the subscription's `clientState`), lifecycle notifications on request (control API), and expiry
//! on the simulator's clock. Shapes and limits: galbridge's docs/microsoft-facts.md §11; this crate's README.
//!
//! Deliveries go over plain HTTP to loopback addresses only (the tests' stand-in for the Functions host); real
//! Graph delivers only to https. Each delivery is one POST with a `value` of one notification, sent by a task of
//! the simulator's runtime, up to 16 at once.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use super::caller;
use crate::respond::{graph_error, json_response, no_content};
use crate::state::SimState;
use crate::tenant::Tenant;

/// The longest lifetime of a subscription on users: 41,760 minutes.
const USERS_MAX_MINUTES: i64 = 41_760;
/// How long Graph waits for the validation answer.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// One subscription.
#[derive(Clone, Debug)]
pub(crate) struct Sub {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) tenant_id: String,
    pub(crate) app_id: String,
    pub(crate) resource: String,
    pub(crate) change_type: String,
    pub(crate) notification_url: String,
    pub(crate) lifecycle_url: Option<String>,
    pub(crate) client_state: Option<String>,
    pub(crate) expires_ms: i64,
}

impl Sub {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": stamp(self.expires_ms),
        })
    }
}

fn stamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A POST waiting to be delivered.
struct Delivery {
    url: String,
    body: Value,
}

/// Every subscription of every tenant, and the delivery queue.
#[derive(Default)]
pub(crate) struct Subscriptions {
    subs: Mutex<HashMap<String, Sub>>,
    queue: OnceLock<mpsc::UnboundedSender<Delivery>>,
}

impl Subscriptions {
    /// Live subscriptions of `tenant` (expired ones are dropped first).
    pub(crate) fn live(&self, tenant: &str, now_ms: i64) -> Vec<Sub> {
        let mut subs = self.subs.lock();
        subs.retain(|_, sub| sub.expires_ms > now_ms);
        let mut live: Vec<Sub> = subs
            .values()
            .filter(|sub| sub.tenant == tenant)
            .cloned()
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }

    /// Starts the delivery task (once, on the runtime of the first caller).
    fn start(&self) {
        self.queue.get_or_init(|| {
            let (sender, mut receiver) = mpsc::unbounded_channel::<Delivery>();
            tokio::spawn(async move {
                let permits = Arc::new(Semaphore::new(16));
                while let Some(delivery) = receiver.recv().await {
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return;
                    };
                    tokio::spawn(async move {
                        let body = delivery.body.to_string();
                        if let Err(error) = post(&delivery.url, "", &body).await {
                            tracing::debug!(url = %delivery.url, error = %error, "Notification not delivered.");
                        }
                        drop(permit);
                    });
                }
            });
            sender
        });
    }

    fn send(&self, url: &str, body: Value) {
        if let Some(queue) = self.queue.get() {
            let _ = queue.send(Delivery {
                url: url.to_owned(),
                body,
            });
        }
    }

    /// Sends a lifecycle notification (`reauthorizationRequired`, `subscriptionRemoved`, `missed`) for a live
    /// subscription; `subscriptionRemoved` also removes it. False if there is no such subscription.
    pub(crate) fn lifecycle(&self, id: &str, event: &str, now_ms: i64) -> bool {
        let sub = {
            let mut subs = self.subs.lock();
            let Some(sub) = subs.get(id).filter(|sub| sub.expires_ms > now_ms).cloned() else {
                return false;
            };
            if event == "subscriptionRemoved" {
                subs.remove(id);
            }
            sub
        };
        let url = sub
            .lifecycle_url
            .clone()
            .unwrap_or_else(|| sub.notification_url.clone());
        self.send(
            &url,
            json!({ "value": [{
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": stamp(sub.expires_ms),
                "tenantId": sub.tenant_id,
                "clientState": sub.client_state,
                "lifecycleEvent": event,
            }]}),
        );
        true
    }
}

/// A user of `tenant` changed (`updated`: created, changed, soft-deleted or restored; `deleted`: gone for good):
/// one notification to every live subscription on `/users` of the tenant that asked for that change type.
pub(crate) fn user_changed(state: &SimState, tenant: &Tenant, user_id: &str, change: &str) {
    let now = state.clock.now_ms();
    for sub in state.subscriptions.live(&tenant.name, now) {
        if !is_users(&sub.resource) || !sub.change_type.split(',').any(|c| c.trim() == change) {
            continue;
        }
        let resource = format!("Users/{user_id}");
        state.subscriptions.send(
            &sub.notification_url,
            json!({ "value": [{
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": stamp(sub.expires_ms),
                "changeType": change,
                "resource": resource,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.User",
                    "@odata.id": resource,
                    "id": user_id,
                    "organizationId": tenant.id,
                },
                "clientState": sub.client_state,
                "tenantId": tenant.id,
            }]}),
        );
    }
}

fn is_users(resource: &str) -> bool {
    resource
        .trim_start_matches('/')
        .eq_ignore_ascii_case("users")
}

fn bad(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// `POST /v1.0/subscriptions`.
pub(crate) async fn create(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return bad("Unable to read JSON request payload.");
    };
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(resource), Some(change_type), Some(notification_url), Some(expiration)) = (
        text("resource"),
        text("changeType"),
        text("notificationUrl"),
        text("expirationDateTime"),
    ) else {
        return bad("resource, changeType, notificationUrl and expirationDateTime are required.");
    };
    if !is_users(&resource) {
        return bad(&format!(
            "The simulator supports subscriptions on /users only, not '{resource}'."
        ));
    }
    if let Err(response) =
        caller.require(&["User.Read.All", "User.ReadWrite.All", "Directory.Read.All"])
    {
        return response;
    }
    // Users and groups take `updated` and `deleted` only; a new user is notified as `updated`.
    if change_type
        .split(',')
        .any(|c| !matches!(c.trim(), "updated" | "deleted"))
    {
        return bad("changeType for users must be 'updated', 'deleted' or both.");
    }
    let client_state = text("clientState");
    if client_state.as_ref().is_some_and(|state| state.len() > 128) {
        return bad("clientState must be at most 128 characters.");
    }
    let now = state.clock.now_ms();
    let Some(expires_ms) = expiration_ms(&expiration, now) else {
        return bad(&format!(
            "Subscription expiration can only be {USERS_MAX_MINUTES} minutes in the future."
        ));
    };
    let lifecycle_url = text("lifecycleNotificationUrl");
    state.subscriptions.start();
    let mut urls = vec![notification_url.clone()];
    if let Some(url) = lifecycle_url
        .as_ref()
        .filter(|url| **url != notification_url)
    {
        urls.push(url.clone());
    }
    for url in &urls {
        if let Err(reason) = validate_endpoint(url).await {
            tracing::debug!(url = %url, reason = %reason, "Validation failed.");
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            );
        }
    }
    let sub = Sub {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: caller.tenant.name.clone(),
        tenant_id: caller.tenant.id.clone(),
        app_id: caller.app_id.clone(),
        resource,
        change_type,
        notification_url,
        lifecycle_url,
        client_state,
        expires_ms,
    };
    let json = sub.json();
    state.subscriptions.subs.lock().insert(sub.id.clone(), sub);
    json_response(StatusCode::CREATED, &json)
}

/// The expiry in ms if it is in the future and within the users limit.
fn expiration_ms(text: &str, now_ms: i64) -> Option<i64> {
    let at = chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_millis();
    (at > now_ms && at <= now_ms + USERS_MAX_MINUTES * 60_000).then_some(at)
}

/// `GET /v1.0/subscriptions`: the caller's live subscriptions.
pub(crate) async fn list(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let live: Vec<Value> = state
        .subscriptions
        .live(&caller.tenant.name, state.clock.now_ms())
        .iter()
        .map(Sub::json)
        .collect();
    json_response(StatusCode::OK, &json!({ "value": live }))
}

fn not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The object was not found: subscription {id}"),
    )
}

/// `GET /v1.0/subscriptions/{id}`.
pub(crate) async fn get_one(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    match state
        .subscriptions
        .live(&caller.tenant.name, state.clock.now_ms())
        .into_iter()
        .find(|sub| sub.id == id)
    {
        Some(sub) => json_response(StatusCode::OK, &sub.json()),
        None => not_found(&id),
    }
}

/// `PATCH /v1.0/subscriptions/{id}`: a new `expirationDateTime` (renewal).
pub(crate) async fn renew(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let now = state.clock.now_ms();
    let Some(expiration) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| {
            body.get("expirationDateTime")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    else {
        return bad("expirationDateTime is required.");
    };
    let Some(expires_ms) = expiration_ms(&expiration, now) else {
        return bad(&format!(
            "Subscription expiration can only be {USERS_MAX_MINUTES} minutes in the future."
        ));
    };
    // Expired ones are gone.
    let _ = state.subscriptions.live(&caller.tenant.name, now);
    let mut subs = state.subscriptions.subs.lock();
    match subs
        .get_mut(&id)
        .filter(|sub| sub.tenant == caller.tenant.name)
    {
        Some(sub) => {
            sub.expires_ms = expires_ms;
            json_response(StatusCode::OK, &sub.json())
        }
        None => not_found(&id),
    }
}

/// `DELETE /v1.0/subscriptions/{id}`.
pub(crate) async fn delete(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let mut subs = state.subscriptions.subs.lock();
    if subs
        .get(&id)
        .is_some_and(|sub| sub.tenant == caller.tenant.name)
    {
        subs.remove(&id);
        no_content()
    } else {
        not_found(&id)
    }
}

/// Graph's handshake: `POST {url}?validationToken={token}`; the endpoint must answer 200, `text/plain`, with the
/// token decoded, within 10 seconds.
async fn validate_endpoint(url: &str) -> Result<(), String> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("validationToken", &token)
        .finish();
    let (status, content_type, body) = post(url, &query, "").await?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    if !content_type.to_ascii_lowercase().starts_with("text/plain") {
        return Err(format!("content type {content_type:?}"));
    }
    if body != token {
        return Err("the body is not the token".to_owned());
    }
    Ok(())
}

/// One HTTP/1.1 POST to a loopback `http://` URL (with `query` appended), within [`VALIDATION_TIMEOUT`]; returns
/// the status, the content type and the body.
async fn post(url: &str, query: &str, body: &str) -> Result<(u16, String, String), String> {
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        _ => false,
    };
    if url.scheme() != "http" || !loopback {
        return Err("the simulator delivers to http://127.0.0.1 endpoints only".to_owned());
    }
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let mut target = url.path().to_owned();
    let mut joined = url.query().unwrap_or_default().to_owned();
    if !query.is_empty() {
        if !joined.is_empty() {
            joined.push('&');
        }
        joined.push_str(query);
    }
    if !joined.is_empty() {
        target = format!("{target}?{joined}");
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let content_type = if body.is_empty() {
            "text/plain"
        } else {
            "application/json"
        };
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(body.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(VALIDATION_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer within 10 seconds".to_owned())??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "no status line".to_owned())?;
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Ok((status, content_type, body.to_owned()))
}
