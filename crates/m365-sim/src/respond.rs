//! Response helpers in each service's own error shape: Graph's `{"error":{"code","message","innerError"}}`,
//! JSON bodies, and the marker that tells the listener to drop a connection.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Put in a response's extensions to make the listener close the connection without answering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// The counter label of a request when the route template is not the right one (Exchange cmdlets).
#[derive(Clone, Debug)]
pub(crate) struct EndpointLabel(pub(crate) String);

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    json_bytes_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A Graph JSON response from a body already serialised.
pub(crate) fn json_bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; odata.metadata=minimal; charset=utf-8"),
    );
    resp
}

pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    let mut resp = json_response(status, &body);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// 429 in Graph's shape with `Retry-After`.
pub(crate) fn throttled(retry_after_secs: u64, scope: &str) -> Response {
    let mut resp = graph_error(
        StatusCode::TOO_MANY_REQUESTS,
        "ApplicationThrottled",
        "Application is over its MailboxConcurrency limit.",
    );
    if scope != "Mailbox" {
        resp = graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests. Please try again later.",
        );
    }
    let headers = resp.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    if let Ok(v) = HeaderValue::from_str(scope) {
        headers.insert("x-ms-throttle-scope", v);
    }
    headers.insert(
        "x-ms-throttle-limit-percentage",
        HeaderValue::from_static("1.0"),
    );
    resp
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
