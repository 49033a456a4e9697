//! The HTTP layer every Microsoft client shares: the `reqwest` client factory (rustls with ring, system roots plus an
//! optional extra CA bundle, gzip, timeouts, HTTP/2) and [`ApiClient`], the request executor.
//!
//! The executor owns the rules of the contract (docs/architecture.md, "Contracts") "bearer tokens are only ever sent to the configured hosts":
//! every request, `@odata.nextLink` and redirect is checked against the client's allowlist of origins, and a URL
//! outside it is an error, never a request. It retries 429/503/504 honouring `Retry-After`, Exchange's transient
//! errors, dropped connections (for idempotent requests), refreshes the token once on 401, feeds the adaptive
//! limiters, and counts requests per service. It never logs a token or an `Authorization` header.

use super::auth::TokenSource;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::budget::{self, PauseGate};
use super::counters::{RequestCounters, Service};
use super::limiter::AdaptiveLimiter;
use super::pacer::RequestPacer;
use super::retry::{RetryPolicy, is_exchange_transient, is_throttling_status, parse_retry_after};

/// Environment variable naming an extra CA bundle (PEM) to trust; overrides the configuration's `extra_ca_file`.
pub const EXTRA_CA_FILE_ENV: &str = "GALBRIDGE_EXTRA_CA_FILE";

/// Redirects followed within the allowlist before giving up.
const MAX_REDIRECTS: u32 = 5;

/// Errors of the HTTP layer. Messages name hosts and paths, never tokens.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot read the extra CA bundle {path}: {source}")]
    ReadCaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the extra CA bundle {path} holds no usable PEM certificate: {source}")]
    ParseCaBundle {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error(
        "refusing to send a {service} request to {origin}: not a configured host (allowed: {allowed}); \
         a foreign @odata.nextLink or redirect is never followed"
    )]
    ForeignHost {
        service: &'static str,
        origin: String,
        allowed: String,
    },
    #[error("{service} request to {url} failed after {attempts} attempt(s): {source}")]
    Transport {
        service: &'static str,
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{service} redirect from {url} has no usable Location header")]
    BadRedirect { service: &'static str, url: String },
    #[error("{service} redirected more than {MAX_REDIRECTS} times starting at {url}")]
    TooManyRedirects { service: &'static str, url: String },
    #[error("cannot get a token for {service}: {source}")]
    Token {
        service: &'static str,
        #[source]
        source: Box<super::auth::AuthError>,
    },
    #[error("invalid header value for {name}")]
    InvalidHeader { name: String },
    #[error(
        "{service} request to {url} not sent: the run's time budget ends before the service's Retry-After pause; \
         the next run carries on"
    )]
    BudgetSpent { service: &'static str, url: String },
}

/// Settings of the shared `reqwest` client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// An extra CA bundle (PEM) trusted next to the system roots: the simulator's CA in tests, a TLS-inspecting proxy's.
    pub extra_ca_file: Option<PathBuf>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, body included.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            extra_ca_file: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

impl HttpSettings {
    /// Applies `GALBRIDGE_EXTRA_CA_FILE` when set and not empty (the environment overrides the configuration).
    pub fn with_env_overrides(mut self) -> Self {
        if let Ok(path) = std::env::var(EXTRA_CA_FILE_ENV)
            && !path.trim().is_empty()
        {
            self.extra_ca_file = Some(PathBuf::from(path));
        }
        self
    }
}

/// Builds the one `reqwest::Client` of the process: rustls with the ring provider (never aws-lc, never openssl), the
/// platform's roots plus `extra_ca_file`, gzip, HTTP/2 via ALPN, no automatic redirects (the executor follows them
/// only within the allowlist). The same client is the Azure SDK's transport (see `auth.rs`).
pub fn build_http_client(settings: &HttpSettings) -> Result<reqwest::Client, HttpError> {
    // reqwest is built with `rustls-no-provider`: it uses the process-wide default provider, which we set to ring.
    // Installing fails harmlessly when a provider is already installed (by us earlier, or by a test harness).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mut builder = reqwest::Client::builder()
        .tls_backend_rustls()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .gzip(true)
        .user_agent(concat!("galbridge/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.extra_ca_file {
        let pem = std::fs::read(path).map_err(|source| HttpError::ReadCaBundle {
            path: path.clone(),
            source,
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
            HttpError::ParseCaBundle {
                path: path.clone(),
                source,
            }
        })?;
        builder = builder.tls_certs_merge(certificates);
    }
    builder.build().map_err(HttpError::Build)
}

/// A scheme + host + port, the unit of the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// The origin of `url` (host lowercased, default ports made explicit).
    pub fn of(url: &Url) -> Self {
        Self {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}://{}:{port}", self.scheme, self.host),
            None => write!(f, "{}://{}", self.scheme, self.host),
        }
    }
}

