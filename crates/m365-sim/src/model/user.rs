//! A directory user as Graph sees it, plus what Exchange knows about the same person (mailbox kind, hidden from
//! the GAL, REST-enabled mailbox). Renders Graph JSON per property so `$select` and `Prefer: return=minimal` are cheap.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What kind of Exchange mailbox a user has, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MailboxKind {
    #[default]
    User,
    Shared,
    /// No Exchange mailbox (unlicensed): photos answer `ErrorNonExistentMailbox`, contacts 404.
    None,
}

/// Graph's default property set for users when the client sends no `$select`.
pub(crate) const DEFAULT_USER_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Every user property the simulator knows (canonical Graph spelling).
pub(crate) const USER_PROPS: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "mailNickname",
    "otherMails",
    "proxyAddresses",
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
    "usageLocation",
    "preferredLanguage",
    "employeeId",
    "userType",
    "accountEnabled",
    "showInAddressList",
    "createdDateTime",
    "onPremisesExtensionAttributes",
    "externalUserState",
];

/// The canonical spelling of a `$select`ed property (Graph matches them case-insensitively).
pub(crate) fn canonical_user_prop(name: &str) -> Option<&'static str> {
    USER_PROPS
        .iter()
        .copied()
        .find(|p| p.eq_ignore_ascii_case(name))
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub mail_nickname: String,
    pub other_mails: Vec<String>,
    pub proxy_addresses: Vec<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub company_name: Option<String>,
    pub office_location: Option<String>,
    pub business_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub fax_number: Option<String>,
    pub street_address: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub usage_location: Option<String>,
    pub preferred_language: Option<String>,
    pub employee_id: Option<String>,
    /// `Member` or `Guest`.
    pub user_type: String,
    pub account_enabled: bool,
    pub created_date_time: String,
    /// `onPremisesExtensionAttributes.extensionAttribute1..15`.
    pub extension_attributes: [Option<String>; 15],
    pub external_user_state: Option<String>,
    pub manager_id: Option<String>,
    pub mailbox: MailboxKind,
    /// Exchange's HiddenFromAddressListsEnabled.
    pub hidden_from_address_lists: bool,
    /// False for mailboxes that answer `MailboxNotEnabledForRESTAPI`.
    pub rest_enabled: bool,
    /// Sim-clock millis before which Exchange does not know this guest as a mail user yet (invitations:
    /// `guest_mail_user_delay_ms`); 0 = known at once.
    #[serde(skip)]
    pub mail_user_from_ms: i64,
    #[serde(skip)]
    pub photo: Option<Arc<Vec<u8>>>,
}

/// Bookkeeping for delta queries: when the user last changed, and each property.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tracked<T> {
    pub(crate) value: T,
    pub(crate) version: u64,
    pub(crate) created_version: u64,
    pub(crate) prop_versions: HashMap<&'static str, u64>,
    /// Sim-clock millis before which the object is missing from lists and filters (eventual consistency).
    pub(crate) visible_from_ms: i64,
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

impl User {
    pub(crate) fn prop(&self, name: &str) -> Value {
        match name {
            "id" => json!(self.id),
            "userPrincipalName" => json!(self.user_principal_name),
            "displayName" => json!(self.display_name),
            "givenName" => opt(&self.given_name),
            "surname" => opt(&self.surname),
            "mail" => opt(&self.mail),
            "mailNickname" => json!(self.mail_nickname),
            "otherMails" => json!(self.other_mails),
            "proxyAddresses" => json!(self.proxy_addresses),
            "jobTitle" => opt(&self.job_title),
            "department" => opt(&self.department),
            "companyName" => opt(&self.company_name),
            "officeLocation" => opt(&self.office_location),
            "businessPhones" => json!(self.business_phones),
            "mobilePhone" => opt(&self.mobile_phone),
            "faxNumber" => opt(&self.fax_number),
            "streetAddress" => opt(&self.street_address),
            "city" => opt(&self.city),
            "state" => opt(&self.state),
            "postalCode" => opt(&self.postal_code),
            "country" => opt(&self.country),
            "usageLocation" => opt(&self.usage_location),
            "preferredLanguage" => opt(&self.preferred_language),
            "employeeId" => opt(&self.employee_id),
            "userType" => json!(self.user_type),
            "accountEnabled" => json!(self.account_enabled),
            // Graph's showInAddressList is "do not use": not kept in step with Exchange, null for cloud mailboxes
            // (Graph known issue "showInAddressList property is out of sync with Microsoft Exchange"; crate README).
            // Hidden lives in Exchange only.
            "showInAddressList" => Value::Null,
            "createdDateTime" => json!(self.created_date_time),
            "externalUserState" => opt(&self.external_user_state),
            "onPremisesExtensionAttributes" => {
                let mut m = Map::new();
                for (i, v) in self.extension_attributes.iter().enumerate() {
                    m.insert(format!("extensionAttribute{}", i + 1), opt(v));
                }
                Value::Object(m)
            }
            _ => Value::Null,
        }
    }

