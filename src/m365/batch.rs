//! Graph JSON batching (`POST /v1.0/$batch`): the executor every Graph write goes through.
//!
//! Rules from docs/microsoft-facts.md §4 and Graph's batching doc: at most 20 requests per batch (longer lists are cut into
//! chunks of 20, run one after another so `dependsOn` across chunks still holds); `dependsOn` orders requests and a
//! failed dependency answers 424; the outer status is 200 even when inner requests fail; **each inner request is
//! throttled on its own**, so only the failed ids are retried, after the longest inner `Retry-After`; a 424 whose
//! dependency is retried is retried with it. Outlook runs at most 4 requests of one batch at a time, so a batch to one
//! mailbox holds up to 4 units of that mailbox's limiter.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::graph::{GraphClient, GraphError, api_error, segment};
use super::http::ApiRequest;
use super::retry::{is_throttling_status, parse_retry_after};

/// Graph's limit of requests in one `$batch`.
pub const MAX_BATCH_SIZE: usize = 20;

/// One inner request. `url` is relative to the version root and starts with `/` (e.g. `/users/{id}/contacts/{cid}`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    /// Unique within the call; answers are matched by it.
    pub id: String,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// Ids that must succeed before this one runs.
    pub depends_on: Vec<String>,
}

impl BatchRequest {
    /// A request without body.
    pub fn new(id: impl Into<String>, method: Method, url: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            depends_on: Vec::new(),
        }
    }

    /// With a JSON body.
    pub fn with_json(mut self, body: Value) -> Self {
        self.headers
            .push(("Content-Type".to_owned(), "application/json".to_owned()));
        self.body = Some(body);
        self
    }

    /// Runs only after `id` succeeded.
    pub fn depends_on(mut self, id: impl Into<String>) -> Self {
        self.depends_on.push(id.into());
        self
    }

    /// `POST /users/{mailbox}/contactFolders/{folder}/contacts` (or `/users/{mailbox}/contacts` for the default folder).
    pub fn create_contact(
        id: impl Into<String>,
        mailbox: &str,
        folder_id: Option<&str>,
        contact: Value,
    ) -> Self {
        let url = match folder_id {
            Some(folder) => format!(
                "/users/{}/contactFolders/{}/contacts",
                segment(mailbox),
                segment(folder)
            ),
            None => format!("/users/{}/contacts", segment(mailbox)),
        };
        Self::new(id, Method::POST, url).with_json(contact)
    }

    /// `PATCH /users/{mailbox}/contacts/{contact}` with only the changed fields.
    pub fn patch_contact(
        id: impl Into<String>,
        mailbox: &str,
        contact_id: &str,
        changes: Value,
    ) -> Self {
        let url = format!(
            "/users/{}/contacts/{}",
            segment(mailbox),
            segment(contact_id)
        );
        Self::new(id, Method::PATCH, url).with_json(changes)
    }

    /// `DELETE /users/{mailbox}/contacts/{contact}`.
    pub fn delete_contact(id: impl Into<String>, mailbox: &str, contact_id: &str) -> Self {
        let url = format!(
            "/users/{}/contacts/{}",
            segment(mailbox),
            segment(contact_id)
        );
        Self::new(id, Method::DELETE, url)
    }

    /// `PUT /users/{mailbox}/contacts/{contact}/photo/$value` inside a batch: binary bodies travel base64 with their
    /// content type (Graph batching doc).
    pub fn put_contact_photo(
        id: impl Into<String>,
        mailbox: &str,
        contact_id: &str,
        jpeg: &[u8],
    ) -> Self {
        let url = format!(
            "/users/{}/contacts/{}/photo/$value",
            segment(mailbox),
            segment(contact_id)
        );
        let mut request = Self::new(id, Method::PUT, url);
        request
            .headers
            .push(("Content-Type".to_owned(), "image/jpeg".to_owned()));
        request.body = Some(Value::String(
            base64::engine::general_purpose::STANDARD.encode(jpeg),
        ));
        request
    }

    /// The wire form of this request, borrowing everything (no clone of the body): serialised straight into the
    /// envelope's bytes.
    fn wire<'a>(&'a self, depends_on: Vec<&'a str>) -> WireRequest<'a> {
        WireRequest {
            id: &self.id,
            method: self.method.as_str(),
            url: &self.url,
            headers: WireHeaders(&self.headers),
            body: self.body.as_ref(),
            depends_on,
        }
    }
}

