//! The Azure Functions custom-handler invocation payloads, parsed tolerantly (docs/microsoft-facts.md §7), and the
//! response envelope `{Outputs, Logs, ReturnValue}`.
//!
//! Quirks the host really has, and which this parser accepts:
//! - keys are PascalCase (`Data`, `Metadata`, `Url`, ...) but we match them case-insensitively;
//! - a timer's `ScheduleStatus` is `null` on the first run (and for some schedules), and the timer object may
//!   arrive as a JSON-encoded string instead of an object;
//! - an HTTP request's `Query` is an object on new hosts and a JSON-encoded string on old ones; header and query
//!   values may be strings or arrays of strings; `Body` is a string (or null), never parsed JSON;
//! - the binding names are whatever `function.json` says (`timer`, `req`): we look them up by name first, then by
//!   shape;
//! - a queue trigger's message (`Data.{binding}`) is a JSON string holding the decoded message text, but a host may
//!   hand a JSON message over already parsed; `Metadata.DequeueCount` may be a number or a string
//!   (docs/microsoft-facts.md §13).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// Why an invocation payload could not be understood at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the invocation body is not JSON: {0}")]
    NotJson(String),
    #[error("the invocation body is not a JSON object")]
    NotAnObject,
    #[error("`Data` is not an object")]
    DataNotAnObject,
    #[error("the HTTP trigger data has no request (no `{0}` binding with a Method)")]
    NoHttpRequest(String),
    #[error("binding `{binding}` is malformed: {reason}")]
    BadBinding { binding: String, reason: String },
}

/// The parts of an invocation every function gets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Invocation {
    /// `Data`: one entry per input binding.
    pub data: Map<String, Value>,
    /// `Metadata`: trigger metadata (unused beyond logging).
    pub metadata: Map<String, Value>,
}

/// The timer binding of `SyncTimer`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimerInfo {
    pub is_past_due: bool,
    /// Absent when the host sends `ScheduleStatus: null` or leaves it out.
    pub last: Option<String>,
    pub next: Option<String>,
}

/// The HTTP binding of `SyncHttp` and `Status`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRequestData {
    pub url: String,
    /// Uppercase.
    pub method: String,
    pub query: BTreeMap<String, String>,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
    pub body: Option<String>,
}

/// One queue message delivered by a queue trigger (`PhonesShard`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDelivery {
    /// The message text as it was sent (JSON, for shards).
    pub text: String,
    /// How many times the host has taken the message, this delivery included (1 on the first try); 0 if absent.
    pub dequeue_count: u32,
    /// The queue service's message id, if the host says.
    pub id: Option<String>,
}

/// Finds a key ignoring ASCII case (the host writes PascalCase; be lenient).
fn get_ci<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value)
    })
}

/// An object, or a JSON string that decodes to one (the host's two ways of sending a nested object).
fn as_object_lenient(value: &Value) -> Result<Option<Map<String, Value>>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Object(object) => Ok(Some(object.clone())),
        Value::String(text) if text.trim().is_empty() => Ok(None),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => Ok(Some(object)),
            Ok(Value::Null) => Ok(None),
            Ok(_) => Err("a JSON string that does not hold an object".to_owned()),
            Err(error) => Err(format!("a string that is not JSON ({error})")),
        },
        other => Err(format!("expected an object, got {}", kind_of(other))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A scalar as text; arrays give their first element (query and header values may come as lists).
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Array(items) => items.first().and_then(as_text),
        Value::Null | Value::Object(_) => None,
    }
}

fn text_map(
    binding: &str,
    field: &str,
    value: Option<&Value>,
    lowercase_keys: bool,
) -> Result<BTreeMap<String, String>, EnvelopeError> {
    let Some(value) = value else {
        return Ok(BTreeMap::new());
    };
    let object = as_object_lenient(value).map_err(|reason| EnvelopeError::BadBinding {
        binding: binding.to_owned(),
        reason: format!("{field} is {reason}"),
    })?;
    Ok(object
        .unwrap_or_default()
        .iter()
        .filter_map(|(key, value)| {
            let key = if lowercase_keys {
                key.to_ascii_lowercase()
            } else {
                key.clone()
            };
            as_text(value).map(|text| (key, text))
        })
        .collect())
}

