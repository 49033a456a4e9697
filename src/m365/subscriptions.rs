//! Graph change-notification subscriptions: create, renew, delete (`/subscriptions`, docs/microsoft-facts.md §11).
//! The resource is data ([`NewSubscription::resource`]): `/users` today; `/groups` and a mailbox's contact folder
//! plug in with their own resource path, change types and lifetime.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::graph::{GraphClient, GraphError, segment};
use super::http::ApiRequest;
use crate::config::Secret;

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct NewSubscription<'a> {
    /// `/users` (and later `/groups`, `/users/{id}/contactFolders/{id}/contacts`).
    pub resource: &'a str,
    /// `updated,deleted` for users: a created user arrives as `updated` (docs/microsoft-facts.md §11).
    pub change_type: &'a str,
    /// Where Graph posts change notifications and lifecycle notifications (one address for both).
    pub notification_url: &'a str,
    pub expires: DateTime<Utc>,
    /// The per-subscription secret Graph echoes in every notification.
    pub client_state: &'a Secret,
}

/// A subscription as Graph reports it (only what galbridge keeps).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub expiration_date_time: DateTime<Utc>,
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl GraphClient {
    /// `POST /subscriptions`. Graph validates the notification URL (a POST with `?validationToken=`) before it
    /// answers, so this takes as long as that handshake (up to 10 s).
    pub async fn create_subscription(
        &self,
        new: &NewSubscription<'_>,
    ) -> Result<Subscription, GraphError> {
        let url = self.url("subscriptions", &[])?;
        let body = json!({
            "changeType": new.change_type,
            "notificationUrl": new.notification_url,
            "lifecycleNotificationUrl": new.notification_url,
            "resource": new.resource,
            "expirationDateTime": stamp(new.expires),
            "clientState": new.client_state.expose(),
        });
        // Not idempotent: a retried create after a lost answer would make a second subscription.
        let request = ApiRequest::new(Method::POST, url.clone())
            .json(&body)
            .idempotent(false);
        let response = self.send_for(request, None).await?;
        let value = self.expect_json(&Method::POST, &url, response, None)?;
        serde_json::from_value(value).map_err(|error| GraphError::Decode {
            path: url.path().to_owned(),
            message: error.to_string(),
        })
    }

    /// `PATCH /subscriptions/{id}` with a new expiration (renewal; also answers `reauthorizationRequired`).
    pub async fn renew_subscription(
        &self,
        id: &str,
        expires: DateTime<Utc>,
    ) -> Result<Subscription, GraphError> {
        let url = self.url(&format!("subscriptions/{}", segment(id)), &[])?;
        let request = ApiRequest::new(Method::PATCH, url.clone())
            .json(&json!({ "expirationDateTime": stamp(expires) }));
        let response = self.send_for(request, None).await?;
        let value = self.expect_json(&Method::PATCH, &url, response, None)?;
        serde_json::from_value(value).map_err(|error| GraphError::Decode {
            path: url.path().to_owned(),
            message: error.to_string(),
        })
    }

    /// `DELETE /subscriptions/{id}`; one that no longer exists counts as deleted.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        let url = self.url(&format!("subscriptions/{}", segment(id)), &[])?;
        let response = self
            .send_for(ApiRequest::new(Method::DELETE, url.clone()), None)
            .await?;
        match self.expect_success(&Method::DELETE, &url, response, None) {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }
}
