//! The wire shapes the adapters translate: cmdlet parameters for `New-MailContact` / `Set-MailContact` /
//! `Set-Contact`, Exchange objects (`Get-MailContact` + `Get-Contact`) into [`TargetObject`]s, Exchange errors into
//! [`PortError`]s, and Graph org contacts into the attribute names users carry. Pure functions, tested on the shapes
//! docs/microsoft-facts.md §1/§2 describe (and m365-sim serves).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::engine::diff::TargetObject;
use crate::engine::entry::{Entry, Field, SourceKind, SourceObject, is_anchor};
use crate::engine::ports::{MailContactSettings, PortError};
use crate::m365::ExchangeErrorKind;

/// The `Set-Contact` parameter of an entry field (`None`: written by `Set-MailContact`, or not at all).
pub fn set_contact_parameter(field: Field) -> Option<&'static str> {
    Some(match field {
        Field::GivenName => "FirstName",
        Field::Surname => "LastName",
        Field::Initials => "Initials",
        Field::JobTitle => "Title",
        Field::Department => "Department",
        Field::Company => "Company",
        Field::Office => "Office",
        Field::BusinessPhone => "Phone",
        Field::MobilePhone => "MobilePhone",
        Field::HomePhone => "HomePhone",
        Field::Fax => "Fax",
        Field::StreetAddress => "StreetAddress",
        Field::City => "City",
        Field::State => "StateOrProvince",
        Field::PostalCode => "PostalCode",
        Field::Country => "CountryOrRegion",
        Field::Notes => "Notes",
        Field::WebPage => "WebPage",
        // DisplayName and the address go through Set-MailContact; Manager wants a recipient identity, not a name;
        // other addresses would need the whole EmailAddresses list including the primary.
        Field::DisplayName | Field::Email | Field::ManagerName | Field::OtherEmails => return None,
    })
}

/// The `Alias` (mailNickname) of a contact: `gb` and 16 hex digits of the anchor's hash. Quirk: Exchange derives an
/// alias from `Name` when none is given and numbers it on collisions (namesakes); an alias from the anchor is unique
/// and stable per person instead.
pub fn alias_for(anchor: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "gb{}",
        &hex::encode(Sha256::digest(anchor.as_bytes()))[..16]
    )
}

/// `New-MailContact` parameters. Quirk (docs/microsoft-facts.md §1): `Name` is required, ≤ 64 characters and unique.
pub fn new_mail_contact_parameters(name: &str, entry: &Entry) -> Map<String, Value> {
    let mut params = Map::new();
    params.insert("Name".into(), json!(name));
    params.insert("Alias".into(), json!(alias_for(&entry.anchor)));
    params.insert(
        "ExternalEmailAddress".into(),
        json!(format!("SMTP:{}", entry.get(Field::Email))),
    );
    let display = if entry.get(Field::DisplayName).is_empty() {
        name
    } else {
        entry.get(Field::DisplayName)
    };
    params.insert("DisplayName".into(), json!(display));
    for (field, parameter) in [
        (Field::GivenName, "FirstName"),
        (Field::Surname, "LastName"),
        (Field::Initials, "Initials"),
    ] {
        if !entry.get(field).is_empty() {
            params.insert(parameter.into(), json!(entry.get(field)));
        }
    }
    params
}

/// `Set-MailContact` parameters.
pub fn set_mail_contact_parameters(
    identity: &str,
    settings: &MailContactSettings,
) -> Map<String, Value> {
    let mut params = Map::new();
    params.insert("Identity".into(), json!(identity));
    if let Some((attribute, anchor)) = &settings.anchor {
        params.insert(format!("CustomAttribute{attribute}"), json!(anchor));
    }
    if let Some(hidden) = settings.hidden {
        params.insert("HiddenFromAddressListsEnabled".into(), json!(hidden));
    }
    if let Some(name) = &settings.name {
        params.insert("Name".into(), json!(name));
    }
    if let Some(display) = &settings.display_name {
        params.insert("DisplayName".into(), json!(display));
    }
    if let Some(address) = &settings.external_address {
        params.insert(
            "ExternalEmailAddress".into(),
            json!(format!("SMTP:{address}")),
        );
    }
    params
}

/// `Set-Contact` parameters (`""` clears a field: sent as `null`, as PowerShell's `$null`).
pub fn set_contact_parameters(
    identity: &str,
    fields: &BTreeMap<Field, String>,
) -> Map<String, Value> {
    let mut params = Map::new();
    params.insert("Identity".into(), json!(identity));
    for (field, value) in fields {
        if let Some(parameter) = set_contact_parameter(*field) {
            let value = if value.is_empty() {
                Value::Null
            } else {
                json!(value)
            };
            params.insert(parameter.into(), value);
        }
    }
    params
}

