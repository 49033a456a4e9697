//! [`ExchangeContacts`]: the mail-contact target port over the one Exchange client, [`crate::m365::ExchangeClient`]
//! (`InvokeCommand`, docs/microsoft-facts.md §1). The client owns the transport rules (allowlist, tokens,
//! retries until the run's budget, the tenant's adaptive limit and `Retry-After` pause, error classification);
//! this adapter only turns engine calls into cmdlets and client errors into [`PortError`]s.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::shapes::{
    contact_id, exchange_error, new_mail_contact_parameters, set_contact_parameter,
    set_contact_parameters, set_mail_contact_parameters, target_object,
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

/// The `Get-MailContact` properties [`target_object`] reads.
fn compared_mail_contact_properties(anchor_attribute: u8) -> Vec<String> {
    let mut keys: Vec<String> = ID_PROPERTIES.iter().map(|k| (*k).to_owned()).collect();
    keys.extend(
        [
            "ExternalEmailAddress",
            "DisplayName",
            "Name",
            "HiddenFromAddressListsEnabled",
        ]
        .map(str::to_owned),
    );
    keys.push(format!("CustomAttribute{anchor_attribute}"));
    keys
}

/// The `Get-Contact` properties [`target_object`] reads: the id and the person fields.
fn compared_contact_properties() -> Vec<String> {
    let mut keys: Vec<String> = ID_PROPERTIES.iter().map(|k| (*k).to_owned()).collect();
    keys.extend(
        Field::ALL
            .into_iter()
            .filter_map(set_contact_parameter)
            .map(str::to_owned),
    );
    keys
}

/// The properties [`contact_id`] looks at.
const ID_PROPERTIES: [&str; 3] = ["ExternalDirectoryObjectId", "Guid", "Identity"];

/// `object` with only the `keys` properties.
fn keep_only(mut object: Map<String, Value>, keys: &[String]) -> Map<String, Value> {
    object.retain(|key, _| keys.iter().any(|kept| kept == key));
    object
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
        // Each object is cut down to the properties compared as its page arrives (an Exchange object carries
        // dozens more), so a large tenant's listing is never held whole as JSON.
        let mut unlimited = Map::new();
        unlimited.insert("ResultSize".into(), json!("Unlimited"));
        let mail_contact_properties = compared_mail_contact_properties(anchor_attribute);
        let mut mail_contacts = Vec::new();
        self.exchange
            .invoke_each(
                "Get-MailContact",
                Value::Object(unlimited.clone()),
                true,
                &mut |value| {
                    if let Value::Object(object) = value {
                        mail_contacts.push(keep_only(object, &mail_contact_properties));
                    }
                },
            )
            .await
            .map_err(port_error)?;
        let contact_properties = compared_contact_properties();
        let mut contact_view = unlimited;
        contact_view.insert("RecipientTypeDetails".into(), json!("MailContact"));
        let mut by_id: HashMap<String, Map<String, Value>> = HashMap::new();
        self.exchange
            .invoke_each(
                "Get-Contact",
                Value::Object(contact_view),
                true,
                &mut |value| {
                    if let Value::Object(object) = value {
                        by_id.insert(contact_id(&object), keep_only(object, &contact_properties));
                    }
                },
            )
            .await
            .map_err(port_error)?;
        Ok(mail_contacts
            .iter()
            .map(|object| target_object(object, by_id.get(&contact_id(object)), anchor_attribute))
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