/// One inner request as Graph's `$batch` envelope spells it.
#[derive(Serialize)]
struct WireRequest<'a> {
    id: &'a str,
    method: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "WireHeaders::is_empty")]
    headers: WireHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a Value>,
    #[serde(rename = "dependsOn", skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<&'a str>,
}

/// Inner request headers as a JSON object.
struct WireHeaders<'a>(&'a [(String, String)]);

impl WireHeaders<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for WireHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}

#[derive(Serialize)]
struct WireEnvelope<'a> {
    requests: Vec<WireRequest<'a>>,
}

/// Graph's `$batch` answer, read tolerantly: an item without a string id is skipped, a missing status is a 500.
#[derive(Deserialize)]
struct WireAnswers {
    #[serde(default)]
    responses: Vec<WireAnswer>,
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    status: Value,
    #[serde(default)]
    headers: Value,
    #[serde(default)]
    body: Value,
}

/// The final answer to one inner request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResponse {
    pub id: String,
    pub status: u16,
    pub headers: Map<String, Value>,
    pub body: Value,
}

impl BatchResponse {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `error.code` of the inner body.
    pub fn error_code(&self) -> Option<&str> {
        self.body.get("error")?.get("code")?.as_str()
    }

    /// `error.message` of the inner body.
    pub fn error_message(&self) -> Option<&str> {
        self.body.get("error")?.get("message")?.as_str()
    }

    /// The mailbox refuses REST (`MailboxNotEnabledForRESTAPI`): skip it and report.
    pub fn is_mailbox_not_enabled(&self) -> bool {
        self.error_code()
            .is_some_and(|code| code.eq_ignore_ascii_case("MailboxNotEnabledForRESTAPI"))
    }

    fn retry_after(&self) -> Option<Duration> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, value)| match value {
                Value::String(text) => parse_retry_after(text, Utc::now()),
                Value::Number(number) => number.as_u64().map(Duration::from_secs),
                _ => None,
            })
    }

    fn synthetic(id: &str, status: u16, code: &str, message: &str) -> Self {
        Self {
            id: id.to_owned(),
            status,
            headers: Map::new(),
            body: json!({"error": {"code": code, "message": message}}),
        }
    }
}

impl GraphClient {
    /// Runs `requests` as `$batch` calls of up to 20 and returns one final answer per request, in input order.
    /// Throttled inner requests (429/503/504) are retried on their own until the retry policy's attempts run out;
    /// their last answer is returned then. `mailbox` names the mailbox all requests concern (its limiter applies).
    /// An `Err` means a whole batch could not be sent (transport, token, foreign host, outer non-2xx).
    pub async fn batch(
        &self,
        mailbox: Option<&str>,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        let order: Vec<String> = requests.iter().map(|request| request.id.clone()).collect();
        let mut finished: HashMap<String, BatchResponse> = HashMap::with_capacity(requests.len());
        let mut remaining = requests.into_iter().peekable();
        while remaining.peek().is_some() {
            let chunk: Vec<BatchRequest> = remaining.by_ref().take(MAX_BATCH_SIZE).collect();
            self.run_chunk(mailbox, chunk, &mut finished).await?;
        }
        Ok(order
            .iter()
            .map(|id| {
                finished.remove(id).unwrap_or_else(|| {
                    BatchResponse::synthetic(
                        id,
                        500,
                        "galbridgeNoAnswer",
                        "no answer in $batch response",
                    )
                })
            })
            .collect())
    }

