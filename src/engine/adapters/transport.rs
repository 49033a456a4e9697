//! The one thing the adapters need from an HTTP client: send a JSON request to Graph or Exchange with the right
//! bearer token, retries and counters, and hand back the final status and body. Implemented over the m365 room's
//! `ApiClient` in production; tests can implement it over anything.

use async_trait::async_trait;
use serde_json::Value;

use crate::engine::ports::PortError;

/// HTTP method of a [`JsonRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A request to Graph or Exchange.
#[derive(Debug, Clone)]
pub struct JsonRequest {
    pub method: Method,
    /// Absolute URL (a configured host; the transport refuses any other).
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    /// Safe to resend after a dropped connection.
    pub idempotent: bool,
}

impl JsonRequest {
    pub fn get(url: impl Into<String>) -> Self {
        JsonRequest {
            method: Method::Get,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            idempotent: true,
        }
    }

    pub fn post(url: impl Into<String>, body: Value) -> Self {
        JsonRequest {
            method: Method::Post,
            url: url.into(),
            headers: Vec::new(),
            body: Some(body),
            idempotent: false,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// The final answer to a [`JsonRequest`] (after the transport's own retries of 429/5xx).
#[derive(Debug, Clone)]
pub struct JsonResponse {
    pub status: u16,
    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub body: Value,
}

impl JsonResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `error.code`, `error.message` and the .NET exception type (`error.innererror.type`) of an error body.
    pub fn error_parts(&self) -> (String, String, String) {
        let error = &self.body["error"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (
            text(&error["code"]),
            text(&error["message"]),
            text(&error["innererror"]["type"]),
        )
    }
}

/// Sends JSON requests to one service of one tenant.
#[async_trait]
pub trait JsonTransport: Send + Sync {
    /// Sends the request; `Err` only when no answer could be had (foreign host, token, transport).
    async fn send(&self, request: JsonRequest) -> Result<JsonResponse, PortError>;
    /// The base URL of the service (`https://graph.microsoft.com/`, an override, or a simulator's).
    fn base(&self) -> &url::Url;
    /// Counts a retry this adapter made itself (transient Exchange errors answered as HTTP 400).
    fn count_retry(&self) {}
}
