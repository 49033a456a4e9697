//! [`ExchangeContacts`]: the mail-contact target port over the one Exchange client, [`crate::m365::ExchangeClient`]
//! (`InvokeCommand`, docs/microsoft-facts.md §1). The client owns the transport rules (allowlist, tokens,
//! retries until the run's budget, the tenant's adaptive limit and `Retry-After` pause, error classification);
//! this adapter only turns engine calls into cmdlets and client errors into [`PortError`]s.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::shapes::{
    contact_id, exchange_error, new_mail_contact_parameters, set_contact_parameters,
    set_mail_contact_parameters, target_object,
};
use crate::engine::diff::TargetObject;
use crate::engine::entry::{Entry, Field};
use crate::engine::ports::{MailContactSettings, MailContactTarget, PortError};
use crate::m365::{ExchangeClient, ExchangeError};

/// A client error as the engine sees it: conflicts and not-found by their classification, the rest as failures.
pub fn port_error(error: ExchangeError) -> PortError {
    match &error {
        ExchangeError::Command { kind, message, .. } => exchange_error(*kind, message),
        _ => PortError::Failed {
            service: "exchange".into(),
            message: error.to_string(),
        },
    }
}

/// Mail contacts of one tenant.
pub struct ExchangeContacts {
    pub exchange: ExchangeClient,
}

impl ExchangeContacts {
    async fn invoke(
        &self,
        cmdlet: &str,
        parameters: Map<String, Value>,
        resendable: bool,
    ) -> Result<Vec<Value>, PortError> {
        self.exchange
            .invoke(cmdlet, Value::Object(parameters), resendable)
            .await
            .map_err(port_error)
    }
}

#[async_trait]
impl MailContactTarget for ExchangeContacts {
    async fn list_contacts(&self, anchor_attribute: u8) -> Result<Vec<TargetObject>, PortError> {
        let mut unlimited = Map::new();
        unlimited.insert("ResultSize".into(), json!("Unlimited"));
        let mail_contacts = self
            .invoke("Get-MailContact", unlimited.clone(), true)
            .await?;
        let mut contact_view = unlimited;
        contact_view.insert("RecipientTypeDetails".into(), json!("MailContact"));
        let contacts = self.invoke("Get-Contact", contact_view, true).await?;
        let by_id: BTreeMap<String, &Map<String, Value>> = contacts
            .iter()
            .filter_map(Value::as_object)
            .map(|object| (contact_id(object), object))
            .collect();
        Ok(mail_contacts
            .iter()
            .filter_map(Value::as_object)
            .map(|object| {
                target_object(
                    object,
                    by_id.get(&contact_id(object)).copied(),
                    anchor_attribute,
                )
            })
            .collect())
    }

    async fn find_by_address(
        &self,
        address: &str,
        anchor_attribute: u8,
    ) -> Result<Option<TargetObject>, PortError> {
        let Some(mail_contact) = self
            .exchange
            .get_by_identity("Get-MailContact", address)
            .await
            .map_err(port_error)?
        else {
            return Ok(None);
        };
        let Some(mail_contact) = mail_contact.as_object() else {
            return Ok(None);
        };
        // The person fields live on the Contact view of the same object; it may lag behind (replication).
        let contact = self
            .exchange
            .get_by_identity("Get-Contact", address)
            .await
            .map_err(port_error)?;
        Ok(Some(target_object(
            mail_contact,
            contact.as_ref().and_then(Value::as_object),
            anchor_attribute,
        )))
    }

    async fn recipient_holding(&self, address: &str) -> Result<Option<String>, PortError> {
        let found = self
            .exchange
            .recipient_by_address(address)
            .await
            .map_err(port_error)?;
        Ok(found.map(|recipient| {
            let text = |key: &str| {
                recipient
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let kind = match text("RecipientTypeDetails") {
                "" => "recipient",
                kind => kind,
            };
            let name = match text("DisplayName") {
                "" => text("Name"),
                name => name,
            };
            format!("{kind} {name:?}")
        }))
    }

    async fn create(&self, name: &str, entry: &Entry) -> Result<String, PortError> {
        // Never resent after a dropped connection: a New-MailContact that reached Exchange may have applied (the
        // create intent lets the next run claim such a contact).
        let created = self
            .invoke(
                "New-MailContact",
                new_mail_contact_parameters(name, entry),
                false,
            )
            .await?;
        let id = created
            .first()
            .and_then(Value::as_object)
            .map(contact_id)
            .unwrap_or_default();
        if id.is_empty() {
            return Err(PortError::Failed {
                service: "exchange".into(),
                message: format!(
                    "New-MailContact for {} returned no object",
                    entry.get(Field::Email)
                ),
            });
        }
        Ok(id)
    }

    async fn set_mail_contact(
        &self,
        id: &str,
        settings: &MailContactSettings,
    ) -> Result<(), PortError> {
        // Setting the same values twice is harmless, so Set-* may be resent.
        self.invoke(
            "Set-MailContact",
            set_mail_contact_parameters(id, settings),
            true,
        )
        .await
        .map(drop)
    }

    async fn set_contact(
        &self,
        id: &str,
        fields: &BTreeMap<Field, String>,
    ) -> Result<(), PortError> {
        let parameters = set_contact_parameters(id, fields);
        if parameters.len() <= 1 {
            return Ok(());
        }
        self.invoke("Set-Contact", parameters, true).await.map(drop)
    }

    async fn remove(&self, id: &str) -> Result<(), PortError> {
        self.exchange
            .remove_mail_contact(id)
            .await
            .map_err(port_error)
    }
}
