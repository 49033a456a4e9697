//! The cmdlets galbridge runs: Get-/New-/Set-/Remove-MailContact, Set-/Get-Contact, Get-Recipient,
//! Get-/Set-MailUser (those three in `recipients.rs`). Enforces Exchange's rules: Name unique and ≤ 64 chars, ExternalEmailAddress not any other
//! recipient's proxy address, CustomAttributeN ≤ 1024 chars, unknown parameters refused.

use serde_json::{Map, Value};

use super::opath::{self, OPath};
use super::recipients::{self, recipient_kind};
use super::{CmdletError, Output};
use crate::graph::{decode_token, encode_token};
use crate::model::mail_contact::{MailContact, bare_address};
use crate::state::SimState;
use crate::tenant::{AddressOwner, Directory, Tenant};

pub(super) const RECIPIENT_TASK: &str =
    "Microsoft.Exchange.Management.Tasks.RecipientTaskException";
pub(super) const VALIDATION: &str = "Microsoft.Exchange.Data.DataValidationException";
pub(super) const PARAMETER_BINDING: &str = "System.Management.Automation.ParameterBindingException";

pub(super) fn param<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

pub(super) fn param_str(params: &Map<String, Value>, name: &str) -> Option<String> {
    param(params, name).map(|v| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

pub(super) fn param_bool(
    params: &Map<String, Value>,
    name: &str,
) -> Result<Option<bool>, CmdletError> {
    match param(params, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim_start_matches('$').to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(CmdletError::bad(
                PARAMETER_BINDING,
                format!("Cannot convert value \"{s}\" to type \"System.Boolean\"."),
            )),
        },
        Some(other) => Err(CmdletError::bad(
            PARAMETER_BINDING,
            format!("Cannot convert value \"{other}\" to type \"System.Boolean\"."),
        )),
    }
}

pub(super) fn check_known(
    cmdlet: &str,
    params: &Map<String, Value>,
    known: &[&str],
) -> Result<(), CmdletError> {
    for key in params.keys() {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(CmdletError::bad(
                PARAMETER_BINDING,
                format!(
                    "A parameter cannot be found that matches parameter name '{key}' of cmdlet '{cmdlet}'."
                ),
            ));
        }
    }
    Ok(())
}

pub(super) const COMMON: &[&str] = &[
    "ErrorAction",
    "WarningAction",
    "Confirm",
    "WhatIf",
    "Verbose",
    "DomainController",
];

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Skip {
    pub(super) after: String,
    pub(super) remaining: Option<usize>,
}

pub(crate) fn dispatch(
    state: &SimState,
    tenant: &Tenant,
    cmdlet: &str,
    params: &Map<String, Value>,
    page_size: usize,
    skip: Option<&str>,
) -> Result<Output, CmdletError> {
    match cmdlet.to_ascii_lowercase().as_str() {
        "get-mailcontact" => get_mail_contacts(state, tenant, params, page_size, skip, false),
        "get-contact" => get_mail_contacts(state, tenant, params, page_size, skip, true),
        "new-mailcontact" => new_mail_contact(state, tenant, params).map(|v| Output {
            values: vec![v],
            next_skip: None,
        }),
        "set-mailcontact" => set_mail_contact(state, tenant, params, false).map(|_| Output {
            values: Vec::new(),
            next_skip: None,
        }),
        "set-contact" => set_mail_contact(state, tenant, params, true).map(|_| Output {
            values: Vec::new(),
            next_skip: None,
        }),
        "remove-mailcontact" => remove_mail_contact(tenant, params).map(|_| Output {
            values: Vec::new(),
            next_skip: None,
        }),
        "get-recipient" => recipients::get_recipients(state, tenant, params, page_size, skip, None),
        "get-mailuser" => {
            recipients::get_recipients(state, tenant, params, page_size, skip, Some("MailUser"))
        }
        "get-mailbox" => {
            recipients::get_recipients(state, tenant, params, page_size, skip, Some("UserMailbox"))
        }
        "set-mailuser" => {
            recipients::set_hidden(state, tenant, params, "MailUser").map(|_| Output {
                values: Vec::new(),
                next_skip: None,
            })
        }
        "set-mailbox" => {
            recipients::set_hidden(state, tenant, params, "UserMailbox").map(|_| Output {
                values: Vec::new(),
                next_skip: None,
            })
        }
        _ => Err(CmdletError::bad(
            "System.Management.Automation.CommandNotFoundException",
            format!(
                "The term '{cmdlet}' is not recognized as a name of a cmdlet, or the cmdlet is not available to the application's role."
            ),
        )),
    }
}

