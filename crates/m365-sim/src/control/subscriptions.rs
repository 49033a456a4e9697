//! The control API's view of change-notification subscriptions: list them (with their `clientState`, which a test
//! needs to tell a forged notification from a real one) and send lifecycle notifications on demand.

use serde_json::{Value, json};

use super::Control;
use crate::SimError;

impl Control {
    /// The tenant's live subscriptions: id, resource, changeType, notificationUrl, expirationDateTime, clientState.
    pub fn subscriptions(&self, tenant: &str) -> Result<Vec<Value>, SimError> {
        let t = self.tenant(tenant)?;
        Ok(self
            .state
            .subscriptions
            .live(&t.name, self.state.clock.now_ms())
            .iter()
            .map(|sub| {
                json!({
                    "id": sub.id,
                    "resource": sub.resource,
                    "changeType": sub.change_type,
                    "notificationUrl": sub.notification_url,
                    "lifecycleNotificationUrl": sub.lifecycle_url,
                    "expirationDateTime": chrono::DateTime::from_timestamp_millis(sub.expires_ms)
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "clientState": sub.client_state,
                })
            })
            .collect())
    }

    /// Sends lifecycle notification `event` (`reauthorizationRequired`, `subscriptionRemoved`, `missed`) for
    /// subscription `id`; `subscriptionRemoved` removes the subscription first. Real Graph sends the last two for
    /// Outlook resources only; the simulator sends whatever a test asks.
    pub fn lifecycle_event(&self, tenant: &str, id: &str, event: &str) -> Result<(), SimError> {
        let _ = self.tenant(tenant)?;
        if self
            .state
            .subscriptions
            .lifecycle(id, event, self.state.clock.now_ms())
        {
            Ok(())
        } else {
            Err(SimError::NotFound(format!("subscription {id}")))
        }
    }
}