fn text(object: &Map<String, Value>, key: &str) -> String {
    match object.get(key) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Strips the `SMTP:` prefix of an Exchange address.
pub fn bare_address(address: &str) -> String {
    match address.split_once(':') {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case("smtp") => rest.to_owned(),
        _ => address.to_owned(),
    }
}

/// The stable id of a contact: `ExternalDirectoryObjectId`, else `Guid`, else `Identity`.
pub fn contact_id(mail_contact: &Map<String, Value>) -> String {
    ["ExternalDirectoryObjectId", "Guid", "Identity"]
        .iter()
        .map(|key| text(mail_contact, key))
        .find(|id| !id.is_empty())
        .unwrap_or_default()
}

/// A target object from a `Get-MailContact` object and, when read, its `Get-Contact` twin (person fields).
pub fn target_object(
    mail_contact: &Map<String, Value>,
    contact: Option<&Map<String, Value>>,
    anchor_attribute: u8,
) -> TargetObject {
    let anchor = text(mail_contact, &format!("CustomAttribute{anchor_attribute}"));
    let address = bare_address(&text(mail_contact, "ExternalEmailAddress"));
    let mut fields = BTreeMap::new();
    fields.insert(Field::DisplayName, text(mail_contact, "DisplayName"));
    fields.insert(Field::Email, address.clone());
    if let Some(contact) = contact {
        for field in Field::ALL {
            if let Some(parameter) = set_contact_parameter(field) {
                fields.insert(field, text(contact, parameter));
            }
        }
    }
    TargetObject {
        id: contact_id(mail_contact),
        anchor: (!anchor.is_empty()).then_some(anchor),
        name: text(mail_contact, "Name"),
        address,
        hidden: mail_contact
            .get("HiddenFromAddressListsEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        fields,
    }
}

/// Any galbridge anchor a mail contact carries, in any `CustomAttributeN` (loop prevention on org contacts).
pub fn any_anchor(mail_contact: &Map<String, Value>) -> Option<String> {
    (1..=15)
        .map(|n| text(mail_contact, &format!("CustomAttribute{n}")))
        .find(|value| is_anchor(value))
}

/// A classified Exchange failure as the engine's [`PortError`], with the address, owner, name or id taken from
/// Exchange's message (`message` is the most specific text the client found, without its exception prefix).
pub fn exchange_error(kind: ExchangeErrorKind, message: &str) -> PortError {
    match kind {
        ExchangeErrorKind::AddressInUse => {
            let address = message
                .split('"')
                .nth(1)
                .map(bare_address)
                .unwrap_or_default();
            let owner = message
                .split('"')
                .nth(3)
                .unwrap_or("another recipient")
                .to_owned();
            PortError::AddressInUse {
                address,
                owner: format!("recipient {owner:?}"),
            }
        }
        ExchangeErrorKind::NameInUse => PortError::NameInUse {
            name: message.split('"').nth(1).unwrap_or_default().to_owned(),
        },
        ExchangeErrorKind::NotFound => PortError::NotFound {
            id: message
                .split_once("object '")
                .and_then(|(_, rest)| rest.split_once('\''))
                .map(|(id, _)| id.to_owned())
                .unwrap_or_default(),
        },
        other => PortError::Failed {
            service: "exchange".into(),
            message: format!("{other:?}: {message}"),
        },
    }
}

/// A Graph org contact with its attributes renamed as a user's (`phones` → `businessPhones`/`mobilePhone`/...,
/// `addresses[0]` → `streetAddress`/`city`/...), so templates and filters read both alike.
pub fn org_contact_as_source(value: &Value) -> Option<SourceObject> {
    let mut object = SourceObject::from_graph(value, SourceKind::OrgContact).ok()?;
    if let Some(phones) = value.get("phones").and_then(Value::as_array) {
        let mut business = Vec::new();
        for phone in phones {
            let number = phone
                .get("number")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match phone
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "business" => business.push(json!(number)),
                "mobile" => {
                    object
                        .attributes
                        .insert("mobilePhone".into(), json!(number));
                }
                "businessFax" => {
                    object.attributes.insert("faxNumber".into(), json!(number));
                }
                _ => {}
            }
        }
        object
            .attributes
            .insert("businessPhones".into(), Value::Array(business));
    }
    if let Some(address) = value
        .get("addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        for (from, to) in [
            ("street", "streetAddress"),
            ("city", "city"),
            ("state", "state"),
            ("postalCode", "postalCode"),
            ("countryOrRegion", "country"),
            ("officeLocation", "officeLocation"),
        ] {
            if let Some(v) = address.get(from).filter(|v| !v.is_null()) {
                object.attributes.insert(to.into(), v.clone());
            }
        }
    }
    object.attributes.remove("phones");
    object.attributes.remove("addresses");
    Some(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_set_parameters_follow_the_cmdlets() {
        let mut entry = Entry::new("galbridge:t:1");
        entry.set(Field::DisplayName, "Ada Lovelace");
        entry.set(Field::Email, "ada@acme.com");
        entry.set(Field::GivenName, "Ada");
        entry.set(Field::Surname, "");
        let params = new_mail_contact_parameters("Ada Lovelace", &entry);
        assert_eq!(
            Value::Object(params),
            json!({"Name": "Ada Lovelace", "ExternalEmailAddress": "SMTP:ada@acme.com", "DisplayName": "Ada Lovelace",
                   "FirstName": "Ada", "Alias": alias_for("galbridge:t:1")})
        );
        assert_eq!(alias_for("galbridge:t:1").len(), 18);
        assert_ne!(alias_for("galbridge:t:1"), alias_for("galbridge:t:2"));
        let settings = MailContactSettings {
            anchor: Some((15, "galbridge:t:1".into())),
            hidden: Some(false),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(set_mail_contact_parameters("c1", &settings)),
            json!({"Identity": "c1", "CustomAttribute15": "galbridge:t:1", "HiddenFromAddressListsEnabled": false})
        );
        let fields = BTreeMap::from([
            (Field::JobTitle, "Engineer".to_owned()),
            (Field::State, String::new()),
            (Field::ManagerName, "Bob".to_owned()),
        ]);
        assert_eq!(
            Value::Object(set_contact_parameters("c1", &fields)),
            json!({"Identity": "c1", "Title": "Engineer", "StateOrProvince": null})
        );
    }

    #[test]
    fn exchange_objects_become_target_objects() {
        let mail = json!({"Name": "Ada Lovelace", "DisplayName": "Ada Lovelace", "ExternalEmailAddress": "SMTP:ada@acme.com",
            "ExternalDirectoryObjectId": "oid-1", "Guid": "g-1", "HiddenFromAddressListsEnabled": true,
            "CustomAttribute15": "galbridge:t:1", "CustomAttribute3": ""});
        let contact =
            json!({"Title": "Engineer", "Phone": "+1", "StateOrProvince": "IL", "Manager": "x"});
        let object = target_object(mail.as_object().unwrap(), contact.as_object(), 15);
        assert_eq!(object.id, "oid-1");
        assert_eq!(object.anchor.as_deref(), Some("galbridge:t:1"));
        assert_eq!(object.address, "ada@acme.com");
        assert!(object.hidden);
        assert_eq!(object.fields[&Field::JobTitle], "Engineer");
        assert_eq!(object.fields[&Field::BusinessPhone], "+1");
        assert_eq!(object.fields[&Field::State], "IL");
        assert_eq!(object.fields[&Field::City], "");
        assert_eq!(
            target_object(mail.as_object().unwrap(), None, 3).anchor,
            None
        );
        assert_eq!(
            any_anchor(mail.as_object().unwrap()).as_deref(),
            Some("galbridge:t:1")
        );
    }

    #[test]
    fn exchange_errors_are_classified() {
        let address = exchange_error(
            ExchangeErrorKind::AddressInUse,
            "The proxy address \"SMTP:bob@acme.com\" is already being used by the proxy addresses or LegacyExchangeDN of \"Bob Smith\". Please choose another proxy address.",
        );
        assert_eq!(
            address,
            PortError::AddressInUse {
                address: "bob@acme.com".into(),
                owner: "recipient \"Bob Smith\"".into()
            }
        );
        let name = exchange_error(
            ExchangeErrorKind::NameInUse,
            "The name \"John Smith\" is already being used. Please try another name.",
        );
        assert_eq!(
            name,
            PortError::NameInUse {
                name: "John Smith".into()
            }
        );
        let missing = exchange_error(
            ExchangeErrorKind::NotFound,
            "The operation couldn't be performed because object 'c9' couldn't be found on 'X'.",
        );
        assert_eq!(missing, PortError::NotFound { id: "c9".into() });
        assert!(matches!(
            exchange_error(ExchangeErrorKind::Other, "boom"),
            PortError::Failed { .. }
        ));
    }

    #[test]
    fn org_contacts_read_like_users() {
        let contact = json!({"id": "c1", "displayName": "Pat Partner", "mail": "pat@partner.com",
            "phones": [{"type": "business", "number": "+1 1"}, {"type": "mobile", "number": "+1 2"}],
            "addresses": [{"city": "Oslo", "street": "Gate 1", "countryOrRegion": "NO", "state": null}]});
        let object = org_contact_as_source(&contact).unwrap();
        assert_eq!(object.kind, SourceKind::OrgContact);
        assert_eq!(object.text("businessPhones").as_deref(), Some("+1 1"));
        assert_eq!(object.text("mobilePhone").as_deref(), Some("+1 2"));
        assert_eq!(object.text("city").as_deref(), Some("Oslo"));
        assert_eq!(object.text("streetAddress").as_deref(), Some("Gate 1"));
        assert_eq!(object.text("country").as_deref(), Some("NO"));
        assert_eq!(object.text("state"), None);
    }
}