/// Finds a mail contact by any identity Exchange accepts: Name, Alias, ExternalDirectoryObjectId, Guid,
/// primary SMTP address or DistinguishedName.
fn resolve_contact<'a>(
    dir: &'a Directory,
    tenant: &Tenant,
    identity: &str,
) -> Option<&'a MailContact> {
    if let Some(t) = dir.contacts.get(identity) {
        return Some(&t.value);
    }
    if let Some(id) = dir.contact_by_name(identity) {
        return dir.contacts.get(id).map(|t| &t.value);
    }
    if let Some(AddressOwner::MailContact(id)) = dir.address_owner(identity) {
        return dir.contacts.get(id).map(|t| &t.value);
    }
    dir.contacts.values().map(|t| &t.value).find(|c| {
        c.alias.eq_ignore_ascii_case(identity)
            || c.guid.eq_ignore_ascii_case(identity)
            || c.distinguished_name(&tenant.initial_domain)
                .eq_ignore_ascii_case(identity)
    })
}

pub(super) fn result_size(params: &Map<String, Value>) -> Result<Option<usize>, CmdletError> {
    match param_str(params, "ResultSize") {
        None => Ok(Some(1000)),
        Some(s) if s.eq_ignore_ascii_case("unlimited") => Ok(None),
        Some(s) => s.parse::<usize>().map(Some).map_err(|_| {
            CmdletError::bad(
                PARAMETER_BINDING,
                format!("Cannot bind parameter 'ResultSize'. Cannot convert value \"{s}\"."),
            )
        }),
    }
}

pub(super) fn parse_filter(params: &Map<String, Value>) -> Result<Option<OPath>, CmdletError> {
    param_str(params, "Filter")
        .map(|f| {
            opath::parse(&f).map_err(|e| {
                CmdletError::bad(
                    "Microsoft.Exchange.Management.Tasks.TaskInvalidFilterException",
                    format!("Cannot bind parameter 'Filter' to the target. {e} \"{f}\""),
                )
            })
        })
        .transpose()
}

pub(super) fn paged(
    items: Vec<(String, Value)>,
    page_size: usize,
    remaining: Option<usize>,
) -> Output {
    let cap = remaining.map_or(page_size, |r| r.min(page_size));
    let total = items.len();
    let mut values = Vec::with_capacity(cap.min(total));
    let mut last = None;
    for (id, v) in items.into_iter().take(cap) {
        last = Some(id);
        values.push(v);
    }
    let left = remaining.map(|r| r - values.len());
    let next_skip = match (last, total > values.len(), left) {
        (Some(after), true, None) => Some(encode_token(&Skip {
            after,
            remaining: None,
        })),
        (Some(after), true, Some(l)) if l > 0 => Some(encode_token(&Skip {
            after,
            remaining: Some(l),
        })),
        _ => None,
    };
    Output { values, next_skip }
}

