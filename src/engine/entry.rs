//! The normalised person ([`Entry`]) that every target is written from, the anchor that ties a target object to its
//! source object, the stable content hash used to detect change, and the source attribute bag ([`SourceObject`]) read
//! from a Graph user (or org contact) JSON object, including the merge of `Prefer: return=minimal` partial updates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every anchor galbridge writes.
pub const ANCHOR_PREFIX: &str = "galbridge:";

/// `galbridge:{sourceTenantId}:{objectId}`: the identity of a source object, written on every object galbridge creates.
pub fn anchor_for(source_tenant_id: &str, object_id: &str) -> String {
    format!(
        "{ANCHOR_PREFIX}{}:{}",
        source_tenant_id.to_ascii_lowercase(),
        object_id.to_ascii_lowercase()
    )
}

/// The prefix shared by every anchor of one source tenant (`galbridge:{sourceTenantId}:`).
pub fn anchor_prefix_for(source_tenant_id: &str) -> String {
    format!("{ANCHOR_PREFIX}{}:", source_tenant_id.to_ascii_lowercase())
}

/// Splits an anchor into (source tenant id, object id); `None` if it is not a galbridge anchor.
pub fn parse_anchor(anchor: &str) -> Option<(&str, &str)> {
    let rest = anchor.strip_prefix(ANCHOR_PREFIX)?;
    let (tenant, object) = rest.split_once(':')?;
    if tenant.is_empty() || object.is_empty() {
        return None;
    }
    Some((tenant, object))
}

/// Whether a string value is a galbridge anchor (used for loop prevention: such objects are never read as sources).
pub fn is_anchor(value: &str) -> bool {
    parse_anchor(value).is_some()
}

/// The fields of the normalised person (the keys of `[links.mapping]`): one enum shared with the configuration.
pub use crate::config::EntryField as Field;

/// Separator of the values of a multi-valued field (`other_emails`) inside its one string.
pub const LIST_SEPARATOR: char = ';';

/// The normalised person as galbridge writes it. A field is present when the link's mapping syncs it; its value may
/// be `""` (blank: galbridge clears it in the target). An absent field is not synced: galbridge leaves it alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub anchor: String,
    pub fields: BTreeMap<Field, String>,
}

impl Entry {
    pub fn new(anchor: impl Into<String>) -> Self {
        Entry {
            anchor: anchor.into(),
            fields: BTreeMap::new(),
        }
    }

    /// Sets a synced field (trimmed; `""` = blank).
    pub fn set(&mut self, field: Field, value: impl Into<String>) {
        let value = value.into();
        self.fields.insert(field, value.trim().to_owned());
    }

