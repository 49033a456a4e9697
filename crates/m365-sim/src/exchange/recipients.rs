//! Recipients as Exchange lists them: `Get-Recipient` (who owns an address, who is hidden from the address lists:
//! mailboxes, mail-enabled guests, mail contacts, mail-enabled groups), `Get-Mailbox`, `Get-MailUser`, and
//! `Set-Mailbox`/`Set-MailUser -HiddenFromAddressListsEnabled`. Users carry ExternalDirectoryObjectId (the Entra id),
//! HiddenFromAddressListsEnabled (Exchange's flag, which Graph never shows) and WhenChangedUTC.

use serde_json::{Map, Value, json};

use super::cmdlets::{
    COMMON, PARAMETER_BINDING, RECIPIENT_TASK, Skip, check_known, paged, param_bool, param_str,
    parse_filter, result_size,
};
use super::{CmdletError, Output};
use crate::graph::decode_token;
use crate::model::mail_contact::bare_address;
use crate::model::user::{MailboxKind, User};
use crate::state::SimState;
use crate::tenant::{AddressOwner, Tenant};

/// A user's RecipientType and RecipientTypeDetails (None for users Exchange does not know: no mailbox and no mail).
pub(super) fn recipient_kind(u: &User) -> Option<(&'static str, &'static str)> {
    match (u.mailbox, u.user_type.as_str()) {
        (MailboxKind::User, _) => Some(("UserMailbox", "UserMailbox")),
        (MailboxKind::Shared, _) => Some(("UserMailbox", "SharedMailbox")),
        // An invited user is a guest mail user whatever its userType (a `Member` B2B user included).
        (MailboxKind::None, t)
            if u.mail.is_some() && (t == "Guest" || u.user_principal_name.contains("#EXT#")) =>
        {
            Some(("MailUser", "GuestMailUser"))
        }
        _ => None,
    }
}

/// A user as Exchange lists it as a recipient, with its WhenChangedUTC (None for users Exchange does not know).
pub(super) fn user_recipient(u: &User, when_changed_utc: &str) -> Option<Map<String, Value>> {
    let (kind, details) = recipient_kind(u)?;
    let mut m = Map::new();
    m.insert("Identity".into(), json!(u.mail_nickname));
    m.insert("Name".into(), json!(u.mail_nickname));
    m.insert("Alias".into(), json!(u.mail_nickname));
    m.insert("DisplayName".into(), json!(u.display_name));
    m.insert(
        "PrimarySmtpAddress".into(),
        json!(u.mail.clone().unwrap_or_default()),
    );
    m.insert("EmailAddresses".into(), json!(u.proxy_addresses));
    m.insert(
        "ExternalEmailAddress".into(),
        if kind == "MailUser" {
            json!(format!("SMTP:{}", u.mail.clone().unwrap_or_default()))
        } else {
            Value::Null
        },
    );
    m.insert("RecipientType".into(), json!(kind));
    m.insert("RecipientTypeDetails".into(), json!(details));
    m.insert("ExternalDirectoryObjectId".into(), json!(u.id));
    m.insert(
        "HiddenFromAddressListsEnabled".into(),
        json!(u.hidden_from_address_lists),
    );
    for (i, v) in u.extension_attributes.iter().enumerate() {
        m.insert(
            format!("CustomAttribute{}", i + 1),
            json!(v.clone().unwrap_or_default()),
        );
    }
    // Date format a guess (the JSON InvokeCommand returns is not documented): ISO 8601 UTC to the second.
    m.insert("WhenCreatedUTC".into(), json!(u.created_date_time));
    m.insert("WhenChangedUTC".into(), json!(when_changed_utc));
    Some(m)
}

