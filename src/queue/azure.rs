//! A small Azure Storage Queue REST client over `reqwest` (docs/microsoft-facts.md §13): create a queue, put, get,
//! peek, update and delete messages, with the same authentication as the Table client (an account key for Azurite
//! and connection strings, or an Entra token from the managed identity) and retries of throttling and transient
//! failures.
//!
//! - Shared Key for the Queue service signs a longer string than the Table service's Shared Key Lite: the verb, the
//!   standard headers (Content-Length empty when 0), the canonicalized `x-ms-*` headers and the canonicalized
//!   resource `/{account}{path}` followed by every query parameter, lowercased and sorted, as `\nname:value`
//!   ([`string_to_sign`]). With a path-style endpoint (Azurite) the account appears twice, as for tables.
//! - Message text is base64-encoded by default: the Functions queue trigger decodes base64 unless host.json says
//!   `messageEncoding: none`. The service limit, 64 KiB, applies to the encoded text ([`MAX_MESSAGE_BYTES`]).
//! - Retries: 408, 429, 500, 502, 503, 504 and connection failures, honouring `Retry-After`, else exponential
//!   backoff with jitter. A retried Put Message may, rarely, enqueue twice: consumers must be idempotent (the Functions
//!   host delivers at least once anyway).
//! - Errors name the queue and the operation, never a key or a token (both travel in headers only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::{PoisonMessage, QueueError, ShardQueue};
use crate::state::table::{RetryPolicy, TableAuth, TokenCache, encode_unreserved};

/// The REST version sent (bearer tokens need 2017-11-09 or later).
pub const API_VERSION: &str = "2021-12-02";
/// The largest message the service takes, counted on the text as sent (after base64).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The most messages one Get or Peek Messages returns.
pub const MAX_MESSAGES_PER_CALL: u32 = 32;
/// The suffix of the queue the Functions host moves a message to after its last try.
pub const POISON_SUFFIX: &str = "-poison";

/// How message text travels: base64 (what the Functions queue trigger expects by default) or as is (XML-escaped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageEncoding {
    #[default]
    Base64,
    None,
}

/// Where the queue is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AzureQueueConfig {
    /// The account's queue endpoint: `https://{account}.queue.core.windows.net`, or Azurite's path-style
    /// `http://127.0.0.1:10001/devstoreaccount1`.
    pub endpoint: Url,
    /// The queue name (3–63 lowercase letters, digits and single hyphens; see [`check_queue_name`]).
    pub name: String,
    pub auth: TableAuth,
    pub retry: RetryPolicy,
    pub encoding: MessageEncoding,
}

/// One message taken by Get Messages: invisible to others until its visibility timeout ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub id: String,
    /// Needed to delete or update the message; changes with every update.
    pub pop_receipt: String,
    /// How many times the message has been taken, this time included.
    pub dequeue_count: u32,
    /// The decoded text.
    pub text: String,
    /// When it was put (RFC 1123, as the service writes it).
    pub inserted: Option<String>,
}

/// One message seen by Peek Messages (not taken, no pop receipt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedMessage {
    pub id: String,
    pub dequeue_count: u32,
    pub text: String,
    pub inserted: Option<String>,
}

/// Checks a queue name: 3–63 characters, lowercase letters, digits and hyphens, starting and ending with a letter or
/// digit, no two hyphens in a row. `Err` says why.
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let length_ok = (3..=63).contains(&name.len());
    let chars_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends_ok = !name.starts_with('-') && !name.ends_with('-');
    if length_ok && chars_ok && ends_ok && !name.contains("--") {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid queue name (3-63 lowercase letters, digits and single hyphens, starting and \
             ending with a letter or digit)"
        ))
    }
}

/// An Azure Storage queue. Cheap to clone (the HTTP pool, the token cache and the counters are shared).
#[derive(Clone)]
pub struct AzureQueue {
    http: reqwest::Client,
    /// Without a trailing slash.
    endpoint: String,
    name: String,
    auth: TableAuth,
    tokens: Arc<TokenCache>,
    retry: RetryPolicy,
    encoding: MessageEncoding,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
}

impl std::fmt::Debug for AzureQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureQueue")
            .field("endpoint", &self.endpoint)
            .field("name", &self.name)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The parts of a request that are signed.
struct Signed<'a> {
    method: &'a Method,
    url: &'a Url,
    content_length: usize,
    content_type: &'a str,
    /// `x-ms-*` headers, names lowercase.
    ms_headers: &'a [(String, String)],
}

