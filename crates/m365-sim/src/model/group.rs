//! Groups as Graph and Exchange see them: the Graph `group` properties galbridge reads (`groups/delta`,
//! `GET /groups/{id}`), change tracking for delta (a version per group and per property, tombstones), and the
//! recipient Exchange lists for a mail-enabled group (`Get-Recipient`: distribution list, mail-enabled security
//! group, Microsoft 365 group) with its `HiddenFromAddressListsEnabled`, which Graph never shows.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{Group, Tombstone, Tracked};
use crate::tenant::Directory;

/// The Graph properties of a group the simulator serves (`$select` names outside this list are refused, as Graph
/// refuses unknown properties).
pub(crate) const GROUP_PROPS: &[&str] = &[
    "id",
    "displayName",
    "description",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "groupTypes",
    "proxyAddresses",
    "createdDateTime",
];

impl Group {
    /// One Graph property of the group (`Null` when unset).
    pub(crate) fn prop(&self, name: &str) -> Value {
        match name {
            "id" => json!(self.id),
            "displayName" => json!(self.display_name),
            "mail" => self.mail.as_ref().map_or(Value::Null, |m| json!(m)),
            "mailEnabled" => json!(self.mail_enabled),
            "mailNickname" => self
                .mail_nickname
                .as_ref()
                .map_or(Value::Null, |m| json!(m)),
            "securityEnabled" => json!(self.security_enabled),
            "groupTypes" => json!(self.group_types),
            "proxyAddresses" => json!(
                self.mail
                    .iter()
                    .map(|m| format!("SMTP:{m}"))
                    .collect::<Vec<_>>()
            ),
            "createdDateTime" if !self.created_date_time.is_empty() => {
                json!(self.created_date_time)
            }
            _ => Value::Null,
        }
    }

    /// The group with the given properties (`id` always).
    pub(crate) fn render(&self, props: &[&str]) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        for p in props {
            m.insert((*p).to_string(), self.prop(p));
        }
        m
    }

    /// Whether Exchange knows the group as a recipient: mail-enabled with an address.
    pub(crate) fn is_recipient(&self) -> bool {
        self.mail_enabled && self.mail.is_some()
    }

    /// Exchange's RecipientType and RecipientTypeDetails of a mail-enabled group.
    fn recipient_kind(&self) -> (&'static str, &'static str) {
        if self
            .group_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case("Unified"))
        {
            ("MailUniversalDistributionGroup", "GroupMailbox")
        } else if self.security_enabled {
            ("MailUniversalSecurityGroup", "MailUniversalSecurityGroup")
        } else {
            (
                "MailUniversalDistributionGroup",
                "MailUniversalDistributionGroup",
            )
        }
    }

    /// The group as `Get-Recipient` lists it (None for groups Exchange does not know).
    pub(crate) fn recipient(&self, when_changed_utc: &str) -> Option<Map<String, Value>> {
        if !self.is_recipient() {
            return None;
        }
        let (kind, details) = self.recipient_kind();
        let alias = self
            .mail_nickname
            .clone()
            .unwrap_or_else(|| self.id.clone());
        let mail = self.mail.clone().unwrap_or_default();
        let mut m = Map::new();
        m.insert("Identity".into(), json!(alias));
        m.insert("Name".into(), json!(alias));
        m.insert("Alias".into(), json!(alias));
        m.insert("DisplayName".into(), json!(self.display_name));
        m.insert("PrimarySmtpAddress".into(), json!(mail));
        m.insert("EmailAddresses".into(), json!([format!("SMTP:{mail}")]));
        m.insert("ExternalEmailAddress".into(), Value::Null);
        m.insert("RecipientType".into(), json!(kind));
        m.insert("RecipientTypeDetails".into(), json!(details));
        m.insert("ExternalDirectoryObjectId".into(), json!(self.id));
        m.insert(
            "HiddenFromAddressListsEnabled".into(),
            json!(self.hidden_from_address_lists),
        );
        m.insert("WhenCreatedUTC".into(), json!(self.created_date_time));
        m.insert("WhenChangedUTC".into(), json!(when_changed_utc));
        Some(m)
    }

    /// Applies a control patch (Graph names plus `hiddenFromAddressLists` and `members`); returns the Graph
    /// properties that changed (the hidden flag is Exchange's only).
    pub(crate) fn apply_patch(
        &mut self,
        patch: &Map<String, Value>,
    ) -> Result<Vec<&'static str>, String> {
        let text = |v: &Value, key: &str| -> Result<Option<String>, String> {
            match v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(format!("{key} must be a string or null")),
            }
        };
        let flag = |v: &Value, key: &str| {
            v.as_bool()
                .ok_or_else(|| format!("{key} must be a boolean"))
        };
        let list = |v: &Value, key: &str| -> Result<Vec<String>, String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .ok_or_else(|| format!("{key} must be an array of strings"))
        };
        let mut changed = Vec::new();
        for (key, value) in patch {
            let before = self.clone();
            let prop: Option<&'static str> = match key.as_str() {
                "displayName" => {
                    self.display_name = text(value, key)?.unwrap_or_default();
                    Some("displayName")
                }
                "mail" => {
                    self.mail = text(value, key)?;
                    Some("mail")
                }
                "mailNickname" => {
                    self.mail_nickname = text(value, key)?;
                    Some("mailNickname")
                }
                "mailEnabled" => {
                    self.mail_enabled = flag(value, key)?;
                    Some("mailEnabled")
                }
                "securityEnabled" => {
                    self.security_enabled = flag(value, key)?;
                    Some("securityEnabled")
                }
                "groupTypes" => {
                    self.group_types = list(value, key)?;
                    Some("groupTypes")
                }
                "members" => {
                    self.members = list(value, key)?;
                    None
                }
                "hiddenFromAddressLists" => {
                    self.hidden_from_address_lists = flag(value, key)?;
                    None
                }
                other => return Err(format!("unknown group field {other}")),
            };
            if let Some(prop) = prop
                && *self != before
            {
                changed.push(prop);
                if prop == "mail" {
                    changed.push("proxyAddresses");
                }
            }
        }
        Ok(changed)
    }
}