    /// Graph JSON with the given properties (always including `id`).
    pub(crate) fn render(&self, props: &[&'static str]) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        for p in props {
            if *p != "id" {
                m.insert((*p).to_string(), self.prop(p));
            }
        }
        m
    }

    /// Every property, for filters and the control API.
    pub(crate) fn render_all(&self) -> Map<String, Value> {
        self.render(USER_PROPS)
    }

    /// Applies a Graph-style PATCH body. Returns the properties that changed, or the first invalid one.
    pub(crate) fn apply_patch(
        &mut self,
        patch: &Map<String, Value>,
    ) -> Result<Vec<&'static str>, String> {
        let mut changed = Vec::new();
        for (key, value) in patch {
            let Some(prop) = canonical_user_prop(key) else {
                if key == "manager"
                    || key == "mailbox"
                    || key == "hiddenFromAddressLists"
                    || key == "restEnabled"
                {
                    self.apply_sim_field(key, value)?;
                    continue;
                }
                return Err(format!(
                    "Property '{key}' does not exist on type 'microsoft.graph.user'."
                ));
            };
            let before = self.prop(prop);
            set_user_prop(self, prop, value)?;
            if self.prop(prop) != before {
                changed.push(prop);
            }
        }
        Ok(changed)
    }

    fn apply_sim_field(&mut self, key: &str, value: &Value) -> Result<(), String> {
        match key {
            "manager" => self.manager_id = value.as_str().map(str::to_string),
            "mailbox" => {
                self.mailbox =
                    serde_json::from_value(value.clone()).map_err(|e| format!("mailbox: {e}"))?;
            }
            "hiddenFromAddressLists" => {
                self.hidden_from_address_lists = value.as_bool().unwrap_or(false)
            }
            "restEnabled" => self.rest_enabled = value.as_bool().unwrap_or(true),
            _ => {}
        }
        Ok(())
    }
}

fn want_str(prop: &str, v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(format!(
            "Invalid value for property '{prop}': expected a string."
        )),
    }
}

fn want_list(prop: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("Invalid value in '{prop}'."))
            })
            .collect(),
        _ => Err(format!(
            "Invalid value for property '{prop}': expected a collection."
        )),
    }
}

fn set_user_prop(u: &mut User, prop: &'static str, v: &Value) -> Result<(), String> {
    let s = || want_str(prop, v);
    match prop {
        "id" | "createdDateTime" | "proxyAddresses" | "externalUserState" => {
            return Err(format!("Property '{prop}' is read-only and cannot be set."));
        }
        "userPrincipalName" => u.user_principal_name = s()?.unwrap_or_default(),
        "displayName" => u.display_name = s()?.ok_or("displayName cannot be null")?,
        "givenName" => u.given_name = s()?,
        "surname" => u.surname = s()?,
        "mail" => u.mail = s()?,
        "mailNickname" => u.mail_nickname = s()?.unwrap_or_default(),
        "otherMails" => u.other_mails = want_list(prop, v)?,
        "jobTitle" => u.job_title = s()?,
        "department" => u.department = s()?,
        "companyName" => u.company_name = s()?,
        "officeLocation" => u.office_location = s()?,
        "businessPhones" => u.business_phones = want_list(prop, v)?,
        "mobilePhone" => u.mobile_phone = s()?,
        "faxNumber" => u.fax_number = s()?,
        "streetAddress" => u.street_address = s()?,
        "city" => u.city = s()?,
        "state" => u.state = s()?,
        "postalCode" => u.postal_code = s()?,
        "country" => u.country = s()?,
        "usageLocation" => u.usage_location = s()?,
        "preferredLanguage" => u.preferred_language = s()?,
        "employeeId" => u.employee_id = s()?,
        "userType" => u.user_type = s()?.unwrap_or_else(|| "Member".into()),
        "accountEnabled" => {
            u.account_enabled = v.as_bool().ok_or("accountEnabled must be a boolean")?
        }
        // Quirk: showInAddressList can no longer be written through Graph (docs/microsoft-facts.md §5);
        // the sim refuses it the way Graph does for read-only properties.
        "showInAddressList" => {
            return Err("Property 'showInAddressList' cannot be updated through Microsoft Graph; use Set-MailUser or Set-Mailbox -HiddenFromAddressListsEnabled.".into());
        }
        "onPremisesExtensionAttributes" => {
            let obj = v
                .as_object()
                .ok_or("onPremisesExtensionAttributes must be an object")?;
            for (k, val) in obj {
                let n: usize = k
                    .strip_prefix("extensionAttribute")
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=15).contains(n))
                    .ok_or_else(|| format!("Unknown extension attribute '{k}'."))?;
                u.extension_attributes[n - 1] = want_str(k, val)?;
            }
        }
        _ => return Err(format!("Property '{prop}' cannot be set.")),
    }
    Ok(())
}