/// The Shared Key string to sign for the Blob, Queue and File services (version 2009-09-19 and later).
fn string_to_sign(account: &str, request: &Signed<'_>) -> String {
    let length = if request.content_length == 0 {
        String::new()
    } else {
        request.content_length.to_string()
    };
    let mut headers: Vec<(String, String)> = request
        .ms_headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let mut resource = format!("/{account}{}", request.url.path());
    let mut parameters: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in request.url.query_pairs() {
        parameters
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in parameters {
        values.sort();
        resource.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    format!(
        "{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{canonical_headers}{resource}",
        method = request.method.as_str(),
        content_type = request.content_type,
    )
}

impl AzureQueue {
    /// A client for `config.name` over the caller's HTTP client (shared pool, extra CA bundle). Nothing is sent yet.
    pub fn new(config: AzureQueueConfig, http: reqwest::Client) -> Result<Self, QueueError> {
        check_queue_name(&config.name).map_err(|reason| QueueError::Transport {
            queue: config.name.clone(),
            operation: "configure",
            message: reason,
        })?;
        Ok(Self {
            http,
            endpoint: config.endpoint.as_str().trim_end_matches('/').to_owned(),
            name: config.name,
            auth: config.auth,
            tokens: Arc::new(TokenCache::default()),
            retry: config.retry,
            encoding: config.encoding,
            counters: Arc::new(Counters::default()),
        })
    }

    /// The queue's name.
    pub fn queue_name(&self) -> &str {
        &self.name
    }

    /// The poison queue of this queue (`{name}-poison`), same account and credentials.
    pub fn poison_queue(&self) -> Self {
        Self {
            name: format!("{}{POISON_SUFFIX}", self.name),
            ..self.clone()
        }
    }

    /// Requests sent so far, and how many of them were retries.
    pub fn request_counts(&self) -> (u64, u64) {
        (
            self.counters.requests.load(Ordering::Relaxed),
            self.counters.retries.load(Ordering::Relaxed),
        )
    }

    fn transport(&self, operation: &'static str, message: impl Into<String>) -> QueueError {
        QueueError::Transport {
            queue: self.name.clone(),
            operation,
            message: message.into(),
        }
    }

    fn queue_url(&self, suffix: &str, query: &[(&str, &str)]) -> Result<Url, QueueError> {
        let mut url = Url::parse(&format!("{}/{}{suffix}", self.endpoint, self.name))
            .map_err(|e| self.transport("build URL", format!("bad queue URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends one request with auth and retries; returns the final response (any status) for the caller to judge.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: &Url,
        body: Option<String>,
    ) -> Result<reqwest::Response, QueueError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let date = chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            let ms_headers = vec![
                ("x-ms-date".to_owned(), date),
                ("x-ms-version".to_owned(), API_VERSION.to_owned()),
            ];
            let content_type = if body.is_some() {
                "application/xml"
            } else {
                ""
            };
            let authorization = match &self.auth {
                TableAuth::SharedKey { account, key } => {
                    let text = string_to_sign(
                        account,
                        &Signed {
                            method: &method,
                            url,
                            content_length: body.as_ref().map_or(0, String::len),
                            content_type,
                            ms_headers: &ms_headers,
                        },
                    );
                    let signature = key
                        .sign(&text)
                        .map_err(|e| self.transport(operation, e.to_string()))?;
                    format!("SharedKey {account}:{signature}")
                }
                TableAuth::Token(credential) => self
                    .tokens
                    .bearer(credential.as_ref())
                    .await
                    .map_err(|e| self.transport(operation, e.to_string()))?,
            };
            let mut headers = HeaderMap::new();
            for (name, value) in &ms_headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| self.transport(operation, "a header name is invalid"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| self.transport(operation, "a header value is invalid"))?;
                headers.insert(name, value);
            }
            let mut auth_value = HeaderValue::from_str(&authorization)
                .map_err(|_| self.transport(operation, "the authorization header is invalid"))?;
            auth_value.set_sensitive(true);
            headers.insert("authorization", auth_value);
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers);
            if let Some(text) = &body {
                request = request
                    .header("content-type", content_type)
                    .body(text.clone());
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = request.send().await;
            match self.retry.delay_after(attempt, &outcome) {
                Some(delay) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let why = match &outcome {
                        Ok(response) => format!("HTTP {}", response.status().as_u16()),
                        Err(error) => error.to_string(),
                    };
                    tracing::debug!(queue = %self.name, operation, attempt, delay_ms = delay.as_millis() as u64, reason = %why, "Queue request retried.");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return outcome.map_err(|error| self.transport(operation, error.to_string()));
                }
            }
        }
    }

    async fn service_error(
        &self,
        operation: &'static str,
        response: reqwest::Response,
    ) -> QueueError {
        let status = response.status().as_u16();
        let header_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        let code = xml_element(&body, "Code").or(header_code);
        let message =
            xml_element(&body, "Message").map(|m| m.lines().next().unwrap_or_default().to_owned());
        let message = match (code, message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code,
            (None, Some(message)) => message,
            (None, None) => "no error details".to_owned(),
        };
        QueueError::Service {
            queue: self.name.clone(),
            operation,
            status,
            message,
        }
    }

    /// Creates the queue; an existing one is fine.
    ///
    /// Azure quirk, as for tables: with data-plane roles only (Message Sender / Processor / Reader scoped to the
    /// queue, as our infrastructure assigns them), Create Queue answers 403 even when the queue exists. A 403 is
    /// followed by a one-message peek: if that works the queue is there; if not, the 403 is reported.
    pub async fn create_if_missing(&self) -> Result<(), QueueError> {
        let url = self.queue_url("", &[])?;
        let response = self.send("create queue", Method::PUT, &url, None).await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
            StatusCode::FORBIDDEN => {
                let refused = self.service_error("create queue", response).await;
                if self.peek(1).await.is_ok() {
                    Ok(())
                } else {
                    Err(refused)
                }
            }
            _ => Err(self.service_error("create queue", response).await),
        }
    }

    /// The text as it travels, checked against the service limit.
    fn encode(&self, text: &str) -> Result<String, QueueError> {
        let encoded = match self.encoding {
            MessageEncoding::Base64 => BASE64.encode(text.as_bytes()),
            MessageEncoding::None => escape_xml(text),
        };
        if encoded.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge {
                queue: self.name.clone(),
                bytes: encoded.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        Ok(encoded)
    }

    fn decode(&self, operation: &'static str, raw: &str) -> Result<String, QueueError> {
        let unescaped = unescape_xml(raw);
        match self.encoding {
            MessageEncoding::None => Ok(unescaped),
            MessageEncoding::Base64 => {
                let bytes = BASE64.decode(unescaped.trim()).map_err(|_| {
                    self.transport(operation, "a message is not base64 (sent by someone else?)")
                })?;
                String::from_utf8(bytes)
                    .map_err(|_| self.transport(operation, "a message is not UTF-8 text"))
            }
        }
    }

    /// Puts one message (Put Message). A missing queue is created once, then the put is repeated.
    pub async fn put(&self, text: &str) -> Result<(), QueueError> {
        let encoded = self.encode(text)?;
        let body = format!("<QueueMessage><MessageText>{encoded}</MessageText></QueueMessage>");
        let url = self.queue_url("/messages", &[])?;
        let mut created = false;
        loop {
            let response = self
                .send("put message", Method::POST, &url, Some(body.clone()))
                .await?;
            match response.status() {
                s if s.is_success() => return Ok(()),
                StatusCode::NOT_FOUND if !created => {
                    created = true;
                    self.create_if_missing().await?;
                }
                _ => return Err(self.service_error("put message", response).await),
            }
        }
    }

    /// Takes up to `max` messages (1–32) for `visibility` (Get Messages). A missing queue has no messages.
    pub async fn get(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let count = max.clamp(1, MAX_MESSAGES_PER_CALL).to_string();
        let seconds = visibility.as_secs().max(1).to_string();
        let url = self.queue_url(
            "/messages",
            &[("numofmessages", &count), ("visibilitytimeout", &seconds)],
        )?;
        let response = self.send("get messages", Method::GET, &url, None).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(self.service_error("get messages", response).await);
        }
        let body = response
            .text()
            .await
            .map_err(|e| self.transport("get messages", e.to_string()))?;
        xml_elements(&body, "QueueMessage")
            .into_iter()
            .map(|message| {
                let field = |name: &str| xml_element(message, name);
                Ok(ReceivedMessage {
                    id: field("MessageId")
                        .ok_or_else(|| self.transport("get messages", "a message has no id"))?,
                    pop_receipt: field("PopReceipt").map(|r| unescape_xml(&r)).ok_or_else(
                        || self.transport("get messages", "a message has no pop receipt"),
                    )?,
                    dequeue_count: field("DequeueCount")
                        .and_then(|c| c.trim().parse().ok())
                        .unwrap_or(1),
                    text: self.decode("get messages", &field("MessageText").unwrap_or_default())?,
                    inserted: field("InsertionTime"),
                })
            })
            .collect()
    }

    /// Looks at up to `max` messages (1–32) without taking them (Peek Messages). A missing queue has none.
    pub async fn peek(&self, max: u32) -> Result<Vec<PeekedMessage>, QueueError> {
        let count = max.clamp(1, MAX_MESSAGES_PER_CALL).to_string();
        let url = self.queue_url(
            "/messages",
            &[("peekonly", "true"), ("numofmessages", &count)],
        )?;
        let response = self.send("peek messages", Method::GET, &url, None).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(self.service_error("peek messages", response).await);
        }
        let body = response
            .text()
            .await
            .map_err(|e| self.transport("peek messages", e.to_string()))?;
        xml_elements(&body, "QueueMessage")
            .into_iter()
            .map(|message| {
                let field = |name: &str| xml_element(message, name);
                Ok(PeekedMessage {
                    id: field("MessageId")
                        .ok_or_else(|| self.transport("peek messages", "a message has no id"))?,
                    dequeue_count: field("DequeueCount")
                        .and_then(|c| c.trim().parse().ok())
                        .unwrap_or(0),
                    text: self
                        .decode("peek messages", &field("MessageText").unwrap_or_default())?,
                    inserted: field("InsertionTime"),
                })
            })
            .collect()
    }

    /// Deletes a taken message (Delete Message). Already gone (404) is fine: someone else finished it.
    pub async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        let url = self.queue_url(
            &format!("/messages/{}", encode_unreserved(id)),
            &[("popreceipt", pop_receipt)],
        )?;
        let response = self
            .send("delete message", Method::DELETE, &url, None)
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.service_error("delete message", response).await),
        }
    }

    /// Makes a taken message visible again after `visibility` (Update Message, text unchanged); returns the new pop
    /// receipt. This is how the Functions host releases a message whose invocation failed.
    pub async fn release(
        &self,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String, QueueError> {
        let seconds = visibility.as_secs().to_string();
        let url = self.queue_url(
            &format!("/messages/{}", encode_unreserved(id)),
            &[("popreceipt", pop_receipt), ("visibilitytimeout", &seconds)],
        )?;
        let response = self.send("update message", Method::PUT, &url, None).await?;
        if !response.status().is_success() {
            return Err(self.service_error("update message", response).await);
        }
        Ok(response
            .headers()
            .get("x-ms-popreceipt")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned())
    }
}

