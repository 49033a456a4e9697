//! [`ExchangeContacts`]: the mail-contact target over Exchange Online's `InvokeCommand` REST endpoint
//! (microsoft-apis.md §1). Pages come as `@odata.nextLink`, to which the same body is POSTed again.
//! Quirk: transient Exchange failures may arrive as HTTP 400 whose exception names `ServerBusyException`,
//! `TransientException`, `BackendCommunicationException` or `CmdletProxyNotAvailableFailure`; the transport retries
//! 429/5xx, this adapter retries those 400s (with backoff and jitter).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::shapes::{
    contact_id, exchange_error, new_mail_contact_parameters, set_contact_parameters,
    set_mail_contact_parameters, target_object,
};
use super::transport::{JsonRequest, JsonTransport};
use crate::engine::diff::TargetObject;
use crate::engine::entry::{Entry, Field};
use crate::engine::ports::{MailContactSettings, MailContactTarget, PortError};

/// Exception types Exchange uses for failures worth retrying.
const TRANSIENT_EXCEPTIONS: [&str; 4] = [
    "ServerBusyException",
    "TransientException",
    "BackendCommunicationException",
    "CmdletProxyNotAvailable",
];
/// Attempts for a transient 400.
const TRANSIENT_ATTEMPTS: u32 = 5;

/// The well-known system mailbox Exchange routes admin commands through (`X-AnchorMailbox`).
pub fn anchor_mailbox(initial_domain: &str) -> String {
    format!("UPN:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{initial_domain}")
}

/// Runs a cmdlet and returns every object of every page.
pub async fn invoke_all(
    transport: &dyn JsonTransport,
    tenant: &str,
    anchor_mailbox: &str,
    cmdlet: &str,
    parameters: Value,
) -> Result<Vec<Value>, PortError> {
    let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}});
    let read_only = cmdlet.starts_with("Get-");
    let mut url = format!("{}adminapi/beta/{tenant}/InvokeCommand", transport.base());
    let mut objects = Vec::new();
    loop {
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let request = JsonRequest::post(url.clone(), body.clone())
                .header("X-AnchorMailbox", anchor_mailbox)
                .header("X-ResponseFormat", "json")
                .header("Prefer", "odata.maxpagesize=1000")
                .idempotent(read_only);
            let response = transport.send(request).await?;
            if response.is_success() {
                break response;
            }
            let (_, message, exception) = response.error_parts();
            let transient = TRANSIENT_EXCEPTIONS
                .iter()
                .any(|t| exception.contains(t) || message.contains(t));
            if transient && attempt < TRANSIENT_ATTEMPTS {
                transport.count_retry();
                let backoff = 200u64 * 2u64.pow(attempt) + rand::random::<u64>() % 200;
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                continue;
            }
            if exception.is_empty() && message.is_empty() {
                return Err(PortError::Failed {
                    service: "exchange".into(),
                    message: format!("{cmdlet}: HTTP {}", response.status),
                });
            }
            return Err(exchange_error(&exception, &message));
        };
        if let Some(values) = response.body["value"].as_array() {
            objects.extend(values.iter().cloned());
        }
        match response.body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return Ok(objects),
        }
    }
}

/// Mail contacts of one tenant.
pub struct ExchangeContacts {
    pub exchange: Arc<dyn JsonTransport>,
    /// Path segment of `InvokeCommand` (directory id or initial domain).
    pub tenant: String,
    /// `X-AnchorMailbox` value (see [`anchor_mailbox`]).
    pub anchor_mailbox: String,
}

impl ExchangeContacts {
    async fn invoke(
        &self,
        cmdlet: &str,
        parameters: Map<String, Value>,
    ) -> Result<Vec<Value>, PortError> {
        invoke_all(
            self.exchange.as_ref(),
            &self.tenant,
            &self.anchor_mailbox,
            cmdlet,
            Value::Object(parameters),
        )
        .await
    }
}

#[async_trait]
impl MailContactTarget for ExchangeContacts {
    async fn list_contacts(&self, anchor_attribute: u8) -> Result<Vec<TargetObject>, PortError> {
        let mut unlimited = Map::new();
        unlimited.insert("ResultSize".into(), json!("Unlimited"));
        let mail_contacts = self.invoke("Get-MailContact", unlimited.clone()).await?;
        let mut contact_view = unlimited;
        contact_view.insert("RecipientTypeDetails".into(), json!("MailContact"));
        let contacts = self.invoke("Get-Contact", contact_view).await?;
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
        let mut identity = Map::new();
        identity.insert("Identity".into(), json!(address));
        let found = match self.invoke("Get-MailContact", identity.clone()).await {
            Ok(found) => found,
            Err(PortError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let Some(mail_contact) = found.first().and_then(Value::as_object) else {
            return Ok(None);
        };
        let contact = match self.invoke("Get-Contact", identity).await {
            Ok(contact) => contact,
            Err(PortError::NotFound { .. }) => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(Some(target_object(
            mail_contact,
            contact.first().and_then(Value::as_object),
            anchor_attribute,
        )))
    }

    async fn create(&self, name: &str, entry: &Entry) -> Result<String, PortError> {
        let created = self
            .invoke("New-MailContact", new_mail_contact_parameters(name, entry))
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
        self.invoke("Set-MailContact", set_mail_contact_parameters(id, settings))
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
        self.invoke("Set-Contact", parameters).await.map(drop)
    }

    async fn remove(&self, id: &str) -> Result<(), PortError> {
        let mut parameters = Map::new();
        parameters.insert("Identity".into(), json!(id));
        parameters.insert("Confirm".into(), json!(false));
        self.invoke("Remove-MailContact", parameters)
            .await
            .map(drop)
    }
}