fn get_mail_contacts(
    state: &SimState,
    tenant: &Tenant,
    params: &Map<String, Value>,
    page_size: usize,
    skip: Option<&str>,
    contact_view: bool,
) -> Result<Output, CmdletError> {
    let name = if contact_view {
        "Get-Contact"
    } else {
        "Get-MailContact"
    };
    check_known(
        name,
        params,
        &[
            COMMON,
            &[
                "Identity",
                "Filter",
                "ResultSize",
                "RecipientTypeDetails",
                "SortBy",
            ],
        ]
        .concat(),
    )?;
    let dir = tenant.dir.read();
    let render = |c: &MailContact| {
        Value::Object(if contact_view {
            c.render_contact(&tenant.initial_domain)
        } else {
            c.render_mail_contact(&tenant.initial_domain)
        })
    };
    let now = state.clock.now_ms();
    if let Some(identity) = param_str(params, "Identity") {
        // Replication delay: a new contact is not found by any identity until Exchange has replicated it.
        let found = resolve_contact(&dir, tenant, &identity)
            .filter(|c| dir.contact_readable(&c.external_directory_object_id, now));
        return match found {
            Some(c) => Ok(Output {
                values: vec![render(c)],
                next_skip: None,
            }),
            None => Err(CmdletError::not_found(&identity, tenant)),
        };
    }
    let filter = parse_filter(params)?;
    let (after, remaining) = match skip.and_then(decode_token::<Skip>) {
        Some(s) => (Some(s.after), s.remaining),
        None => (None, result_size(params)?),
    };
    let fast = filter.as_ref().and_then(|f| f.as_custom_attribute_eq());
    let mut items = Vec::new();
    let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    for (id, t) in dir.contacts.range((start, std::ops::Bound::Unbounded)) {
        // Eventual consistency: a fresh contact is missing from filtered/listed results for a while.
        if t.visible_from_ms > now || !dir.contact_readable(id, now) {
            continue;
        }
        let keep = match (&filter, fast) {
            (_, Some((n, v))) => t.value.custom_attributes[n - 1].eq_ignore_ascii_case(v),
            (Some(f), None) => f.eval(&t.value.render_all(&tenant.initial_domain)),
            (None, None) => true,
        };
        if keep {
            items.push((id.clone(), render(&t.value)));
            if items.len() > page_size.min(remaining.unwrap_or(usize::MAX)) {
                break;
            }
        }
    }
    Ok(paged(items, page_size, remaining))
}

fn alias_from(name: &str) -> String {
    let a: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-' || *c == '_')
        .collect();
    if a.is_empty() {
        "contact".into()
    } else {
        a.chars().take(64).collect()
    }
}

fn check_name(name: &str) -> Result<(), CmdletError> {
    let len = name.chars().count();
    if name.trim().is_empty() {
        return Err(CmdletError::bad(
            VALIDATION,
            "The Name property can't be empty.",
        ));
    }
    if len > 64 {
        return Err(CmdletError::bad(
            VALIDATION,
            format!(
                "The length of the property is too long. The maximum length is 64 and the length of the value provided is {len}."
            ),
        ));
    }
    Ok(())
}

fn address_conflict(
    dir: &Directory,
    tenant: &Tenant,
    address: &str,
    own_id: Option<&str>,
) -> Result<(), CmdletError> {
    let owner = dir.address_owner(address);
    let owner_name = match owner {
        None => return Ok(()),
        Some(AddressOwner::MailContact(id)) if Some(id.as_str()) == own_id => return Ok(()),
        Some(AddressOwner::MailContact(id)) => dir
            .contacts
            .get(id)
            .map(|t| t.value.name.clone())
            .unwrap_or_default(),
        Some(AddressOwner::User(id)) => dir
            .users
            .get(id)
            .map(|t| t.value.display_name.clone())
            .unwrap_or_default(),
    };
    let _ = tenant;
    Err(CmdletError::bad(
        "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException",
        format!(
            "The proxy address \"SMTP:{}\" is already being used by the proxy addresses or LegacyExchangeDN of \"{owner_name}\". Please choose another proxy address.",
            bare_address(address)
        ),
    ))
}