#[async_trait]
impl ShardQueue for AzureQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, text: &str) -> Result<(), QueueError> {
        self.put(text).await
    }

    async fn poisoned(&self, max: usize) -> Result<Vec<PoisonMessage>, QueueError> {
        let max = u32::try_from(max.min(MAX_MESSAGES_PER_CALL as usize)).unwrap_or(1);
        if max == 0 {
            return Ok(Vec::new());
        }
        let peeked = self.poison_queue().peek(max).await?;
        Ok(peeked
            .into_iter()
            .map(|message| PoisonMessage {
                id: message.id,
                text: message.text,
                inserted: message.inserted.and_then(|time| {
                    chrono::DateTime::parse_from_rfc2822(&time)
                        .ok()
                        .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339())
                }),
            })
            .collect())
    }
}

/// The text of the first `<name>…</name>` in `xml` (raw: entities not decoded). The service's answers are small,
/// flat and free of attributes on these elements, so a full XML parser is not needed.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].to_owned())
}

/// Every `<name>…</name>` body in `xml`, in order.
fn xml_elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let body_start = start + open.len();
        let Some(end) = rest[body_start..].find(&close) else {
            break;
        };
        found.push(&rest[body_start..body_start + end]);
        rest = &rest[body_start + end + close.len()..];
    }
    found
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn unescape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_service_rules() {
        assert!(check_queue_name("galbridge-phones-shards").is_ok());
        for bad in [
            "ab",
            "Upper",
            "two--hyphens",
            "-lead",
            "trail-",
            "under_score",
        ] {
            assert!(check_queue_name(bad).is_err(), "{bad}");
        }
        assert!(check_queue_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn the_string_to_sign_has_every_standard_header_line_and_sorted_query_parameters() {
        let url = Url::parse(
            "http://127.0.0.1:10001/devstoreaccount1/q/messages?visibilitytimeout=30&numofmessages=2",
        )
        .expect("a URL");
        let headers = vec![
            ("x-ms-version".to_owned(), API_VERSION.to_owned()),
            (
                "x-ms-date".to_owned(),
                "Sun, 06 Dec 2026 17:00:00 GMT".to_owned(),
            ),
        ];
        let text = string_to_sign(
            "devstoreaccount1",
            &Signed {
                method: &Method::GET,
                url: &url,
                content_length: 0,
                content_type: "",
                ms_headers: &headers,
            },
        );
        assert_eq!(
            text,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 06 Dec 2026 17:00:00 GMT\nx-ms-version:2021-12-02\n\
             /devstoreaccount1/devstoreaccount1/q/messages\nnumofmessages:2\nvisibilitytimeout:30"
        );
        let put = string_to_sign(
            "acct",
            &Signed {
                method: &Method::POST,
                url: &Url::parse("https://acct.queue.core.windows.net/q/messages").expect("URL"),
                content_length: 42,
                content_type: "application/xml",
                ms_headers: &[],
            },
        );
        assert_eq!(
            put,
            "POST\n\n\n42\n\napplication/xml\n\n\n\n\n\n\n/acct/q/messages"
        );
    }

    #[test]
    fn xml_answers_are_read_and_entities_decoded() {
        let xml = "<?xml version=\"1.0\"?><QueueMessagesList><QueueMessage><MessageId>a</MessageId>\
                   <PopReceipt>AgAAAA+x</PopReceipt><DequeueCount>2</DequeueCount><MessageText>x&amp;y</MessageText>\
                   </QueueMessage><QueueMessage><MessageId>b</MessageId></QueueMessage></QueueMessagesList>";
        let messages = xml_elements(xml, "QueueMessage");
        assert_eq!(messages.len(), 2);
        assert_eq!(
            xml_element(messages[0], "DequeueCount").as_deref(),
            Some("2")
        );
        assert_eq!(unescape_xml("x&amp;y&#65;&#x42;&lt;"), "x&yAB<");
        assert_eq!(unescape_xml("a & b"), "a & b");
        assert_eq!(
            unescape_xml(&escape_xml("<a href='x'>&</a>")),
            "<a href='x'>&</a>"
        );
    }

    /// A stand-in queue endpoint answering from a script of statuses (the real service cannot be made to throttle).
    async fn scripted_endpoint(
        statuses: Vec<(u16, &'static str)>,
    ) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::StatusCode as AxumStatus;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let app = axum::Router::new().fallback(move || {
            let seen = Arc::clone(&seen);
            let statuses = statuses.clone();
            async move {
                let call = seen.fetch_add(1, Ordering::SeqCst);
                let (status, code) = statuses[call.min(statuses.len() - 1)];
                let body = format!(
                    "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>scripted\nRequestId:x</Message></Error>"
                );
                (
                    AxumStatus::from_u16(status).expect("a status"),
                    [("x-ms-error-code", code)],
                    body,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let port = listener.local_addr().expect("an address").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/acct")).expect("URL");
        (url, calls)
    }

    fn client_for(endpoint: Url, key: &str) -> AzureQueue {
        AzureQueue::new(
            AzureQueueConfig {
                endpoint,
                name: "shards".to_owned(),
                auth: TableAuth::SharedKey {
                    account: "acct".to_owned(),
                    key: crate::state::table::AccountKey::from_base64(key).expect("base64"),
                },
                retry: RetryPolicy {
                    max_attempts: 8,
                    base_delay: Duration::from_millis(5),
                    max_delay: Duration::from_millis(50),
                },
                encoding: MessageEncoding::Base64,
            },
            crate::m365::http::build_http_client(&Default::default()).expect("client"),
        )
        .expect("a valid queue")
    }

    #[tokio::test]
    async fn server_busy_and_429_are_retried_until_the_message_is_accepted() {
        let (endpoint, calls) = scripted_endpoint(vec![
            (503, "ServerBusy"),
            (500, "OperationTimedOut"),
            (429, "TooManyRequests"),
            (201, ""),
        ])
        .await;
        let queue = client_for(endpoint, "c2VjcmV0LWtleQ==");

        queue
            .put("{}")
            .await
            .expect("accepted after the throttling");

        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(queue.request_counts(), (4, 3));
    }

    #[tokio::test]
    async fn a_refusal_names_the_queue_the_operation_and_the_service_code_never_the_key() {
        let (endpoint, _) = scripted_endpoint(vec![(403, "AuthenticationFailed")]).await;
        let key = "c2VjcmV0LWtleQ==";
        let queue = client_for(endpoint, key);

        let error = queue.put("{}").await.expect_err("refused").to_string();

        assert_eq!(
            error,
            "queue shards: put message failed with HTTP 403: AuthenticationFailed: scripted"
        );
        assert!(!error.contains(key));
        assert_eq!(queue.request_counts(), (1, 0), "a refusal is not retried");
    }
}