impl Invocation {
    /// Parses the body the host POSTs to `/{FunctionName}`.
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| EnvelopeError::NotJson(error.to_string()))?;
        let Value::Object(root) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        let data = match get_ci(&root, "Data") {
            None | Some(Value::Null) => Map::new(),
            Some(value) => as_object_lenient(value)
                .map_err(|_| EnvelopeError::DataNotAnObject)?
                .unwrap_or_default(),
        };
        let metadata = get_ci(&root, "Metadata")
            .and_then(|value| as_object_lenient(value).ok().flatten())
            .unwrap_or_default();
        Ok(Self { data, metadata })
    }

    /// The timer binding (`binding` by name, else any entry shaped like a timer). A missing timer is not an error:
    /// the invocation itself is the tick.
    pub fn timer(&self, binding: &str) -> Result<TimerInfo, EnvelopeError> {
        let candidate = get_ci(&self.data, binding).or_else(|| {
            self.data.values().find(|value| {
                matches!(as_object_lenient(value), Ok(Some(object)) if get_ci(&object, "Schedule").is_some() || get_ci(&object, "IsPastDue").is_some())
            })
        });
        let Some(value) = candidate else {
            return Ok(TimerInfo::default());
        };
        let bad = |reason: String| EnvelopeError::BadBinding {
            binding: binding.to_owned(),
            reason,
        };
        let timer = as_object_lenient(value).map_err(bad)?.unwrap_or_default();
        let is_past_due = match get_ci(&timer, "IsPastDue") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
            Some(other) => return Err(bad(format!("IsPastDue is {}", kind_of(other)))),
        };
        let status = match get_ci(&timer, "ScheduleStatus") {
            None => None,
            Some(value) => as_object_lenient(value)
                .map_err(|reason| bad(format!("ScheduleStatus is {reason}")))?,
        };
        let field = |name: &str| {
            status
                .as_ref()
                .and_then(|status| get_ci(status, name))
                .and_then(as_text)
        };
        Ok(TimerInfo {
            is_past_due,
            last: field("Last"),
            next: field("Next"),
        })
    }

    /// The HTTP request binding (`binding` by name, else any entry with a `Method`).
    pub fn http_request(&self, binding: &str) -> Result<HttpRequestData, EnvelopeError> {
        let is_request = |value: &&Value| matches!(as_object_lenient(value), Ok(Some(object)) if get_ci(&object, "Method").is_some());
        let value = get_ci(&self.data, binding)
            .filter(is_request)
            .or_else(|| self.data.values().find(is_request))
            .ok_or_else(|| EnvelopeError::NoHttpRequest(binding.to_owned()))?;
        let bad = |reason: String| EnvelopeError::BadBinding {
            binding: binding.to_owned(),
            reason,
        };
        let request = as_object_lenient(value).map_err(bad)?.unwrap_or_default();
        let method = get_ci(&request, "Method")
            .and_then(as_text)
            .ok_or_else(|| bad("Method is not a string".to_owned()))?
            .to_ascii_uppercase();
        let url = get_ci(&request, "Url")
            .and_then(as_text)
            .unwrap_or_default();
        let body = match get_ci(&request, "Body") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            // Not what the host sends, but harmless: keep the JSON text.
            Some(other) => Some(other.to_string()),
        };
        Ok(HttpRequestData {
            url,
            method,
            query: text_map(binding, "Query", get_ci(&request, "Query"), false)?,
            headers: text_map(binding, "Headers", get_ci(&request, "Headers"), true)?,
            params: text_map(binding, "Params", get_ci(&request, "Params"), false)?,
            body,
        })
    }
}

