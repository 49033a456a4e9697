//! `POST /v1.0/$batch`: at most 20 requests; `dependsOn` orders them and a failed dependency yields 424; the outer
//! status is 200 whatever the inner ones say; each inner request goes through the full pipeline (auth, throttling,
//! faults, counters) on its own. Independent requests run at most 4 at a time (Outlook's rule for one batch).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::{bad_request, caller};
use crate::respond::json_response;
use crate::state::SimState;

/// Marks a request as an inner `$batch` request (its faults never drop the outer connection).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InnerRequest;

const MAX_REQUESTS: usize = 20;
const PARALLEL: usize = 4;

struct Inner {
    id: String,
    method: Method,
    url: String,
    headers: Map<String, Value>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse(body: &Bytes) -> Result<Vec<Inner>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| "Invalid batch payload format.".to_string())?;
    let requests = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or("Invalid batch payload format: 'requests' is required.")?;
    if requests.len() > MAX_REQUESTS {
        return Err(format!(
            "Invalid batch payload format: the number of requests ({}) exceeds the limit of {MAX_REQUESTS}.",
            requests.len()
        ));
    }
    let mut out: Vec<Inner> = Vec::new();
    for r in requests {
        let id = match r.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("Each request needs an id.".into()),
        };
        if out.iter().any(|o| o.id == id) {
            return Err(format!("Request id '{id}' is not unique in the batch."));
        }
        let method = r
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or("Each request needs a method.")?;
        let url = r
            .get("url")
            .and_then(Value::as_str)
            .ok_or("Each request needs a url.")?
            .to_string();
        let depends_on: Vec<String> = r
            .get("dependsOn")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for d in &depends_on {
            if !out.iter().any(|o| o.id == *d) {
                return Err(format!(
                    "Request '{id}' depends on '{d}', which is not an earlier request of the batch."
                ));
            }
        }
        out.push(Inner {
            id,
            method,
            url,
            headers: r
                .get("headers")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            body: r.get("body").cloned(),
            depends_on,
        });
    }
    Ok(out)
}

pub(crate) async fn batch(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = caller(&state, &headers) {
        return r;
    }
    let requests = match parse(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg),
    };
    let Some(router) = state.router.get().cloned() else {
        return bad_request("router unavailable");
    };
    let auth = headers.get(header::AUTHORIZATION).cloned();
    let mut status: HashMap<String, u16> = HashMap::new();
    let mut responses: HashMap<String, Value> = HashMap::new();
    let mut pending: Vec<&Inner> = requests.iter().collect();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<&Inner>, Vec<&Inner>) = pending
            .into_iter()
            .partition(|r| r.depends_on.iter().all(|d| status.contains_key(d)));
        pending = waiting;
        let (failed_deps, runnable): (Vec<&Inner>, Vec<&Inner>) =
            ready.into_iter().partition(|r| {
                r.depends_on
                    .iter()
                    .any(|d| status.get(d).is_some_and(|s| *s >= 400))
            });
        for r in failed_deps {
            status.insert(r.id.clone(), 424);
            responses.insert(
                r.id.clone(),
                json!({"id": r.id, "status": 424, "headers": {"Content-Type": "application/json"}, "body": {"error": {"code": "FailedDependency", "message": "The request could not be processed because a request it depends on failed."}}}),
            );
        }
        for chunk in runnable.chunks(PARALLEL) {
            let results = futures::future::join_all(
                chunk
                    .iter()
                    .map(|r| run_one(router.clone(), auth.clone(), r)),
            )
            .await;
            for (r, (code, value)) in chunk.iter().zip(results) {
                status.insert(r.id.clone(), code);
                responses.insert(r.id.clone(), value);
            }
        }
    }
    let ordered: Vec<Value> = requests
        .iter()
        .filter_map(|r| responses.remove(&r.id))
        .collect();
    json_response(StatusCode::OK, &json!({"responses": ordered}))
}

async fn run_one(router: axum::Router, auth: Option<HeaderValue>, r: &Inner) -> (u16, Value) {
    let path = if r.url.starts_with('/') {
        format!("/v1.0{}", r.url)
    } else {
        format!("/v1.0/{}", r.url)
    };
    let mut builder = Request::builder().method(r.method.clone()).uri(&path);
    if let Some(a) = auth {
        builder = builder.header(header::AUTHORIZATION, a);
    }
    let mut content_type = None;
    for (k, v) in &r.headers {
        if let Some(s) = v.as_str() {
            if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(s.to_string());
            }
            builder = builder.header(k.as_str(), s);
        }
    }
    let body = match (&r.body, content_type.as_deref()) {
        (None, _) => Body::empty(),
        // Binary bodies (photos) travel base64-encoded inside a batch.
        (Some(Value::String(s)), Some(ct)) if !ct.contains("json") => Body::from(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default(),
        ),
        (Some(v), _) => {
            if content_type.is_none() {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
            }
            Body::from(serde_json::to_vec(v).unwrap_or_default())
        }
    };
    let Ok(mut req) = builder.body(body) else {
        return (
            400,
            json!({"id": r.id, "status": 400, "body": {"error": {"code": "BadRequest", "message": "Invalid request URL or headers."}}}),
        );
    };
    req.extensions_mut().insert(InnerRequest);
    let resp = router
        .oneshot(req)
        .await
        .unwrap_or_else(|never| match never {});
    let code = resp.status().as_u16();
    let mut out_headers = Map::new();
    for (k, v) in resp.headers() {
        if let Ok(s) = v.to_str() {
            let name = match k.as_str() {
                "retry-after" => "Retry-After".to_string(),
                "content-type" => "Content-Type".to_string(),
                "location" => "Location".to_string(),
                other => other.to_string(),
            };
            out_headers.insert(name, json!(s));
        }
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else if is_json {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes))
    };
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id));
    m.insert("status".into(), json!(code));
    m.insert("headers".into(), Value::Object(out_headers));
    if !body.is_null() {
        m.insert("body".into(), body);
    }
    (code, Value::Object(m))
}