    /// The synced fields that have a value.
    pub fn non_blank(&self) -> impl Iterator<Item = (Field, &str)> {
        self.fields
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(field, value)| (*field, value.as_str()))
    }

    /// A field's value, or `""` when blank.
    pub fn get(&self, field: Field) -> &str {
        self.fields.get(&field).map(String::as_str).unwrap_or("")
    }

    /// The primary SMTP address, lowercased for comparisons.
    pub fn email_key(&self) -> Option<String> {
        self.fields
            .get(&Field::Email)
            .filter(|email| !email.is_empty())
            .map(|email| email.to_ascii_lowercase())
    }

    /// A stable content hash: sha256 over a canonical serialization (anchor, then fields in [`Field::ALL`] order,
    /// each as `name=value` with lengths, so no two different entries serialise alike).
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hash_part(&mut hasher, self.anchor.as_bytes());
        for (field, value) in &self.fields {
            hash_part(&mut hasher, field.as_str().as_bytes());
            hash_part(&mut hasher, value.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

fn hash_part(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Why a delta page reported an object as removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedReason {
    /// Soft-deleted (restorable).
    Changed,
    /// Permanently deleted.
    Deleted,
}

/// One source object as read from Graph: its id and its attribute bag (Graph names, camelCase), or a removal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceObject {
    pub id: String,
    /// Graph attributes as returned (`@odata.*` annotations dropped). Absent = unknown or null.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Set when a delta page reported `@removed`.
    pub removed: Option<RemovedReason>,
    /// What kind of directory object this is (`user`, `org_contact` or `group`).
    #[serde(default)]
    pub kind: SourceKind,
}

/// The kind of a source object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    #[default]
    User,
    OrgContact,
    /// A mail-enabled group (distribution list, Microsoft 365 group, mail-enabled security group), read from
    /// `groups/delta` when the link has `include_groups` (docs/microsoft-facts.md §10). Its entry carries the group's
    /// display name, address and company only; targets that cannot hold a group (e.g. guest users) skip it.
    Group,
}

/// A Graph object could not be read as a source object.
#[derive(Debug, thiserror::Error)]
pub enum SourceObjectError {
    #[error("source object is not a JSON object")]
    NotAnObject,
    #[error("source object has no string `id`")]
    MissingId,
}

impl SourceObject {
    /// Reads a Graph user (or org contact) JSON object, as found in a `value` array of a (delta) page.
    pub fn from_graph(
        value: &serde_json::Value,
        kind: SourceKind,
    ) -> Result<SourceObject, SourceObjectError> {
        let object = value.as_object().ok_or(SourceObjectError::NotAnObject)?;
        let id = object
            .get("id")
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or(SourceObjectError::MissingId)?
            .to_owned();
        let removed = object.get("@removed").map(|removed| {
            match removed.get("reason").and_then(serde_json::Value::as_str) {
                Some("deleted") => RemovedReason::Deleted,
                _ => RemovedReason::Changed,
            }
        });
        let attributes = object
            .iter()
            .filter(|(key, _)| {
                !key.starts_with('@') && !key.contains("@odata") && !key.contains("@delta")
            })
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(SourceObject {
            id,
            attributes,
            removed,
            kind,
        })
    }

    /// Merges a `Prefer: return=minimal` partial update into this stored snapshot: properties present in the
    /// update replace the stored ones, properties set to `null` are cleared, the others are kept.
    /// Quirk (docs/microsoft-facts.md §2): with `return=minimal`, delta returns only the changed properties.
    pub fn merge_partial(&mut self, partial: &serde_json::Value) {
        let Some(object) = partial.as_object() else {
            return;
        };
        for (key, value) in object {
            if key == "id"
                || key.starts_with('@')
                || key.contains("@odata")
                || key.contains("@delta")
            {
                continue;
            }
            if value.is_null() {
                self.attributes.remove(key);
            } else {
                self.attributes.insert(key.clone(), value.clone());
            }
        }
        self.removed = None;
    }

    /// An attribute rendered as text for templates and filters: strings as is, the first non-empty element of an
    /// array (`businessPhones`), booleans and numbers as JSON text; `None` when absent or blank.
    /// `extensionAttributeN` reads `onPremisesExtensionAttributes.extensionAttributeN` (the config's short form).
    pub fn text(&self, attribute: &str) -> Option<String> {
        let value = lookup_attribute(&self.attributes, attribute).or_else(|| {
            attribute
                .starts_with("extensionAttribute")
                .then(|| {
                    lookup_attribute(
                        &self.attributes,
                        &format!("onPremisesExtensionAttributes.{attribute}"),
                    )
                })
                .flatten()
        })?;
        render_value(value)
    }

    /// Whether any attribute (including nested ones, such as `onPremisesExtensionAttributes`) holds a galbridge anchor.
    pub fn carries_anchor(&self) -> bool {
        self.attributes.values().any(value_carries_anchor)
    }

    /// The attribute as a boolean, if it is one.
    pub fn flag(&self, attribute: &str) -> Option<bool> {
        lookup_attribute(&self.attributes, attribute)?.as_bool()
    }
}

/// Looks up `name`, or a dotted path into nested objects (`onPremisesExtensionAttributes.extensionAttribute1`),
/// case-insensitively as a fallback (Graph property names are case-insensitive).
fn lookup_attribute<'a>(
    attributes: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    let mut current = attributes;
    let mut parts = name.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.get(part).or_else(|| {
            current
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(part))
                .map(|(_, v)| v)
        })?;
        if parts.peek().is_none() {
            return Some(value);
        }
        current = value.as_object()?;
    }
    None
}

fn render_value(value: &serde_json::Value) -> Option<String> {
    let text = match value {
        serde_json::Value::Null => return None,
        serde_json::Value::String(text) => text.trim().to_owned(),
        serde_json::Value::Bool(flag) => flag.to_string(),
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::Array(items) => return items.iter().find_map(render_value),
        serde_json::Value::Object(_) => return None,
    };
    (!text.is_empty()).then_some(text)
}

