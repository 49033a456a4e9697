//! A small Azure Table Storage REST client over `reqwest`: the handful of operations the store needs (create table,
//! get / insert / replace / upsert / delete an entity, query a partition with continuation tokens, `$batch`), with
//! authentication, the service's headers, and retries of throttling and transient failures.
//!
//! Every request sends `x-ms-version: 2019-02-02` (the first version that accepts bearer tokens) and
//! `Accept: application/json;odata=nometadata`, so entities come back as plain JSON objects.
//! Retries: 408, 429, 500, 502, 503, 504 and connection failures, honouring `Retry-After`, else exponential backoff
//! with jitter (the service answers 503 "ServerBusy" / 500 "OperationTimedOut" when a partition is hot).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use url::Url;

use super::auth::{TableAuth, TokenCache, shared_key_lite};
use super::batch::{self, BatchOperation, FailedOperation};
use crate::state::StateError;

const API_VERSION: &str = "2019-02-02";
const ACCEPT: &str = "application/json;odata=nometadata";

/// How hard to retry transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// How long to wait before trying again after attempt `attempt` ended in `outcome`: a transient answer (408,
    /// 429, 5xx) or a connection failure waits the service's `Retry-After`, else a jittered exponential backoff, at
    /// most `max_delay`. None: the outcome is final, or the attempts are spent. Shared by the Table and Queue clients.
    pub(crate) fn delay_after(
        &self,
        attempt: u32,
        outcome: &Result<reqwest::Response, reqwest::Error>,
    ) -> Option<Duration> {
        let hint = match outcome {
            Ok(response) if is_transient(response.status()) => retry_after(response.headers()),
            Err(error) if error.is_connect() || error.is_timeout() || error.is_request() => None,
            _ => return None,
        };
        (attempt < self.max_attempts).then(|| {
            hint.unwrap_or_else(|| self.backoff(attempt))
                .min(self.max_delay)
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(10));
        let capped = exponential.min(self.max_delay);
        // Full jitter between half and all of the delay, so racing clients spread out.
        let millis = capped.as_millis().max(2) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(15),
        }
    }
}

/// One entity as read back, with its ETag.
#[derive(Debug, Clone)]
pub(super) struct StoredEntity {
    pub properties: Map<String, Value>,
    pub etag: String,
}

/// What a conditional write ran into.
#[derive(Debug)]
pub(super) enum WriteOutcome {
    Written {
        etag: String,
    },
    /// 404: the entity is not there.
    NotFound,
    /// 409: an insert found the entity already there.
    AlreadyExists,
    /// 412: the ETag no longer matches.
    PreconditionFailed,
}

pub(super) struct TableClient {
    http: reqwest::Client,
    /// The account's table endpoint, without a trailing slash (`https://acct.table.core.windows.net`).
    endpoint: String,
    table: String,
    auth: TableAuth,
    tokens: TokenCache,
    retry: RetryPolicy,
    pub(super) requests: AtomicU64,
    pub(super) retries: AtomicU64,
}