impl Directory {
    /// Adds a group (a new version for groups/delta).
    pub(crate) fn insert_group(&mut self, group: Group, visible_from_ms: i64) {
        let version = self.bump();
        let id = group.id.clone();
        self.group_tombstones.remove(&id);
        self.groups.insert(
            id,
            Tracked {
                value: group,
                version,
                created_version: version,
                prop_versions: HashMap::new(),
                visible_from_ms,
            },
        );
    }

    /// Changes a group at `now_utc`. A Graph property change is a groups/delta change; any change of a recipient
    /// (the hidden flag included) moves Exchange's WhenChangedUTC; hiding alone is no Graph change.
    pub(crate) fn patch_group(
        &mut self,
        id: &str,
        patch: &Map<String, Value>,
        now_utc: &str,
    ) -> Result<(), String> {
        let version = self.seq + 1;
        let tracked = self
            .groups
            .get_mut(id)
            .ok_or_else(|| format!("group {id} not found"))?;
        let before = tracked.value.clone();
        let changed = tracked.value.apply_patch(patch)?;
        let recipient_changed =
            tracked.value != before && (tracked.value.is_recipient() || before.is_recipient());
        if !changed.is_empty() {
            tracked.version = version;
            for p in &changed {
                tracked.prop_versions.insert(p, version);
            }
            self.seq = version;
        }
        if recipient_changed {
            self.group_exchange_changed
                .insert(id.to_string(), now_utc.to_string());
        }
        Ok(())
    }

    /// Deletes a group (groups/delta reports it `@removed` with reason `deleted`; `soft` says `changed`).
    pub(crate) fn delete_group(&mut self, id: &str, soft: bool) -> bool {
        if self.groups.remove(id).is_none() {
            return false;
        }
        self.group_exchange_changed.remove(id);
        let version = self.bump();
        self.group_tombstones.insert(
            id.to_string(),
            Tombstone {
                version,
                reason: if soft { "changed" } else { "deleted" },
            },
        );
        true
    }

    /// Exchange's WhenChangedUTC of a group: its last Exchange-visible change, else its creation time.
    pub(crate) fn group_when_changed<'a>(&'a self, group: &'a Group) -> &'a str {
        self.group_exchange_changed
            .get(&group.id)
            .map_or(group.created_date_time.as_str(), String::as_str)
    }

    /// Mail-enabled groups as Exchange recipients, keyed for `Get-Recipient`'s stable paging order.
    pub(crate) fn group_recipients(&self) -> Vec<(String, Map<String, Value>)> {
        self.groups
            .iter()
            .filter_map(|(id, t)| {
                t.value
                    .recipient(self.group_when_changed(&t.value))
                    .map(|m| (format!("g{id}"), m))
            })
            .collect()
    }
}
