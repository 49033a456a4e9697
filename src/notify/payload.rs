//! The body Graph posts to the notification URL: a `changeNotificationCollection`, `{"value":[…]}`, each item a
//! change notification (`subscriptionId`, `clientState`, `changeType`, `resource`, `tenantId`) or a lifecycle
//! notification (the same with `lifecycleEvent` instead of a change), docs/microsoft-facts.md §11. Parsed
//! tolerantly: unknown fields are ignored, and an item without a subscription id is kept so it can be refused.

use serde::Deserialize;

use crate::config::Secret;

/// One item of `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub subscription_id: String,
    /// The secret as received (never logged; compared in constant time).
    pub client_state: Option<Secret>,
    /// `reauthorizationRequired`, `subscriptionRemoved`, `missed`; `None` for a change notification.
    pub lifecycle_event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawItem {
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Deserialize)]
struct RawCollection {
    value: Vec<RawItem>,
}

/// Parses a notification body; an error names what is wrong (never the body: it holds secrets).
pub fn parse(body: &str) -> Result<Vec<Notification>, String> {
    let collection: RawCollection = serde_json::from_str(body).map_err(|error| {
        format!(
            "not a change notification collection ({})",
            error.classify_kind()
        )
    })?;
    Ok(collection
        .value
        .into_iter()
        .map(|item| Notification {
            subscription_id: item.subscription_id.unwrap_or_default(),
            client_state: item.client_state.map(Secret::new),
            lifecycle_event: item.lifecycle_event,
        })
        .collect())
}

trait ClassifyKind {
    fn classify_kind(&self) -> &'static str;
}

impl ClassifyKind for serde_json::Error {
    /// The kind of a JSON error without its message (which may quote the body).
    fn classify_kind(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// Equality of two secrets whose time does not depend on where they first differ.
pub fn same_secret(a: &Secret, b: &Secret) -> bool {
    let (a, b) = (a.expose().as_bytes(), b.expose().as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_and_lifecycle_items_parse_and_junk_is_named_without_quoting_it() {
        let body = r#"{"value":[
            {"subscriptionId":"s1","clientState":"k","changeType":"updated","resource":"Users/u1",
             "tenantId":"t","resourceData":{"id":"u1"}},
            {"subscriptionId":"s1","clientState":"k","lifecycleEvent":"missed","tenantId":"t"},
            {"clientState":"k"}]}"#;
        let items = parse(body).expect("parses");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].lifecycle_event, None);
        assert_eq!(items[1].lifecycle_event.as_deref(), Some("missed"));
        assert_eq!(items[2].subscription_id, "");
        let error = parse(r#"{"value": "secret-ish"}"#).expect_err("wrong shape");
        assert!(!error.contains("secret-ish"), "{error}");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(&Secret::new("abc"), &Secret::new("abc")));
        assert!(!same_secret(&Secret::new("abc"), &Secret::new("abd")));
        assert!(!same_secret(&Secret::new("abc"), &Secret::new("abcd")));
    }
}