impl TableClient {
    pub(super) fn new(
        http: reqwest::Client,
        endpoint: &Url,
        table: &str,
        auth: TableAuth,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            endpoint: endpoint.as_str().trim_end_matches('/').to_owned(),
            table: table.to_owned(),
            auth,
            tokens: TokenCache::default(),
            retry,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// The absolute URL of one entity (keys must already be escaped: they contain no `'`).
    pub(super) fn entity_url(&self, partition_key: &str, row_key: &str) -> String {
        format!(
            "{}/{}(PartitionKey='{partition_key}',RowKey='{row_key}')",
            self.endpoint, self.table
        )
    }

    fn parse_url(url: &str) -> Result<Url, StateError> {
        Url::parse(url).map_err(|e| StateError::Io(format!("bad table URL {url}: {e}")))
    }

    /// Sends one request with auth and retries; returns the final response (any status) for the caller to judge.
    async fn send(
        &self,
        operation: &str,
        method: Method,
        url: &str,
        extra_headers: &[(&str, String)],
        body: Option<(String, String)>,
    ) -> Result<reqwest::Response, StateError> {
        let url = Self::parse_url(url)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut headers = HeaderMap::new();
            let date = chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            let authorization = match &self.auth {
                TableAuth::SharedKey { account, key } => {
                    shared_key_lite(account, key, &date, &url)?
                }
                TableAuth::Token(credential) => self.tokens.bearer(credential.as_ref()).await?,
            };
            let header = |value: &str| {
                HeaderValue::from_str(value)
                    .map_err(|_| StateError::Io(format!("{operation}: a header value is invalid")))
            };
            headers.insert("x-ms-date", header(&date)?);
            headers.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
            headers.insert("accept", HeaderValue::from_static(ACCEPT));
            headers.insert("dataserviceversion", HeaderValue::from_static("3.0;NetFx"));
            headers.insert(
                "maxdataserviceversion",
                HeaderValue::from_static("3.0;NetFx"),
            );
            let mut auth_value = header(&authorization)?;
            auth_value.set_sensitive(true);
            headers.insert("authorization", auth_value);
            for (name, value) in extra_headers {
                let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| StateError::Io(format!("{operation}: bad header name {name}")))?;
                headers.insert(name, header(value)?);
            }
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers);
            if let Some((content_type, text)) = &body {
                request = request
                    .header("content-type", content_type.as_str())
                    .body(text.clone());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = request.send().await;
            match self.retry.delay_after(attempt, &outcome) {
                Some(delay) => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    let why = match &outcome {
                        Ok(response) => format!("HTTP {}", response.status().as_u16()),
                        Err(error) => error.to_string(),
                    };
                    tracing::debug!(operation, attempt, delay_ms = delay.as_millis() as u64, reason = %why, "Table request retried.");
                    tokio::time::sleep(delay).await;
                }
                // reqwest errors carry the URL (no secrets: keys and tokens travel in headers only).
                None => {
                    return outcome
                        .map_err(|error| StateError::Io(format!("{operation}: {error}")));
                }
            }
        }
    }

    async fn service_error(operation: &str, response: reqwest::Response) -> StateError {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let (code, message) = super::odata::parse_odata_error(&body);
        StateError::Service {
            operation: operation.to_owned(),
            status,
            code,
            message,
        }
    }

    fn etag_of(response: &reqwest::Response) -> String {
        response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// Creates the table; an existing one is fine.
    ///
    /// Azure quirk: with least privilege (Storage Table Data Contributor scoped to the one table, as our infra
    /// assigns it), creating a table is an account-level operation and answers 403 even when the table exists.
    /// A 403 is therefore followed by a one-entity read of the table: if that works, the table is there and
    /// usable; if not, the original 403 is reported (the identity really lacks access).
    pub(super) async fn create_table_if_missing(&self) -> Result<(), StateError> {
        let url = format!("{}/Tables", self.endpoint);
        let body = serde_json::json!({ "TableName": self.table }).to_string();
        let response = self
            .send(
                "create table",
                Method::POST,
                &url,
                &[("prefer", "return-no-content".to_owned())],
                Some(("application/json".to_owned(), body)),
            )
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
            StatusCode::FORBIDDEN => {
                let refused = Self::service_error("create table", response).await;
                if self.table_is_readable().await {
                    Ok(())
                } else {
                    Err(refused)
                }
            }
            _ => Err(Self::service_error("create table", response).await),
        }
    }

    /// Whether one entity of the table can be read (an empty table counts).
    async fn table_is_readable(&self) -> bool {
        let url = format!("{}/{}()?$top=1", self.endpoint, self.table);
        matches!(
            self.send("probe table", Method::GET, &url, &[], None).await,
            Ok(response) if response.status().is_success()
        )
    }

    pub(super) async fn get(
        &self,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Option<StoredEntity>, StateError> {
        let response = self
            .send(
                "get entity",
                Method::GET,
                &self.entity_url(partition_key, row_key),
                &[],
                None,
            )
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let etag = Self::etag_of(&response);
                let properties = response.json::<Map<String, Value>>().await.map_err(|e| {
                    StateError::Io(format!("reading entity {partition_key}/{row_key}: {e}"))
                })?;
                Ok(Some(StoredEntity { properties, etag }))
            }
            _ => Err(Self::service_error("get entity", response).await),
        }
    }

    /// Inserts a new entity (fails with `AlreadyExists` if the keys are taken).
    pub(super) async fn insert(
        &self,
        entity: &Map<String, Value>,
    ) -> Result<WriteOutcome, StateError> {
        let url = format!("{}/{}", self.endpoint, self.table);
        let body = Value::Object(entity.clone()).to_string();
        let response = self
            .send(
                "insert entity",
                Method::POST,
                &url,
                &[("prefer", "return-no-content".to_owned())],
                Some(("application/json".to_owned(), body)),
            )
            .await?;
        self.write_outcome("insert entity", response).await
    }

    /// Replaces an entity: `if_match` = an ETag (compare-and-swap) or `None` (insert-or-replace).
    pub(super) async fn put(
        &self,
        partition_key: &str,
        row_key: &str,
        entity: &Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<WriteOutcome, StateError> {
        let headers: Vec<(&str, String)> = if_match
            .map(|etag| ("if-match", etag.to_owned()))
            .into_iter()
            .collect();
        let body = Value::Object(entity.clone()).to_string();
        let url = self.entity_url(partition_key, row_key);
        let response = self
            .send(
                "replace entity",
                Method::PUT,
                &url,
                &headers,
                Some(("application/json".to_owned(), body)),
            )
            .await?;
        self.write_outcome("replace entity", response).await
    }

    /// Deletes an entity; `if_match` = an ETag or `*`.
    pub(super) async fn delete(
        &self,
        partition_key: &str,
        row_key: &str,
        if_match: &str,
    ) -> Result<WriteOutcome, StateError> {
        let url = self.entity_url(partition_key, row_key);
        let response = self
            .send(
                "delete entity",
                Method::DELETE,
                &url,
                &[("if-match", if_match.to_owned())],
                None,
            )
            .await?;
        self.write_outcome("delete entity", response).await
    }

    async fn write_outcome(
        &self,
        operation: &str,
        response: reqwest::Response,
    ) -> Result<WriteOutcome, StateError> {
        match response.status() {
            StatusCode::NOT_FOUND => Ok(WriteOutcome::NotFound),
            StatusCode::CONFLICT => Ok(WriteOutcome::AlreadyExists),
            StatusCode::PRECONDITION_FAILED => Ok(WriteOutcome::PreconditionFailed),
            s if s.is_success() => Ok(WriteOutcome::Written {
                etag: Self::etag_of(&response),
            }),
            _ => Err(Self::service_error(operation, response).await),
        }
    }

    /// Every entity matching an OData `filter`, following continuation tokens; `select` limits the properties.
    pub(super) async fn query(
        &self,
        filter: &str,
        select: Option<&str>,
    ) -> Result<Vec<Map<String, Value>>, StateError> {
        let mut entities = Vec::new();
        self.query_each(filter, select, &mut |entity| {
            entities.push(entity);
            Ok(())
        })
        .await?;
        Ok(entities)
    }

    /// Queries like [`TableClient::query`], handing each entity to `each` page by page (a page is at most 1,000
    /// entities): a large partition is never held whole.
    pub(super) async fn query_each(
        &self,
        filter: &str,
        select: Option<&str>,
        each: &mut (dyn FnMut(Map<String, Value>) -> Result<(), StateError> + Send),
    ) -> Result<(), StateError> {
        let mut continuation: Option<(String, Option<String>)> = None;
        loop {
            // Spaces must travel as %20 (the service does not read '+' as a space in $filter).
            let mut url = format!(
                "{}/{}()?$filter={}",
                self.endpoint,
                self.table,
                encode_unreserved(filter)
            );
            if let Some(select) = select {
                url.push_str(&format!("&$select={}", encode_unreserved(select)));
            }
            if let Some((next_partition, next_row)) = &continuation {
                url.push_str(&format!(
                    "&NextPartitionKey={}",
                    encode_unreserved(next_partition)
                ));
                if let Some(next_row) = next_row {
                    url.push_str(&format!("&NextRowKey={}", encode_unreserved(next_row)));
                }
            }
            let response = self
                .send("query entities", Method::GET, &url, &[], None)
                .await?;
            if !response.status().is_success() {
                return Err(Self::service_error("query entities", response).await);
            }
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let next_partition = header("x-ms-continuation-nextpartitionkey");
            let next_row = header("x-ms-continuation-nextrowkey");
            let page: Value = response
                .json()
                .await
                .map_err(|e| StateError::Io(format!("reading query page: {e}")))?;
            let mut page = page;
            let Some(Value::Array(items)) = page.get_mut("value").map(Value::take) else {
                return Err(StateError::Io(
                    "query answer has no 'value' array".to_owned(),
                ));
            };
            for item in items {
                if let Value::Object(map) = item {
                    each(map)?;
                }
            }
            match next_partition {
                Some(next_partition) => continuation = Some((next_partition, next_row)),
                None => return Ok(()),
            }
        }
    }

    /// Applies one change set (≤ 100 operations, one partition) all-or-nothing.
    pub(super) async fn batch(
        &self,
        operations: &[BatchOperation],
    ) -> Result<Result<(), FailedOperation>, StateError> {
        let batch_id = uuid::Uuid::new_v4().to_string();
        let (content_type, body) = batch::build_body(operations, &batch_id);
        let url = format!("{}/$batch", self.endpoint);
        let response = self
            .send("batch", Method::POST, &url, &[], Some((content_type, body)))
            .await?;
        if !response.status().is_success() {
            return Err(Self::service_error("batch", response).await);
        }
        let text = response
            .text()
            .await
            .map_err(|e| StateError::Io(format!("reading batch answer: {e}")))?;
        Ok(batch::check_response(&text))
    }
}

/// Whether Azure Storage (Table or Queue service) answered with a status worth retrying.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The `Retry-After` seconds of a Storage answer, if any.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Percent-encodes a query value or a path segment (everything but unreserved characters).
pub(crate) fn encode_unreserved(value: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}