    async fn run_chunk(
        &self,
        mailbox: Option<&str>,
        chunk: Vec<BatchRequest>,
        finished: &mut HashMap<String, BatchResponse>,
    ) -> Result<(), GraphError> {
        let policy = self.api.retry_policy().clone();
        let url = self.url("$batch", &[])?;
        let mut pending = chunk;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // Requests whose dependency already failed for good never run: they get the 424 Graph would give.
            let failed_dependency = |request: &BatchRequest| {
                request
                    .depends_on
                    .iter()
                    .any(|dep| finished.get(dep).is_some_and(|answer| !answer.is_success()))
            };
            let (blocked, runnable): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|r| failed_dependency(r));
            for request in blocked {
                let answer = BatchResponse::synthetic(
                    &request.id,
                    424,
                    "FailedDependency",
                    "a request it depends on failed",
                );
                finished.insert(request.id, answer);
            }
            if runnable.is_empty() {
                return Ok(());
            }
            let in_batch: HashSet<&str> =
                runnable.iter().map(|request| request.id.as_str()).collect();
            let envelope = WireEnvelope {
                requests: runnable
                    .iter()
                    .map(|request| {
                        // A dependency that already succeeded in an earlier attempt or chunk is not in this batch.
                        let deps: Vec<&str> = request
                            .depends_on
                            .iter()
                            .map(String::as_str)
                            .filter(|dep| in_batch.contains(dep))
                            .collect();
                        request.wire(deps)
                    })
                    .collect(),
            };
            let body = serde_json::to_vec(&envelope).map_err(|error| GraphError::Decode {
                path: url.path().to_owned(),
                message: format!("encoding the $batch envelope: {error}"),
            })?;
            let weight = u32::try_from(runnable.len().min(4)).unwrap_or(4);
            let mut request = ApiRequest::new(Method::POST, url.clone())
                .bytes(body, "application/json")
                .idempotent(false);
            let limiter = mailbox.map(|mailbox| self.mailbox_limiters.get(mailbox));
            if let Some(limiter) = &limiter {
                request = request.limited(limiter.clone(), weight);
            }
            self.api.counters().count_batch_inner(runnable.len() as u64);
            // Graph counts each inner request against the app's limit.
            let request = self.paced(request, u32::try_from(runnable.len()).unwrap_or(u32::MAX));
            let response = self.api.send(request).await?;
            if !response.is_success() {
                return Err(api_error(&Method::POST, &url, &response, mailbox));
            }
            // Typed, so each inner body moves out of the envelope instead of being cloned from a parsed tree.
            let parsed: WireAnswers = response.json().map_err(|error| GraphError::Decode {
                path: url.path().to_owned(),
                message: error.to_string(),
            })?;
            let mut answers: HashMap<String, BatchResponse> = HashMap::new();
            for item in parsed.responses {
                let Value::String(id) = item.id else {
                    continue;
                };
                let status = item.status.as_u64().unwrap_or(500);
                let headers = match item.headers {
                    Value::Object(headers) => headers,
                    _ => Map::new(),
                };
                answers.insert(
                    id.clone(),
                    BatchResponse {
                        id,
                        status: u16::try_from(status).unwrap_or(500),
                        headers,
                        body: item.body,
                    },
                );
            }

            let throttled_ids: HashSet<String> = answers
                .values()
                .filter(|answer| is_throttling_status(answer.status))
                .map(|answer| answer.id.clone())
                .collect();
            let mut retry = Vec::new();
            let mut longest_wait: Option<Duration> = None;
            let mut saw_429 = false;
            for request in runnable {
                let answer = answers.remove(&request.id).unwrap_or_else(|| {
                    BatchResponse::synthetic(
                        &request.id,
                        500,
                        "galbridgeNoAnswer",
                        "no answer in $batch response",
                    )
                });
                let throttled = is_throttling_status(answer.status);
                let waits_on_retried = answer.status == 424
                    && request
                        .depends_on
                        .iter()
                        .any(|dep| throttled_ids.contains(dep));
                if (throttled || waits_on_retried) && attempt < policy.max_attempts {
                    if throttled {
                        saw_429 |= answer.status == 429 || answer.status == 503;
                        let wait = answer.retry_after();
                        longest_wait = longest_wait.max(wait);
                        self.api.counters().count_throttled_retry();
                    }
                    retry.push(request);
                } else {
                    finished.insert(request.id.clone(), answer);
                }
            }
            if retry.is_empty() {
                return Ok(());
            }
            if saw_429 && let Some(limiter) = &limiter {
                limiter.record_throttle();
            }
            let wait = policy.delay_for(attempt, longest_wait);
            tracing::debug!(
                retried = retry.len(),
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Retrying throttled $batch inner requests."
            );
            tokio::time::sleep(wait).await;
            pending = retry;
        }
    }
}