impl Invocation {
    /// The queue message of a queue-triggered invocation (`binding` by name), `None` when the binding is absent or
    /// null. A string is the message text; any other JSON (a host that parsed the JSON message) is written back as
    /// JSON text.
    pub fn queue_message(&self, binding: &str) -> Option<QueueDelivery> {
        let text = match get_ci(&self.data, binding)? {
            Value::Null => return None,
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let dequeue_count = get_ci(&self.metadata, "DequeueCount")
            .and_then(|value| match value {
                Value::Number(number) => number.as_u64(),
                Value::String(text) => text.trim().parse().ok(),
                _ => None,
            })
            .and_then(|count| u32::try_from(count).ok())
            .unwrap_or(0);
        let id = get_ci(&self.metadata, "Id")
            .and_then(as_text)
            .filter(|id| !id.is_empty());
        Some(QueueDelivery {
            text,
            dequeue_count,
            id,
        })
    }
}

impl HttpRequestData {
    /// The path of `Url` (without query), e.g. `/api/sync/acme-to-northern`.
    pub fn path(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(url) => url.path().to_owned(),
            Err(_) => self
                .url
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// The HTTP output binding `res`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpOutput {
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    pub body: String,
    pub headers: BTreeMap<String, String>,
}

/// What the handler answers the host: `{"Outputs":{...},"Logs":[...],"ReturnValue":null}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    pub outputs: BTreeMap<String, HttpOutput>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Option<Value>,
}

impl InvocationResponse {
    /// A response without outputs (timer).
    pub fn logs_only(logs: Vec<String>) -> Self {
        Self {
            outputs: BTreeMap::new(),
            logs,
            return_value: None,
        }
    }

    /// A response with the HTTP output `res` carrying a text `body` of `content_type` (the status page).
    pub fn http_text(
        status: u16,
        body: String,
        content_type: &str,
        extra_headers: &[(&str, &str)],
        logs: Vec<String>,
    ) -> Self {
        let mut headers = BTreeMap::from([("Content-Type".to_owned(), content_type.to_owned())]);
        for (name, value) in extra_headers {
            headers.insert((*name).to_owned(), (*value).to_owned());
        }
        Self {
            outputs: BTreeMap::from([(
                "res".to_owned(),
                HttpOutput {
                    status_code: status,
                    body,
                    headers,
                },
            )]),
            logs,
            return_value: None,
        }
    }

    /// A response with the HTTP output `res` carrying `body` as JSON.
    pub fn http(
        status: u16,
        body: &impl Serialize,
        extra_headers: &[(&str, &str)],
        logs: Vec<String>,
    ) -> Self {
        let body = serde_json::to_string(body).unwrap_or_else(|error| {
            format!("{{\"error\":\"response could not be serialized: {error}\"}}")
        });
        let mut headers =
            BTreeMap::from([("Content-Type".to_owned(), "application/json".to_owned())]);
        for (name, value) in extra_headers {
            headers.insert((*name).to_owned(), (*value).to_owned());
        }
        let output = HttpOutput {
            status_code: status,
            body,
            headers,
        };
        Self {
            outputs: BTreeMap::from([("res".to_owned(), output)]),
            logs,
            return_value: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_message_arrives_as_a_string_or_as_parsed_json() {
        let as_string = Invocation::parse(
            br#"{"Data":{"shard":"{\"run\":\"r1\",\"mailboxes\":[\"a\"]}"},
                 "Metadata":{"DequeueCount":2,"Id":"5c0f","PopReceipt":"AgAA","sys":{"MethodName":"PhonesShard"}}}"#,
        )
        .expect("parses");
        let delivery = as_string.queue_message("shard").expect("a message");
        assert_eq!(delivery.text, r#"{"run":"r1","mailboxes":["a"]}"#);
        assert_eq!(delivery.dequeue_count, 2);
        assert_eq!(delivery.id.as_deref(), Some("5c0f"));

        let parsed = Invocation::parse(
            br#"{"data":{"Shard":{"run":"r1"}},"metadata":{"dequeueCount":"3","id":"x"}}"#,
        )
        .expect("parses");
        let delivery = parsed.queue_message("shard").expect("a message");
        let value: Value = serde_json::from_str(&delivery.text).expect("JSON text");
        assert_eq!(value, serde_json::json!({"run": "r1"}));
        assert_eq!(delivery.dequeue_count, 3);

        let none = Invocation::parse(br#"{"Data":{"shard":null},"Metadata":{}}"#).expect("parses");
        assert_eq!(none.queue_message("shard"), None);
        let missing_count = Invocation::parse(br#"{"Data":{"shard":"x"}}"#).expect("parses");
        assert_eq!(
            missing_count
                .queue_message("shard")
                .map(|d| d.dequeue_count),
            Some(0)
        );
    }
}
