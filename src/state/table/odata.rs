//! The error body Table Storage answers with, for the client's single requests and the batch's parts alike.

use serde_json::Value;

/// Reads `{"odata.error":{"code":…,"message":{"value":…}}}` (or the JSON-light `{"error":…}` form).
pub(super) fn parse_odata_error(body: &str) -> (String, String) {
    let value: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    let error = value
        .get("odata.error")
        .or_else(|| value.get("error"))
        .unwrap_or(&Value::Null);
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let message = match error.get("message") {
        Some(Value::Object(m)) => m
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        Some(Value::String(s)) => s.clone(),
        _ => body.chars().take(300).collect(),
    };
    // The service appends "RequestId:…\nTime:…" to messages; the first line is the useful part.
    (code, message.lines().next().unwrap_or("").to_owned())
}