/// One request to send through [`ApiClient::send`].
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes and their content type.
    pub body: Option<(Vec<u8>, &'static str)>,
    /// Safe to resend after a connection dropped mid-request (GET, PUT, DELETE, read-only cmdlets).
    pub idempotent: bool,
    /// An extra limiter for this request (the mailbox's), taken with `limiter_weight` units.
    pub limiter: Option<AdaptiveLimiter>,
    pub limiter_weight: u32,
    /// The service's request-rate pacing (Graph's per-app limit), applied to every attempt as `pacer_weight`
    /// requests once the limiter permits are held, right before the request goes out.
    pub pacer: Option<Arc<dyn RequestPacer>>,
    pub pacer_weight: u32,
}

impl ApiRequest {
    /// A request without body; GET, PUT and DELETE count as idempotent.
    pub fn new(method: Method, url: Url) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::PUT | Method::DELETE | Method::HEAD
        );
        Self {
            method,
            url,
            headers: Vec::new(),
            body: None,
            idempotent,
            limiter: None,
            limiter_weight: 1,
            pacer: None,
            pacer_weight: 1,
        }
    }

    /// A GET of `url`.
    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets a JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some((body.to_string().into_bytes(), "application/json"));
        self
    }

    /// Sets a raw body with its content type.
    pub fn bytes(mut self, body: Vec<u8>, content_type: &'static str) -> Self {
        self.body = Some((body, content_type));
        self
    }

    /// Marks the request safe (or unsafe) to resend after a dropped connection.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Paces every attempt of the request through `pacer`, counting `weight` requests.
    pub fn paced(mut self, pacer: Arc<dyn RequestPacer>, weight: u32) -> Self {
        self.pacer = Some(pacer);
        self.pacer_weight = weight;
        self
    }

    /// Runs the request under `limiter`, holding `weight` units.
    pub fn limited(mut self, limiter: AdaptiveLimiter, weight: u32) -> Self {
        self.limiter = Some(limiter);
        self.limiter_weight = weight;
        self
    }
}

/// A response after retries: whatever status the service ended with (callers classify it).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The URL that answered (after redirects).
    pub url: Url,
}

impl ApiResponse {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// `error.code` and `error.message` of a Microsoft (OData) error body, when there is one.
    pub fn odata_error(&self) -> (Option<String>, Option<String>) {
        odata_error(&self.body)
    }

    /// A short, printable excerpt of the body for error messages (bodies never hold our secrets).
    pub fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut excerpt: String = text.chars().take(400).collect();
        if text.chars().count() > 400 {
            excerpt.push('…');
        }
        excerpt
    }
}

/// `error.code` / `error.message` of an OData error body (`{"error":{"code":…,"message":…}}`).
pub fn odata_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let error = &value["error"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    (text(&error["code"]), text(&error["message"]))
}

