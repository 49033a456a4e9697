//! [`GuestUsers`]: the guest-user target port over the one Graph client (invitations, users) and the one Exchange
//! client (GAL visibility with `Set-MailUser`, the mail contacts an invitation can collide with), docs/microsoft-facts.md §5.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::exchange::port_error;
use super::shapes::target_object;
use crate::engine::diff::TargetObject;
use crate::engine::entry::{Entry, Field};
use crate::engine::ports::{GuestPatch, GuestUserTarget, PortError};
use crate::engine::targets::guest_user::graph_property;
use crate::m365::{ExchangeClient, GraphClient, GraphError};

/// The guests of one tenant.
pub struct GuestUsers {
    pub graph: GraphClient,
    pub exchange: ExchangeClient,
}

fn graph_error(error: GraphError) -> PortError {
    if error.is_not_found() {
        return PortError::NotFound {
            id: error.to_string(),
        };
    }
    PortError::Failed {
        service: "graph".into(),
        message: error.to_string(),
    }
}

const GUEST_PROPERTIES: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "otherMails",
    "accountEnabled",
    "onPremisesExtensionAttributes",
    "givenName",
    "surname",
    "displayName",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
    "businessPhones",
    "mobilePhone",
    "faxNumber",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
];

fn text(user: &Value, key: &str) -> String {
    match user.get(key) {
        Some(Value::String(s)) => s.clone(),
        // businessPhones: the first one is the entry's business phone.
        Some(Value::Array(items)) => items
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

/// A guest as a target object: the invited address is `mail`, or the first of `otherMails` (a guest whose address
/// collided with a mail contact has no `mail`).
fn guest_object(user: &Value, anchor_attribute: u8) -> TargetObject {
    let anchor = user
        .pointer(&format!(
            "/onPremisesExtensionAttributes/extensionAttribute{anchor_attribute}"
        ))
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    let mut address = text(user, "mail");
    if address.is_empty() {
        address = text(user, "otherMails");
    }
    let mut fields = BTreeMap::new();
    for field in Field::ALL {
        if let Some(property) = graph_property(field) {
            fields.insert(field, text(user, property));
        }
    }
    fields.insert(Field::Email, address.clone());
    TargetObject {
        id: text(user, "id"),
        anchor,
        name: text(user, "displayName"),
        address,
        hidden: user.get("accountEnabled").and_then(Value::as_bool) == Some(false),
        fields,
    }
}

#[async_trait]
impl GuestUserTarget for GuestUsers {
    async fn list_guests(&self, anchor_attribute: u8) -> Result<Vec<TargetObject>, PortError> {
        // Guests are the users invited from outside: their UPN carries `#EXT#` whatever their userType (a `Member`
        // guest, as cross-tenant sync makes them, is still external). Filtering on it needs an advanced query, so
        // the users are listed and sorted here (one request per 999 users).
        let users = self
            .graph
            .list_users(GUEST_PROPERTIES, None)
            .map_err(graph_error)?
            .collect_all()
            .await
            .map_err(graph_error)?;
        Ok(users
            .iter()
            .filter(|u| text(u, "userPrincipalName").contains("#EXT#"))
            .map(|u| guest_object(u, anchor_attribute))
            .collect())
    }

    async fn list_mail_contacts(
        &self,
        anchor_attribute: u8,
    ) -> Result<Vec<TargetObject>, PortError> {
        let contacts = self
            .exchange
            .invoke("Get-MailContact", json!({"ResultSize": "Unlimited"}), true)
            .await
            .map_err(port_error)?;
        Ok(contacts
            .iter()
            .filter_map(Value::as_object)
            .map(|contact| target_object(contact, None, anchor_attribute))
            .collect())
    }

    async fn invite(&self, entry: &Entry, redirect_url: &str) -> Result<String, PortError> {
        self.graph
            .invite_guest(
                entry.get(Field::Email),
                entry.get(Field::DisplayName),
                redirect_url,
            )
            .await
            .map_err(graph_error)
    }

    async fn update(&self, id: &str, patch: &GuestPatch) -> Result<(), PortError> {
        let mut body = Map::new();
        for (field, value) in &patch.fields {
            let Some(property) = graph_property(*field) else {
                continue;
            };
            let value = if *field == Field::BusinessPhone {
                if value.is_empty() {
                    json!([])
                } else {
                    json!([value])
                }
            } else if value.is_empty() {
                Value::Null
            } else {
                json!(value)
            };
            body.insert(property.to_owned(), value);
        }
        if let Some((n, anchor)) = &patch.anchor {
            body.insert(
                "onPremisesExtensionAttributes".into(),
                json!({ format!("extensionAttribute{n}"): anchor }),
            );
        }
        if let Some(user_type) = &patch.user_type {
            body.insert("userType".into(), json!(user_type));
        }
        if let Some(enabled) = patch.account_enabled {
            body.insert("accountEnabled".into(), json!(enabled));
        }
        if body.is_empty() {
            return Ok(());
        }
        self.graph
            .patch_user(id, &Value::Object(body))
            .await
            .map_err(graph_error)
    }

    async fn delete(&self, id: &str) -> Result<(), PortError> {
        self.graph.delete_user(id).await.map_err(graph_error)
    }

    async fn set_hidden_in_gal(&self, id: &str, hidden: bool) -> Result<bool, PortError> {
        // Exchange's Identity takes the Entra object id (ExternalDirectoryObjectId) [unverified, docs/microsoft-facts.md §5].
        self.exchange
            .set_mail_user_hidden(id, hidden)
            .await
            .map_err(port_error)
    }

    async fn remove_mail_contact(&self, id: &str) -> Result<(), PortError> {
        self.exchange
            .remove_mail_contact(id)
            .await
            .map_err(port_error)
    }
}
