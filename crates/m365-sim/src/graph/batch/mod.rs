//! `POST /v1.0/$batch`: at most 20 requests; `dependsOn` orders them and a failed dependency yields 424; the outer
//! status is 200 whatever the inner ones say; each inner request goes through the full pipeline (auth, throttling,
//! faults, counters) on its own. Independent requests run at most 4 at a time (Outlook's rule for one batch).
//! Bodies stay JSON text on the way in and out (envelope.rs): an inner body is a slice of the outer request, an inner
//! JSON response is embedded as it was written, so a batch never parses and re-serialises what it only forwards.

mod envelope;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::value::RawValue;
use tower::ServiceExt;

use self::envelope::{Inner, RawBody, envelope, parse, write_inner_response};
use super::{bad_request, caller};
use crate::respond::json_bytes_response;
use crate::state::SimState;

/// Marks a request as an inner `$batch` request (its faults never drop the outer connection).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InnerRequest;

const PARALLEL: usize = 4;

const FAILED_DEPENDENCY_BODY: &[u8] = br#"{"error":{"code":"FailedDependency","message":"The request could not be processed because a request it depends on failed."}}"#;
const INVALID_REQUEST_BODY: &[u8] =
    br#"{"error":{"code":"BadRequest","message":"Invalid request URL or headers."}}"#;

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
    let mut status: HashMap<&str, u16> = HashMap::new();
    // Each inner response, already serialised (its body embedded as raw JSON, never parsed back).
    let mut responses: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut pending: Vec<&Inner> = requests.iter().collect();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<&Inner>, Vec<&Inner>) = pending
            .into_iter()
            .partition(|r| r.depends_on.iter().all(|d| status.contains_key(d.as_str())));
        pending = waiting;
        let (failed_deps, runnable): (Vec<&Inner>, Vec<&Inner>) =
            ready.into_iter().partition(|r| {
                r.depends_on
                    .iter()
                    .any(|d| status.get(d.as_str()).is_some_and(|s| *s >= 400))
            });
        for r in failed_deps {
            status.insert(&r.id, 424);
            let mut out = Vec::new();
            let headers =
                BTreeMap::from([("Content-Type".to_string(), "application/json".to_string())]);
            write_inner_response(
                &mut out,
                &r.id,
                424,
                Some(&headers),
                Some(FAILED_DEPENDENCY_BODY),
            );
            responses.insert(&r.id, out);
        }
        for chunk in runnable.chunks(PARALLEL) {
            let results = futures::future::join_all(
                chunk
                    .iter()
                    .map(|r| run_one(router.clone(), auth.clone(), &body, r)),
            )
            .await;
            for (r, (code, out)) in chunk.iter().zip(results) {
                status.insert(&r.id, code);
                responses.insert(&r.id, out);
            }
        }
    }
    let ordered: Vec<Vec<u8>> = requests
        .iter()
        .filter_map(|r| responses.remove(r.id.as_str()))
        .collect();
    json_bytes_response(StatusCode::OK, envelope(&ordered))
}

/// The bytes an inner request carries: raw JSON passed on as it came (a slice of the outer body when it can be),
/// or, for a binary Content-Type, the base64 string decoded (photos travel base64-encoded inside a batch).
fn inner_body(outer: &Bytes, body: &RawBody<'_>, binary: bool) -> Bytes {
    let text = body.json_text();
    if binary && text.starts_with('"') {
        let decoded = serde_json::from_str::<String>(text)
            .ok()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default();
        return Bytes::from(decoded);
    }
    match body {
        RawBody::Borrowed(raw) => outer.slice_ref(raw.get().as_bytes()),
        RawBody::Owned(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
    }
}

/// Runs one inner request through the whole router (auth, throttling, faults, counters apply to it) and returns
/// its status and its serialised response object.
async fn run_one(
    router: axum::Router,
    auth: Option<HeaderValue>,
    outer: &Bytes,
    r: &Inner<'_>,
) -> (u16, Vec<u8>) {
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
        if k.eq_ignore_ascii_case("content-type") {
            content_type = Some(v.as_str());
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = match (&r.body, content_type) {
        (None, _) => Body::empty(),
        (Some(raw), Some(ct)) => Body::from(inner_body(outer, raw, !ct.contains("json"))),
        (Some(raw), None) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(inner_body(outer, raw, false))
        }
    };
    let Ok(mut req) = builder.body(body) else {
        let mut out = Vec::new();
        write_inner_response(&mut out, &r.id, 400, None, Some(INVALID_REQUEST_BODY));
        return (400, out);
    };
    req.extensions_mut().insert(InnerRequest);
    let resp = router
        .oneshot(req)
        .await
        .unwrap_or_else(|never| match never {});
    let code = resp.status().as_u16();
    let mut out_headers = BTreeMap::new();
    for (k, v) in resp.headers() {
        if let Ok(s) = v.to_str() {
            let name = match k.as_str() {
                "retry-after" => "Retry-After",
                "content-type" => "Content-Type",
                "location" => "Location",
                other => other,
            };
            out_headers.insert(name.to_string(), s.to_string());
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
    let mut out = Vec::with_capacity(bytes.len() + 256);
    if bytes.is_empty() {
        write_inner_response(&mut out, &r.id, code, Some(&out_headers), None);
    } else if is_json {
        // Embedded as is when it is JSON (a cut body from a Malformed fault is not, and is left out, as is `null`).
        let body = serde_json::from_slice::<&RawValue>(&bytes)
            .ok()
            .map(RawValue::get)
            .filter(|text| *text != "null");
        write_inner_response(
            &mut out,
            &r.id,
            code,
            Some(&out_headers),
            body.map(str::as_bytes),
        );
    } else {
        let mut encoded = Vec::with_capacity(bytes.len() * 4 / 3 + 4);
        let _ = serde_json::to_writer(
            &mut encoded,
            &base64::engine::general_purpose::STANDARD.encode(&bytes),
        );
        write_inner_response(&mut out, &r.id, code, Some(&out_headers), Some(&encoded));
    }
    (code, out)
}