/// The request executor of one service in one tenant: allowlist, token injection, retries, limits, counters.
/// Cheap to clone; `with_counters` re-binds a clone to a run's counters.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    service: Service,
    allowed: Arc<Vec<Origin>>,
    token: Option<Arc<dyn TokenSource>>,
    retry: RetryPolicy,
    counters: Arc<RequestCounters>,
    limiter: Option<AdaptiveLimiter>,
    pause: Option<PauseGate>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("service", &self.service)
            .field("allowed", &self.allowed)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// An executor for `service` that may only reach `allowed_bases` (their origins), authenticating with `token`.
    pub fn new(
        http: reqwest::Client,
        service: Service,
        allowed_bases: &[&Url],
        token: Option<Arc<dyn TokenSource>>,
    ) -> Self {
        Self {
            http,
            service,
            allowed: Arc::new(allowed_bases.iter().map(|url| Origin::of(url)).collect()),
            token,
            retry: RetryPolicy::default(),
            counters: RequestCounters::shared(),
            limiter: None,
            pause: None,
        }
    }

    /// Uses `retry` instead of the default policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Counts into `counters` (a run's) from now on.
    pub fn with_counters(mut self, counters: Arc<RequestCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Runs every request under `limiter` (the tenant's adaptive limit).
    pub fn with_limiter(mut self, limiter: AdaptiveLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Shares one pause among every request of this client (and its clones): after a 429/503 with `Retry-After`,
    /// nothing is sent before the window ends. For services whose limit is per client (Exchange per app and tenant),
    /// not for per-mailbox limits.
    pub fn with_pause_gate(mut self, gate: PauseGate) -> Self {
        self.pause = Some(gate);
        self
    }

    /// The service this client talks to.
    pub fn service(&self) -> Service {
        self.service
    }

    /// The counters this client counts into.
    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.counters
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Refuses a URL outside the allowlist. Called before every request and on every link a service hands back.
    pub fn check_allowed(&self, url: &Url) -> Result<(), HttpError> {
        let origin = Origin::of(url);
        if self.allowed.contains(&origin) {
            return Ok(());
        }
        Err(HttpError::ForeignHost {
            service: self.service.as_str(),
            origin: origin.to_string(),
            allowed: self
                .allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Sends `request`, retrying throttling and transient failures: inside a run for as long as a retry can finish
    /// within the run's budget ([`budget`]), elsewhere up to the policy's attempts. Returns the final response
    /// whatever its status; errors are only for requests that could not be made (foreign host, token, transport,
    /// a budget that ends inside a `Retry-After` pause).
    pub async fn send(&self, request: ApiRequest) -> Result<ApiResponse, HttpError> {
        let mut url = request.url.clone();
        let mut method = request.method.clone();
        let mut body = request.body.clone();
        let mut attempt: u32 = 0;
        let mut redirects: u32 = 0;
        let mut refreshed_token = false;
        loop {
            self.check_allowed(&url)?;
            attempt += 1;
            self.wait_for_pause(&url).await?;
            let _tenant_permit = match &self.limiter {
                Some(limiter) => Some(limiter.acquire(1).await),
                None => None,
            };
            let request_permit = match &request.limiter {
                Some(limiter) => Some(limiter.acquire(request.limiter_weight).await),
                None => None,
            };
            // Paced last, so that nothing stands between the pace and the send: the shared budget's tokens must be
            // spent inside their slot (docs/microsoft-facts.md §4). Every attempt counts, as Graph counts it.
            if let Some(pacer) = &request.pacer {
                pacer.pace(request.pacer_weight).await;
            }
            let outcome = self
                .send_once(&method, &url, &request.headers, body.as_ref())
                .await;
            let response = match outcome {
                Ok(response) => response,
                Err(SendFailure::Fatal(error)) => return Err(error),
                Err(SendFailure::Transport(source)) => {
                    // A connection refused or reset before the request was sent is always safe to retry; after
                    // that only idempotent requests are resent (a POST that reached the server may have applied).
                    let retryable = source.is_connect() || request.idempotent;
                    if retryable && attempt < self.retry.max_attempts {
                        let wait = self.retry.delay_for(attempt, None);
                        tracing::debug!(service = self.service.as_str(), path = url.path(), attempt, error = %source, "Transport error, retrying.");
                        drop(request_permit);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(HttpError::Transport {
                        service: self.service.as_str(),
                        url: redact_query(&url),
                        attempts: attempt,
                        source,
                    });
                }
            };
            let status = response.status.as_u16();

            if response.status.is_redirection() && status != 304 {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(HttpError::TooManyRedirects {
                        service: self.service.as_str(),
                        url: redact_query(&request.url),
                    });
                }
                let location = response
                    .headers
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|location| url.join(location).ok())
                    .ok_or_else(|| HttpError::BadRedirect {
                        service: self.service.as_str(),
                        url: redact_query(&url),
                    })?;
                // The allowlist check at the top of the loop refuses a redirect to another host before any request.
                if matches!(status, 301..=303) && method != Method::GET {
                    method = Method::GET;
                    body = None;
                }
                url = location;
                attempt -= 1;
                continue;
            }

            if status == 401
                && !refreshed_token
                && let Some(token) = &self.token
            {
                tracing::debug!(
                    service = self.service.as_str(),
                    "Service answered 401; refreshing the token once."
                );
                token.invalidate();
                refreshed_token = true;
                attempt -= 1;
                continue;
            }

            let throttled = is_throttling_status(status);
            let transient =
                self.service == Service::Exchange && is_exchange_transient(status, &response.body);
            if let Some(permit) = &request_permit {
                if status == 429 || status == 503 {
                    permit.throttled();
                } else if response.status.is_success() {
                    permit.succeeded();
                }
            }
            if let Some(limiter) = &self.limiter {
                if status == 429 || status == 503 {
                    limiter.record_throttle();
                } else if response.status.is_success() {
                    limiter.record_success();
                }
            }
            if throttled || transient {
                let retry_after = response
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, Utc::now()));
                let wait = self.retry.delay_for(attempt, retry_after);
                if let Some(gate) = &self.pause
                    && matches!(status, 429 | 503)
                {
                    // The service refuses this client for a while: hold every request of it, not only this one.
                    gate.pause_for(wait);
                }
                let may_retry = match budget::allows_wait(wait) {
                    Some(inside_budget) => inside_budget,
                    None => attempt < self.retry.max_attempts,
                };
                if !may_retry {
                    return Ok(response);
                }
                self.counters.count_throttled_retry();
                tracing::debug!(
                    service = self.service.as_str(),
                    path = url.path(),
                    status,
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "Throttled or transient failure, retrying."
                );
                drop(request_permit);
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(response);
        }
    }

    /// Waits while the client's pause is closed; a pause that outlasts the run's budget is an error (nothing sent).
    async fn wait_for_pause(&self, url: &Url) -> Result<(), HttpError> {
        let Some(gate) = &self.pause else {
            return Ok(());
        };
        if let Some(until) = gate.closed_until()
            && budget::deadline().is_some_and(|deadline| until >= deadline)
        {
            return Err(HttpError::BudgetSpent {
                service: self.service.as_str(),
                url: redact_query(url),
            });
        }
        gate.wait().await;
        Ok(())
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(&'static str, String)],
        body: Option<&(Vec<u8>, &'static str)>,
    ) -> Result<ApiResponse, SendFailure> {
        let mut builder = self.http.request(method.clone(), url.clone());
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(token) = &self.token {
            let bearer = token.bearer().await.map_err(|source| {
                SendFailure::Fatal(HttpError::Token {
                    service: self.service.as_str(),
                    source: Box::new(source),
                })
            })?;
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", bearer.expose()))
                    .map_err(|_| {
                        SendFailure::Fatal(HttpError::InvalidHeader {
                            name: AUTHORIZATION.to_string(),
                        })
                    })?;
            // Marks the header sensitive so no layer below ever prints it.
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        if let Some((bytes, content_type)) = body {
            builder = builder
                .header(CONTENT_TYPE, *content_type)
                .body(bytes.clone());
        }
        self.counters.count(self.service);
        let response = builder.send().await.map_err(SendFailure::Transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let final_url = response.url().clone();
        let body = response.bytes().await.map_err(SendFailure::Transport)?;
        Ok(ApiResponse {
            status,
            headers,
            body: body.to_vec(),
            url: final_url,
        })
    }
}

enum SendFailure {
    Transport(reqwest::Error),
    Fatal(HttpError),
}

/// The URL without its query (delta and skip tokens make messages long and are nobody's business in logs).
pub fn redact_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}