fn new_mail_contact(
    state: &SimState,
    tenant: &Tenant,
    params: &Map<String, Value>,
) -> Result<Value, CmdletError> {
    check_known(
        "New-MailContact",
        params,
        &[
            COMMON,
            &[
                "Name",
                "ExternalEmailAddress",
                "Alias",
                "DisplayName",
                "FirstName",
                "LastName",
                "Initials",
                "OrganizationalUnit",
            ],
        ]
        .concat(),
    )?;
    let name = param_str(params, "Name").ok_or_else(|| {
        CmdletError::bad(
            PARAMETER_BINDING,
            "Cannot process command because of one or more missing mandatory parameters: Name.",
        )
    })?;
    let external = param_str(params, "ExternalEmailAddress")
        .ok_or_else(|| CmdletError::bad(PARAMETER_BINDING, "Cannot process command because of one or more missing mandatory parameters: ExternalEmailAddress."))?;
    check_name(&name)?;
    let address = bare_address(&external).to_string();
    if !address.contains('@') || address.starts_with('@') || address.ends_with('@') {
        return Err(CmdletError::bad(
            VALIDATION,
            format!("\"{external}\" isn't a valid SMTP address."),
        ));
    }
    let knobs = state.knobs();
    let now = state.clock.now();
    let now_ms = now.timestamp_millis();
    let mut dir = tenant.dir.write();
    if dir.contact_by_name(&name).is_some()
        || dir.users.values().any(|t| {
            recipient_kind(&t.value).is_some() && t.value.mail_nickname.eq_ignore_ascii_case(&name)
        })
    {
        return Err(CmdletError::bad(
            "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
            format!("The name \"{name}\" is already being used. Please try another name."),
        ));
    }
    address_conflict(&dir, tenant, &address, None)?;
    let mut alias = param_str(params, "Alias").unwrap_or_else(|| alias_from(&name));
    let base_alias = alias.clone();
    let mut n = 1;
    while dir.contact_alias_taken(&alias) {
        n += 1;
        alias = format!("{base_alias}{n}");
    }
    let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let contact = MailContact {
        external_directory_object_id: id.clone(),
        guid: uuid::Uuid::new_v4().to_string(),
        display_name: param_str(params, "DisplayName").unwrap_or_else(|| name.clone()),
        name,
        alias,
        external_email_address: format!("SMTP:{address}"),
        email_addresses: vec![format!("SMTP:{address}")],
        first_name: param_str(params, "FirstName").unwrap_or_default(),
        last_name: param_str(params, "LastName").unwrap_or_default(),
        initials: param_str(params, "Initials").unwrap_or_default(),
        when_created_utc: stamp.clone(),
        when_changed_utc: stamp,
        ..MailContact::default()
    };
    let rendered = Value::Object(contact.render_mail_contact(&tenant.initial_domain));
    let visible = now_ms + i64::try_from(knobs.consistency_delay_ms).unwrap_or(0);
    let replicated = now_ms + i64::try_from(knobs.replication_delay_ms).unwrap_or(0);
    let readable = now_ms + i64::try_from(knobs.exchange_replication_delay_ms).unwrap_or(0);
    dir.insert_contact(contact, visible, replicated);
    if readable > now_ms {
        dir.set_contact_readable_at(&id, readable);
    }
    Ok(rendered)
}

const SET_MAIL_CONTACT: &[&str] = &[
    "Identity",
    "Name",
    "DisplayName",
    "Alias",
    "ExternalEmailAddress",
    "EmailAddresses",
    "HiddenFromAddressListsEnabled",
    "CustomAttribute1",
    "CustomAttribute2",
    "CustomAttribute3",
    "CustomAttribute4",
    "CustomAttribute5",
    "CustomAttribute6",
    "CustomAttribute7",
    "CustomAttribute8",
    "CustomAttribute9",
    "CustomAttribute10",
    "CustomAttribute11",
    "CustomAttribute12",
    "CustomAttribute13",
    "CustomAttribute14",
    "CustomAttribute15",
];
const SET_CONTACT: &[&str] = &[
    "Identity",
    "Title",
    "Department",
    "Company",
    "Office",
    "Phone",
    "MobilePhone",
    "HomePhone",
    "Fax",
    "StreetAddress",
    "City",
    "StateOrProvince",
    "PostalCode",
    "CountryOrRegion",
    "Notes",
    "FirstName",
    "LastName",
    "Initials",
    "WebPage",
    "Manager",
    "DisplayName",
    "Name",
];