pub(super) fn get_recipients(
    state: &SimState,
    tenant: &Tenant,
    params: &Map<String, Value>,
    page_size: usize,
    skip: Option<&str>,
    only: Option<&str>,
) -> Result<Output, CmdletError> {
    let cmdlet = match only {
        Some("MailUser") => "Get-MailUser",
        Some(_) => "Get-Mailbox",
        None => "Get-Recipient",
    };
    check_known(
        cmdlet,
        params,
        &[
            COMMON,
            &[
                "Identity",
                "Filter",
                "ResultSize",
                "RecipientTypeDetails",
                "RecipientType",
                "Properties",
            ],
        ]
        .concat(),
    )?;
    let dir = tenant.dir.read();
    let now = state.clock.now_ms();
    // Fast path: an address names its owner through the address index (galbridge's conflict lookups).
    if let Some(identity) = param_str(params, "Identity") {
        let owner = match dir.address_owner(&identity) {
            Some(AddressOwner::User(id)) => dir
                .users
                .get(id)
                .filter(|t| t.value.mail_user_from_ms <= now)
                .and_then(|t| user_recipient(&t.value, dir.user_when_changed(&t.value))),
            Some(AddressOwner::MailContact(id))
                if only.is_none() && dir.contact_readable(id, now) =>
            {
                dir.contacts
                    .get(id)
                    .map(|t| t.value.render_mail_contact(&tenant.initial_domain))
            }
            _ => None,
        };
        let kind_ok = |m: &Map<String, Value>| {
            only.is_none_or(|k| m.get("RecipientType").and_then(Value::as_str) == Some(k))
        };
        if let Some(m) = owner.filter(|m| kind_ok(m)) {
            return Ok(Output {
                values: vec![Value::Object(m)],
                next_skip: None,
            });
        }
    }
    let mut all: Vec<(String, Map<String, Value>)> = dir
        .users
        .iter()
        .filter(|(_, t)| t.value.mail_user_from_ms <= now)
        .filter_map(|(id, t)| {
            user_recipient(&t.value, dir.user_when_changed(&t.value)).map(|m| (format!("u{id}"), m))
        })
        .collect();
    if only.is_none() {
        all.extend(
            dir.contacts
                .iter()
                .filter(|(id, t)| t.visible_from_ms <= now && dir.contact_readable(id, now))
                .map(|(id, t)| {
                    (
                        format!("c{id}"),
                        t.value.render_mail_contact(&tenant.initial_domain),
                    )
                }),
        );
        // Mail-enabled groups are recipients too (`model/group.rs`).
        all.extend(dir.group_recipients());
    }
    if let Some(kind) = only {
        all.retain(|(_, m)| m.get("RecipientType").and_then(Value::as_str) == Some(kind));
    }
    if let Some(identity) = param_str(params, "Identity") {
        let lower = identity.to_lowercase();
        let hit = all.into_iter().find(|(_, m)| {
            [
                "Identity",
                "Name",
                "Alias",
                "PrimarySmtpAddress",
                "ExternalDirectoryObjectId",
                "DisplayName",
            ]
            .iter()
            .any(|k| {
                m.get(*k)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.to_lowercase() == lower)
            }) || m
                .get("EmailAddresses")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .any(|e| bare_address(e).eq_ignore_ascii_case(bare_address(&identity)))
                })
        });
        return match hit {
            Some((_, m)) => Ok(Output {
                values: vec![Value::Object(m)],
                next_skip: None,
            }),
            None => Err(CmdletError::not_found(&identity, tenant)),
        };
    }
    let filter = parse_filter(params)?;
    let details = param_str(params, "RecipientTypeDetails");
    let (after, remaining) = match skip.and_then(decode_token::<Skip>) {
        Some(s) => (Some(s.after), s.remaining),
        None => (None, result_size(params)?),
    };
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<(String, Value)> = all
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .filter(|(_, m)| filter.as_ref().is_none_or(|f| f.eval(m)))
        .filter(|(_, m)| {
            details.as_ref().is_none_or(|d| {
                m.get("RecipientTypeDetails")
                    .and_then(Value::as_str)
                    .is_some_and(|v| d.split(',').any(|x| x.trim().eq_ignore_ascii_case(v)))
            })
        })
        .map(|(k, m)| (k, Value::Object(m)))
        .collect();
    Ok(paged(items, page_size, remaining))
}

/// `Set-MailUser` (guests) and `Set-Mailbox` (user and shared mailboxes): `-HiddenFromAddressListsEnabled`.
pub(super) fn set_hidden(
    state: &SimState,
    tenant: &Tenant,
    params: &Map<String, Value>,
    kind: &str,
) -> Result<(), CmdletError> {
    let cmdlet = if kind == "MailUser" {
        "Set-MailUser"
    } else {
        "Set-Mailbox"
    };
    check_known(
        cmdlet,
        params,
        &[COMMON, &["Identity", "HiddenFromAddressListsEnabled"]].concat(),
    )?;
    let identity = param_str(params, "Identity").ok_or_else(|| {
        CmdletError::bad(
            PARAMETER_BINDING,
            "Cannot process command because of one or more missing mandatory parameters: Identity.",
        )
    })?;
    let hidden = param_bool(params, "HiddenFromAddressListsEnabled")?;
    let mut dir = tenant.dir.write();
    let lower = identity.to_lowercase();
    let now = state.clock.now_ms();
    let id = dir
        .users
        .values()
        .map(|t| &t.value)
        .filter(|u| u.mail_user_from_ms <= now)
        .filter(|u| recipient_kind(u).is_some_and(|(k, _)| k == kind))
        .find(|u| {
            u.id == identity
                || u.mail_nickname.to_lowercase() == lower
                || u.mail.as_deref().is_some_and(|m| m.to_lowercase() == lower)
                || u.user_principal_name.to_lowercase() == lower
        })
        .map(|u| u.id.clone())
        .ok_or_else(|| CmdletError::not_found(&identity, tenant))?;
    if let Some(h) = hidden {
        let mut patch = Map::new();
        patch.insert("hiddenFromAddressLists".into(), Value::Bool(h));
        dir.patch_user(&id, &patch, &state.clock.stamp())
            .map_err(|e| CmdletError::bad(RECIPIENT_TASK, e.to_string()))?;
    }
    Ok(())
}