fn value_carries_anchor(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => is_anchor(text.trim()),
        serde_json::Value::Array(items) => items.iter().any(value_carries_anchor),
        serde_json::Value::Object(map) => map.values().any(value_carries_anchor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anchor_round_trips_and_is_lowercase() {
        let anchor = anchor_for("7C9A1F0E-0000-4000-8000-000000000001", "ABC-1");
        assert_eq!(
            anchor,
            "galbridge:7c9a1f0e-0000-4000-8000-000000000001:abc-1"
        );
        assert_eq!(
            parse_anchor(&anchor),
            Some(("7c9a1f0e-0000-4000-8000-000000000001", "abc-1"))
        );
        assert!(anchor.starts_with(&anchor_prefix_for("7c9a1f0e-0000-4000-8000-000000000001")));
        assert_eq!(parse_anchor("XTSYNC|t|u|1"), None);
        assert_eq!(parse_anchor("galbridge::x"), None);
    }

    #[test]
    fn field_names_round_trip() {
        for field in Field::ALL {
            assert_eq!(Field::parse(field.as_str()), Some(field));
            let json = serde_json::to_string(&field).unwrap();
            assert_eq!(json, format!("\"{}\"", field.as_str()));
        }
        assert_eq!(Field::parse("displayName"), None);
    }

    #[test]
    fn content_hash_is_stable_and_sensitive() {
        let mut a = Entry::new("galbridge:t:1");
        a.set(Field::DisplayName, "Ada Lovelace");
        a.set(Field::City, "London");
        let mut b = Entry::new("galbridge:t:1");
        b.set(Field::City, "London");
        b.set(Field::DisplayName, "Ada Lovelace");
        assert_eq!(
            a.content_hash(),
            b.content_hash(),
            "insertion order must not matter"
        );
        b.set(Field::City, "Londo");
        assert_ne!(a.content_hash(), b.content_hash());
        // Moving text between fields changes the hash (no ambiguous concatenation).
        let mut c = Entry::new("galbridge:t:1");
        c.set(Field::DisplayName, "Ada LovelaceLondon");
        assert_ne!(a.content_hash(), c.content_hash());
        assert_eq!(a.content_hash().len(), 64);
    }

    #[test]
    fn blank_values_stay_synced_but_empty() {
        let mut entry = Entry::new("a");
        entry.set(Field::JobTitle, "  ");
        assert_eq!(
            entry.fields.get(&Field::JobTitle).map(String::as_str),
            Some("")
        );
        assert_eq!(entry.non_blank().count(), 0);
        entry.set(Field::JobTitle, " Engineer ");
        assert_eq!(entry.get(Field::JobTitle), "Engineer");
        assert_eq!(
            entry.get(Field::City),
            "",
            "an unsynced field reads as blank"
        );
        assert_eq!(entry.email_key(), None);
        entry.set(Field::Email, "Ada@Acme.COM");
        assert_eq!(entry.email_key().as_deref(), Some("ada@acme.com"));
    }

    #[test]
    fn graph_user_becomes_attribute_bag() {
        let user = json!({
            "@odata.type": "#microsoft.graph.user",
            "id": "u1",
            "displayName": "Ada Lovelace",
            "businessPhones": ["", "+44 20 1234"],
            "accountEnabled": true,
            "mobilePhone": null,
            "onPremisesExtensionAttributes": {"extensionAttribute1": "x"}
        });
        let object = SourceObject::from_graph(&user, SourceKind::User).unwrap();
        assert_eq!(object.id, "u1");
        assert_eq!(object.removed, None);
        assert_eq!(object.text("displayName").as_deref(), Some("Ada Lovelace"));
        assert_eq!(
            object.text("businessPhones").as_deref(),
            Some("+44 20 1234")
        );
        assert_eq!(object.text("accountEnabled").as_deref(), Some("true"));
        assert_eq!(object.text("mobilePhone"), None);
        assert_eq!(object.text("DISPLAYNAME").as_deref(), Some("Ada Lovelace"));
        assert_eq!(
            object
                .text("onPremisesExtensionAttributes.extensionAttribute1")
                .as_deref(),
            Some("x")
        );
        assert!(!object.attributes.contains_key("@odata.type"));
        assert!(!object.carries_anchor());
    }

    #[test]
    fn removed_objects_and_missing_ids() {
        let removed = json!({"id": "u2", "@removed": {"reason": "deleted"}});
        let object = SourceObject::from_graph(&removed, SourceKind::User).unwrap();
        assert_eq!(object.removed, Some(RemovedReason::Deleted));
        let soft = json!({"id": "u3", "@removed": {"reason": "changed"}});
        assert_eq!(
            SourceObject::from_graph(&soft, SourceKind::User)
                .unwrap()
                .removed,
            Some(RemovedReason::Changed)
        );
        assert!(matches!(
            SourceObject::from_graph(&json!({"displayName": "x"}), SourceKind::User),
            Err(SourceObjectError::MissingId)
        ));
        assert!(matches!(
            SourceObject::from_graph(&json!([1]), SourceKind::User),
            Err(SourceObjectError::NotAnObject)
        ));
    }

    #[test]
    fn anchored_objects_are_detected_even_nested() {
        let contact = json!({"id": "c1", "onPremisesExtensionAttributes": {"extensionAttribute15": "galbridge:t9:o1"}});
        assert!(
            SourceObject::from_graph(&contact, SourceKind::OrgContact)
                .unwrap()
                .carries_anchor()
        );
        let flat = json!({"id": "c2", "customAttribute15": "galbridge:t9:o2"});
        assert!(
            SourceObject::from_graph(&flat, SourceKind::OrgContact)
                .unwrap()
                .carries_anchor()
        );
    }

    #[test]
    fn partial_update_merges_into_snapshot() {
        let full =
            json!({"id": "u1", "displayName": "Ada", "jobTitle": "Analyst", "city": "London"});
        let mut snapshot = SourceObject::from_graph(&full, SourceKind::User).unwrap();
        snapshot.merge_partial(
            &json!({"id": "u1", "jobTitle": "Engineer", "city": null, "@odata.type": "x"}),
        );
        assert_eq!(snapshot.text("jobTitle").as_deref(), Some("Engineer"));
        assert_eq!(snapshot.text("city"), None);
        assert_eq!(snapshot.text("displayName").as_deref(), Some("Ada"));
        assert_eq!(snapshot.id, "u1");
    }
}