fn set_mail_contact(
    state: &SimState,
    tenant: &Tenant,
    params: &Map<String, Value>,
    contact_view: bool,
) -> Result<(), CmdletError> {
    let cmdlet = if contact_view {
        "Set-Contact"
    } else {
        "Set-MailContact"
    };
    check_known(
        cmdlet,
        params,
        &[
            COMMON,
            if contact_view {
                SET_CONTACT
            } else {
                SET_MAIL_CONTACT
            },
        ]
        .concat(),
    )?;
    let identity = param_str(params, "Identity").ok_or_else(|| {
        CmdletError::bad(
            PARAMETER_BINDING,
            "Cannot process command because of one or more missing mandatory parameters: Identity.",
        )
    })?;
    let mut dir = tenant.dir.write();
    let mut c = resolve_contact(&dir, tenant, &identity)
        .cloned()
        .ok_or_else(|| CmdletError::not_found(&identity, tenant))?;
    for (key, value) in params {
        let text = || match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let k = key.to_ascii_lowercase();
        match k.as_str() {
            "identity" | "confirm" | "erroraction" | "warningaction" | "whatif" | "verbose"
            | "domaincontroller" => {}
            "name" => {
                let name = text();
                check_name(&name)?;
                if dir
                    .contact_by_name(&name)
                    .is_some_and(|id| *id != c.external_directory_object_id)
                {
                    return Err(CmdletError::bad(
                        "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
                        format!(
                            "The name \"{name}\" is already being used. Please try another name."
                        ),
                    ));
                }
                c.name = name;
            }
            "displayname" => c.display_name = text(),
            "alias" => c.alias = text(),
            "externalemailaddress" => {
                let a = bare_address(&text()).to_string();
                address_conflict(&dir, tenant, &a, Some(&c.external_directory_object_id))?;
                let old_primary = c.primary_smtp().to_string();
                c.email_addresses
                    .retain(|e| !bare_address(e).eq_ignore_ascii_case(&old_primary));
                c.external_email_address = format!("SMTP:{a}");
                c.email_addresses.insert(0, format!("SMTP:{a}"));
            }
            "emailaddresses" => {
                let list: Vec<String> = match value {
                    Value::Array(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                    Value::String(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
                    _ => Vec::new(),
                };
                for a in &list {
                    address_conflict(&dir, tenant, a, Some(&c.external_directory_object_id))?;
                }
                c.email_addresses = list;
            }
            "hiddenfromaddresslistsenabled" => {
                c.hidden_from_address_lists_enabled = param_bool(params, key)?.unwrap_or(false)
            }
            k if k.starts_with("customattribute") => {
                let n: usize = k["customattribute".len()..].parse().unwrap_or(0);
                let v = text();
                if v.chars().count() > 1024 {
                    return Err(CmdletError::bad(
                        VALIDATION,
                        format!(
                            "The length of the property is too long. The maximum length is 1024 and the length of the value provided is {}.",
                            v.chars().count()
                        ),
                    ));
                }
                c.custom_attributes[n - 1] = v;
            }
            "title" => c.title = text(),
            "department" => c.department = text(),
            "company" => c.company = text(),
            "office" => c.office = text(),
            "phone" => c.phone = text(),
            "mobilephone" => c.mobile_phone = text(),
            "homephone" => c.home_phone = text(),
            "fax" => c.fax = text(),
            "streetaddress" => c.street_address = text(),
            "city" => c.city = text(),
            "stateorprovince" => c.state_or_province = text(),
            "postalcode" => c.postal_code = text(),
            "countryorregion" => c.country_or_region = text(),
            "notes" => c.notes = text(),
            "firstname" => c.first_name = text(),
            "lastname" => c.last_name = text(),
            "initials" => c.initials = text(),
            "webpage" => c.web_page = text(),
            "manager" => c.manager = text(),
            _ => {}
        }
    }
    c.when_changed_utc = state.clock.stamp();
    dir.replace_contact(c);
    Ok(())
}

fn remove_mail_contact(tenant: &Tenant, params: &Map<String, Value>) -> Result<(), CmdletError> {
    check_known(
        "Remove-MailContact",
        params,
        &[COMMON, &["Identity"]].concat(),
    )?;
    let identity = param_str(params, "Identity").ok_or_else(|| {
        CmdletError::bad(
            PARAMETER_BINDING,
            "Cannot process command because of one or more missing mandatory parameters: Identity.",
        )
    })?;
    let mut dir = tenant.dir.write();
    let id = resolve_contact(&dir, tenant, &identity)
        .map(|c| c.external_directory_object_id.clone())
        .ok_or_else(|| CmdletError::not_found(&identity, tenant))?;
    dir.remove_contact(&id);
    Ok(())
}
