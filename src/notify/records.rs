//! How change-notification state lives in the state store: one partition of its own, [`NOTIFY_PARTITION`] (a name
//! no link can take: link names start with a letter or digit), scope [`LINK_SCOPE`], two kinds of records:
//!
//! - `subscription:{tenant}:{resource}`: one Graph subscription; `target_id` is its id, `data` a
//!   [`SubscriptionData`] (the resource, expiry, the `clientState` secret, and a pending lifecycle action);
//! - `due:{link}`: a link marked due by a notification; `data` a [`DueMark`] (when, and whether a full read).
//!
//! Records rather than the link's checkpoint: a run saves its checkpoint at its end, and would overwrite a mark
//! written while it ran.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::{LINK_SCOPE, ObjectRecord, StateError, StateStore};

/// The state store "link" holding subscriptions and due marks.
pub const NOTIFY_PARTITION: &str = "_notifications";

/// A lifecycle notification's pending consequence for its subscription (done by the next maintenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingAction {
    /// `reauthorizationRequired`: renew now.
    Renew,
    /// `subscriptionRemoved`: create a new subscription.
    Recreate,
}

/// What galbridge keeps about one subscription.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionData {
    pub tenant: String,
    pub resource: String,
    pub expires: DateTime<Utc>,
    /// The `clientState` secret (in the state store only; never logged or reported).
    pub client_state: String,
    #[serde(default)]
    pub pending: Option<PendingAction>,
}

/// A subscription record, decoded.
#[derive(Clone)]
pub struct SubscriptionRecord {
    pub id: String,
    pub data: SubscriptionData,
}

/// A link marked due by a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueMark {
    pub due_at: DateTime<Utc>,
    /// A `missed` lifecycle notification asks for a full read.
    #[serde(default)]
    pub full: bool,
}

pub fn subscription_key(tenant: &str, resource: &str) -> String {
    format!("subscription:{tenant}:{resource}")
}

pub fn due_key(link: &str) -> String {
    format!("due:{link}")
}

fn corrupt(what: &str, _error: &serde_json::Error) -> StateError {
    StateError::Corrupt {
        what: format!("{NOTIFY_PARTITION}/{what}"),
        // Never the decoder's message: it may quote a subscription record, which holds a secret.
        reason: "a record that does not decode".to_owned(),
    }
}

/// Every record of the partition, split into subscriptions and due marks (by link).
pub async fn load_all(
    store: &dyn StateStore,
) -> Result<(Vec<SubscriptionRecord>, Vec<(String, DueMark)>), StateError> {
    let mut subscriptions = Vec::new();
    let mut marks = Vec::new();
    for record in store.list_objects(NOTIFY_PARTITION, LINK_SCOPE).await? {
        let data = record.data.clone().unwrap_or_default();
        if record.anchor.starts_with("subscription:") {
            let data: SubscriptionData =
                serde_json::from_value(data).map_err(|e| corrupt(&record.anchor, &e))?;
            subscriptions.push(SubscriptionRecord {
                id: record.target_id,
                data,
            });
        } else if let Some(link) = record.anchor.strip_prefix("due:") {
            let mark: DueMark =
                serde_json::from_value(data).map_err(|e| corrupt(&record.anchor, &e))?;
            marks.push((link.to_owned(), mark));
        }
    }
    Ok((subscriptions, marks))
}

pub async fn put_subscription(
    store: &dyn StateStore,
    record: &SubscriptionRecord,
    now: DateTime<Utc>,
) -> Result<(), StateError> {
    let data = serde_json::to_value(&record.data).map_err(|e| corrupt("subscription", &e))?;
    store
        .put_objects(
            NOTIFY_PARTITION,
            LINK_SCOPE,
            &[ObjectRecord {
                anchor: subscription_key(&record.data.tenant, &record.data.resource),
                target_id: record.id.clone(),
                hash: String::new(),
                data: Some(data),
                updated_at: now,
            }],
        )
        .await
}

pub async fn delete_subscription(
    store: &dyn StateStore,
    tenant: &str,
    resource: &str,
) -> Result<(), StateError> {
    store
        .delete_objects(
            NOTIFY_PARTITION,
            LINK_SCOPE,
            &[subscription_key(tenant, resource)],
        )
        .await
}

pub async fn put_marks(
    store: &dyn StateStore,
    marks: &[(String, DueMark)],
    now: DateTime<Utc>,
) -> Result<(), StateError> {
    if marks.is_empty() {
        return Ok(());
    }
    let mut records = Vec::new();
    for (link, mark) in marks {
        records.push(ObjectRecord {
            anchor: due_key(link),
            target_id: String::new(),
            hash: String::new(),
            data: Some(serde_json::to_value(mark).map_err(|e| corrupt("due mark", &e))?),
            updated_at: now,
        });
    }
    store
        .put_objects(NOTIFY_PARTITION, LINK_SCOPE, &records)
        .await
}

/// The marks of `links` that exist now.
pub async fn get_marks(
    store: &dyn StateStore,
    links: &[String],
) -> Result<Vec<(String, DueMark)>, StateError> {
    let anchors: Vec<String> = links.iter().map(|link| due_key(link)).collect();
    let mut marks = Vec::new();
    for record in store
        .get_objects(NOTIFY_PARTITION, LINK_SCOPE, &anchors)
        .await?
    {
        if let Some(link) = record.anchor.strip_prefix("due:") {
            let mark: DueMark = serde_json::from_value(record.data.clone().unwrap_or_default())
                .map_err(|e| corrupt(&record.anchor, &e))?;
            marks.push((link.to_owned(), mark));
        }
    }
    Ok(marks)
}

pub async fn delete_marks(store: &dyn StateStore, links: &[String]) -> Result<(), StateError> {
    if links.is_empty() {
        return Ok(());
    }
    let anchors: Vec<String> = links.iter().map(|link| due_key(link)).collect();
    store
        .delete_objects(NOTIFY_PARTITION, LINK_SCOPE, &anchors)
        .await
}
