//! Which mailboxes a `personal_contacts` link fills: every mail-enabled member user (`all`), the transitive user
//! members of groups, an explicit list of UPNs/addresses, or the users whose attribute passes a filter; minus the
//! excluded ones. Read from the target tenant's Graph (`User.Read.All`, `GroupMember.Read.All`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::PhonesTarget;
use crate::config::Mailboxes;
use crate::m365::{GraphClient, GraphError};

/// One mailbox the link fills. Its user id is the state scope and the limiter key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRef {
    /// The user's object id (lowercase).
    pub id: String,
    pub upn: String,
}

/// The selection, resolved: mailboxes by id, and explicit list entries that name nobody.
#[derive(Debug, Default)]
pub struct Selection {
    pub mailboxes: BTreeMap<String, MailboxRef>,
    pub unknown: Vec<String>,
}

const SELECT: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "userType",
    "accountEnabled",
];

/// Reads the selection from the target tenant.
pub async fn select_mailboxes(
    graph: &GraphClient,
    target: &PhonesTarget,
) -> Result<Selection, GraphError> {
    let mut selection = Selection::default();
    let users: Vec<Value> = match &target.mailboxes {
        Mailboxes::All => graph.list_users(SELECT, None)?.collect_all().await?,
        Mailboxes::Groups(groups) => {
            let mut users = Vec::new();
            for group in groups {
                users.extend(
                    graph
                        .group_user_members(group.as_str(), SELECT)?
                        .collect_all()
                        .await?,
                );
            }
            users
        }
        Mailboxes::List(names) => {
            let mut users = Vec::new();
            for name in names {
                match graph.get_user(name, SELECT).await? {
                    Some(user) => users.push(user),
                    None => selection.unknown.push(name.clone()),
                }
            }
            users
        }
        Mailboxes::Filter(filter) => {
            let mut select = SELECT.to_vec();
            select.push(filter.attribute.as_str());
            graph
                .list_users(&select, None)?
                .collect_all()
                .await?
                .into_iter()
                .filter(|user| filter.accepts(attribute_text(user, &filter.attribute).as_deref()))
                .collect()
        }
    };
    let explicit = matches!(target.mailboxes, Mailboxes::List(_));
    for user in users {
        let text = |key: &str| user.get(key).and_then(Value::as_str).unwrap_or("");
        let (id, upn, mail) = (text("id"), text("userPrincipalName"), text("mail"));
        if id.is_empty() {
            continue;
        }
        // Guests and disabled accounts have no phone of ours to fill, unless named explicitly.
        let guest = text("userType").eq_ignore_ascii_case("guest");
        let disabled = user.get("accountEnabled").and_then(Value::as_bool) == Some(false);
        if !explicit && (mail.is_empty() || guest || disabled) {
            continue;
        }
        let excluded = [upn, mail].iter().any(|name| {
            !name.is_empty() && target.exclude_mailboxes.contains(&name.to_lowercase())
        });
        if excluded {
            continue;
        }
        let id = id.to_ascii_lowercase();
        selection.mailboxes.insert(
            id.clone(),
            MailboxRef {
                id,
                upn: upn.to_owned(),
            },
        );
    }
    Ok(selection)
}

/// A user attribute as text for a filter (strings as they are, the first of a list, booleans and numbers printed).
fn attribute_text(user: &Value, attribute: &str) -> Option<String> {
    match user.get(attribute)? {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => items.first().and_then(Value::as_str).map(str::to_owned),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}
