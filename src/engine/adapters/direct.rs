//! A direct transport for the in-process simulator (demo, end-to-end tests, benchmarks): client-credential tokens
//! straight from the simulator's login endpoint and a few retries of 429/5xx. Production goes through the m365
//! room's `ApiClient` and token provider (Key Vault, certificates, managed identity, adaptive limits) instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::transport::{JsonRequest, JsonResponse, JsonTransport, Method};
use crate::config::Secret;
use crate::engine::ports::{CounterSnapshot, PortError, RequestCounters};

/// Retries of 429/5xx/dropped connections a test transport makes before giving the answer to the engine.
pub const DEFAULT_RETRIES: u32 = 3;

/// A transport that authenticates with a client secret (client-credentials grant) and retries 429/503/504 and
/// dropped connections a few times, honouring `Retry-After` (capped). For the in-process simulator only.
pub struct DirectTransport {
    http: reqwest::Client,
    base: url::Url,
    token_url: url::Url,
    client_id: String,
    secret: Secret,
    scope: String,
    token: tokio::sync::Mutex<Option<String>>,
    counters: Arc<Counters>,
    service: &'static str,
    retries: u32,
    retry_after_cap: Duration,
}

/// Requests per service and retries, shared by the transports of one connector.
#[derive(Debug, Default)]
pub struct Counters {
    pub graph: AtomicU64,
    pub exchange: AtomicU64,
    pub login: AtomicU64,
    pub retries: AtomicU64,
}

impl RequestCounters for Counters {
    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: [
                ("graph".to_owned(), self.graph.load(Ordering::SeqCst)),
                ("exchange".to_owned(), self.exchange.load(Ordering::SeqCst)),
                ("login".to_owned(), self.login.load(Ordering::SeqCst)),
            ]
            .into_iter()
            .collect(),
            throttled_retries: self.retries.load(Ordering::SeqCst),
        }
    }
}

impl DirectTransport {
    /// The secret is only sent to `token_url`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: reqwest::Client,
        base: url::Url,
        token_url: url::Url,
        client_id: String,
        secret: Secret,
        scope: String,
        counters: Arc<Counters>,
        service: &'static str,
    ) -> Self {
        DirectTransport {
            http,
            base,
            token_url,
            client_id,
            secret,
            scope,
            token: tokio::sync::Mutex::new(None),
            counters,
            service,
            retries: DEFAULT_RETRIES,
            retry_after_cap: Duration::from_secs(2),
        }
    }

    /// Retries per request (after the first attempt).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The longest `Retry-After` honoured.
    pub fn with_retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    async fn bearer(&self) -> Result<String, PortError> {
        let mut token = self.token.lock().await;
        if let Some(token) = token.as_ref() {
            return Ok(token.clone());
        }
        self.counters.login.fetch_add(1, Ordering::SeqCst);
        let response = self
            .http
            .post(self.token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.expose()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| failed("login", e))?;
        let body: serde_json::Value = response.json().await.map_err(|e| failed("login", e))?;
        let access = body["access_token"]
            .as_str()
            .ok_or_else(|| PortError::Failed {
                service: "login".into(),
                message: format!("no token: {body}"),
            })?
            .to_owned();
        *token = Some(access.clone());
        Ok(access)
    }
}

fn failed(service: &str, error: impl std::fmt::Display) -> PortError {
    PortError::Failed {
        service: service.into(),
        message: error.to_string(),
    }
}

#[async_trait]
impl JsonTransport for DirectTransport {
    async fn send(&self, request: JsonRequest) -> Result<JsonResponse, PortError> {
        let url = url::Url::parse(&request.url).map_err(|e| failed(self.service, e))?;
        if url.origin() != self.base.origin() {
            return Err(failed(self.service, format!("refusing foreign host {url}")));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let counter = if self.service == "graph" {
                &self.counters.graph
            } else {
                &self.counters.exchange
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let token = self.bearer().await?;
            let mut builder = match request.method {
                Method::Get => self.http.get(url.clone()),
                Method::Post => self.http.post(url.clone()),
            };
            builder = builder.bearer_auth(token);
            for (name, value) in &request.headers {
                builder = builder.header(*name, value);
            }
            if let Some(body) = &request.body {
                builder = builder.json(body);
            }
            let retry_after = match builder.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let bytes = response.bytes().await.unwrap_or_default();
                    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                    let retryable = status == 429
                        || status == 503
                        || status == 504
                        || (status == 200 && body.is_null());
                    if !retryable || attempt > self.retries {
                        return Ok(JsonResponse { status, body });
                    }
                    retry_after.unwrap_or(0)
                }
                Err(error) => {
                    if attempt > self.retries
                        || (!request.idempotent && !error.is_connect()) && attempt > 1
                    {
                        return Err(failed(self.service, error));
                    }
                    0
                }
            };
            self.counters.retries.fetch_add(1, Ordering::SeqCst);
            let wait = Duration::from_secs(retry_after).min(self.retry_after_cap)
                + Duration::from_millis(20 * u64::from(attempt));
            tokio::time::sleep(wait).await;
        }
    }

    fn base(&self) -> &url::Url {
        &self.base
    }

    fn count_retry(&self) {
        self.counters.retries.fetch_add(1, Ordering::SeqCst);
    }
}
