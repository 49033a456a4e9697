//! The personal contact galbridge writes for one entry: Graph `contact` properties rendered from the entry's synced
//! fields (docs/microsoft-facts.md §3), the per-property write policy (`overwrite` | `fill_blank`), and the comparison of
//! what a mailbox holds with what it should hold.
//!
//! Property by property:
//! - names: `givenName`, `surname`, `displayName`, `initials`; `fileAs` is derived ("Surname, Given", else the
//!   display name) so phones sort the list like Outlook does.
//! - `emailAddresses`: `[{name, address}]`, the primary address first (named with the display name), then
//!   `other_emails` (split on `;` / `,`).
//! - phones: `businessPhones` and `homePhones` are lists of one; `mobilePhone` a string. Graph's contact has no fax
//!   property: `fax` is not written.
//! - `jobTitle`, `department`, `companyName`, `officeLocation`, `manager`, `businessHomePage` (web page).
//! - `businessAddress` from street/city/state/postal code/country (one property: its policy is `fill_blank` if any
//!   of its fields asks for it).
//! - `personalNotes` from `notes`, always `fill_blank`: the mailbox owner's own notes are never overwritten.
//! - `categories`: the link's categories are added to whatever the owner set (never removed from them).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::engine::entry::{Entry, Field};

/// The fixed namespace of galbridge's extended properties (a GUID of our own; Exchange keys named properties by
/// namespace GUID + name).
pub const ANCHOR_NAMESPACE: &str = "6d1f4b8e-3a2c-4f5e-9b7a-0c8d2e1f5a93";

/// The single-value extended property that holds the anchor on every contact galbridge creates or adopts.
/// Quirk (docs/microsoft-facts.md §3): it is never echoed back unless expanded with a `$filter` on this exact id.
pub fn anchor_property_id() -> String {
    format!("String {{{ANCHOR_NAMESPACE}}} Name galbridgeAnchor")
}

/// The Graph properties galbridge may write (what a folder listing `$select`s).
pub const CONTACT_PROPERTIES: &[&str] = &[
    "givenName",
    "surname",
    "displayName",
    "fileAs",
    "initials",
    "emailAddresses",
    "businessPhones",
    "homePhones",
    "mobilePhone",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
    "manager",
    "businessHomePage",
    "businessAddress",
    "personalNotes",
    "categories",
];

const SIMPLE: &[(Field, &str)] = &[
    (Field::GivenName, "givenName"),
    (Field::Surname, "surname"),
    (Field::DisplayName, "displayName"),
    (Field::Initials, "initials"),
    (Field::MobilePhone, "mobilePhone"),
    (Field::JobTitle, "jobTitle"),
    (Field::Department, "department"),
    (Field::Company, "companyName"),
    (Field::Office, "officeLocation"),
    (Field::ManagerName, "manager"),
    (Field::WebPage, "businessHomePage"),
];

const ADDRESS: &[(Field, &str)] = &[
    (Field::StreetAddress, "street"),
    (Field::City, "city"),
    (Field::State, "state"),
    (Field::PostalCode, "postalCode"),
    (Field::Country, "countryOrRegion"),
];

/// How one Graph property is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Overwrite,
    /// Only when the contact's property is blank (the owner's value wins).
    FillBlank,
}

/// Which Graph properties are `fill_blank` for a link (from its per-field policy; notes always are).
pub fn fill_blank_properties(fill_blank_fields: &BTreeSet<Field>) -> BTreeSet<&'static str> {
    let mut properties: BTreeSet<&'static str> = BTreeSet::from(["personalNotes"]);
    for (field, property) in SIMPLE {
        if fill_blank_fields.contains(field) {
            properties.insert(property);
        }
    }
    let pairs = [
        (Field::BusinessPhone, "businessPhones"),
        (Field::HomePhone, "homePhones"),
        (Field::Email, "emailAddresses"),
        (Field::OtherEmails, "emailAddresses"),
    ];
    for (field, property) in pairs {
        if fill_blank_fields.contains(&field) {
            properties.insert(property);
        }
    }
    if fill_blank_fields.contains(&Field::DisplayName) {
        properties.insert("fileAs");
    }
    if ADDRESS.iter().any(|(f, _)| fill_blank_fields.contains(f)) {
        properties.insert("businessAddress");
    }
    properties
}

/// The Graph properties of an entry (only for synced fields; blank fields render as blank values so that an
/// `overwrite` property the source cleared is cleared in the contact too).
pub fn render_properties(entry: &Entry) -> BTreeMap<String, Value> {
    let synced = |field: Field| entry.fields.contains_key(&field);
    let mut properties = BTreeMap::new();
    for (field, property) in SIMPLE {
        if synced(*field) {
            properties.insert((*property).to_owned(), json!(entry.get(*field)));
        }
    }
    if synced(Field::DisplayName) || synced(Field::Surname) {
        let (given, surname) = (entry.get(Field::GivenName), entry.get(Field::Surname));
        let file_as = if !surname.is_empty() && !given.is_empty() {
            format!("{surname}, {given}")
        } else {
            entry.get(Field::DisplayName).to_owned()
        };
        properties.insert("fileAs".into(), json!(file_as));
    }
    for (field, property) in [
        (Field::BusinessPhone, "businessPhones"),
        (Field::HomePhone, "homePhones"),
    ] {
        if synced(field) {
            let value = entry.get(field);
            let list: Vec<&str> = if value.is_empty() {
                vec![]
            } else {
                vec![value]
            };
            properties.insert(property.to_owned(), json!(list));
        }
    }
    if synced(Field::Email) || synced(Field::OtherEmails) {
        let mut addresses = Vec::new();
        let primary = entry.get(Field::Email);
        if !primary.is_empty() {
            addresses.push(json!({"name": entry.get(Field::DisplayName), "address": primary}));
        }
        for other in entry
            .get(Field::OtherEmails)
            .split([';', ','])
            .map(str::trim)
            .filter(|a| !a.is_empty() && !a.eq_ignore_ascii_case(primary))
        {
            addresses.push(json!({"name": entry.get(Field::DisplayName), "address": other}));
        }
        properties.insert("emailAddresses".into(), Value::Array(addresses));
    }
    if ADDRESS.iter().any(|(field, _)| synced(*field)) {
        let mut address = Map::new();
        for (field, key) in ADDRESS {
            if synced(*field) {
                address.insert((*key).to_owned(), json!(entry.get(*field)));
            }
        }
        properties.insert("businessAddress".into(), Value::Object(address));
    }
    if synced(Field::Notes) {
        properties.insert("personalNotes".into(), json!(entry.get(Field::Notes)));
    }
    properties
}

/// A value as compared: `null`, `""`, `[]`, `{}` and objects whose members are all blank are one "blank"; object
/// members that are blank are dropped (Graph returns every address key, set or not).
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::String(text) if text.trim().is_empty() => Value::Null,
        Value::String(text) => Value::String(text.trim().to_owned()),
        Value::Array(items) => {
            let items: Vec<Value> = items
                .iter()
                .map(normalize)
                .filter(|v| !v.is_null())
                .collect();
            if items.is_empty() {
                Value::Null
            } else {
                Value::Array(items)
            }
        }
        Value::Object(members) => {
            let members: Map<String, Value> = members
                .iter()
                .filter(|(key, _)| !key.starts_with('@'))
                .map(|(key, v)| (key.clone(), normalize(v)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if members.is_empty() {
                Value::Null
            } else {
                Value::Object(members)
            }
        }
        other => other.clone(),
    }
}

/// Whether a property value is blank.
pub fn is_blank(value: Option<&Value>) -> bool {
    value.is_none_or(|v| normalize(v).is_null())
}

/// Compares one desired property with the contact's current value. Addresses compare only the keys galbridge sets;
/// email addresses compare case-insensitively.
fn same(property: &str, desired: &Value, current: Option<&Value>) -> bool {
    let desired = normalize(desired);
    let current = current.map(normalize).unwrap_or(Value::Null);
    match (property, &desired, &current) {
        ("businessAddress", Value::Object(want), Value::Object(have)) => {
            want.iter().all(|(key, value)| have.get(key) == Some(value))
        }
        ("businessAddress", Value::Null, Value::Object(_)) => false,
        ("emailAddresses", _, _) => {
            let lower = |v: &Value| Value::String(v.to_string().to_lowercase());
            lower(&desired) == lower(&current)
        }
        _ => desired == current,
    }
}

/// The PATCH that brings a contact read from the mailbox to the desired properties: `overwrite` properties that
/// differ, `fill_blank` properties the owner left blank, and the link's categories when one is missing.
pub fn patch_for_current(
    desired: &BTreeMap<String, Value>,
    fill_blank: &BTreeSet<&'static str>,
    categories: &[String],
    current: &Value,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (property, value) in desired {
        let have = current.get(property);
        let wanted = if fill_blank.contains(property.as_str()) {
            is_blank(have) && !normalize(value).is_null()
        } else {
            !same(property, value, have)
        };
        if wanted {
            patch.insert(property.clone(), value.clone());
        }
    }
    if let Some(merged) = merged_categories(current, categories) {
        patch.insert("categories".into(), merged);
    }
    patch
}

/// The contact's categories with the link's added, or `None` when all are already there.
fn merged_categories(current: &Value, categories: &[String]) -> Option<Value> {
    let have: Vec<String> = current
        .get("categories")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<&String> = categories
        .iter()
        .filter(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut merged = have.clone();
    merged.extend(missing.into_iter().cloned());
    Some(json!(merged))
}

/// The PATCH of an incremental change: `overwrite` properties whose desired value differs from what galbridge last
/// wrote. `fill_blank` properties are left alone (galbridge wrote them once; they are no longer blank).
pub fn patch_for_written(
    desired: &BTreeMap<String, Value>,
    written: &BTreeMap<String, Value>,
    fill_blank: &BTreeSet<&'static str>,
) -> Map<String, Value> {
    desired
        .iter()
        .filter(|(property, _)| !fill_blank.contains(property.as_str()))
        .filter(|(property, value)| !same(property, value, written.get(property.as_str())))
        .map(|(property, value)| (property.clone(), value.clone()))
        .collect()
}

/// The body of a create: the non-blank properties, the categories and the anchor.
pub fn create_body(
    desired: &BTreeMap<String, Value>,
    categories: &[String],
    anchor: &str,
) -> Value {
    let mut body: Map<String, Value> = desired
        .iter()
        .filter(|(_, value)| !normalize(value).is_null())
        .map(|(property, value)| (property.clone(), value.clone()))
        .collect();
    body.insert("categories".into(), json!(categories));
    body.insert(
        "singleValueExtendedProperties".into(),
        json!([{"id": anchor_property_id(), "value": anchor}]),
    );
    Value::Object(body)
}

/// The PATCH that adopts an unanchored contact: the anchor plus what [`patch_for_current`] finds.
pub fn adoption_patch(mut patch: Map<String, Value>, anchor: &str) -> Value {
    patch.insert(
        "singleValueExtendedProperties".into(),
        json!([{"id": anchor_property_id(), "value": anchor}]),
    );
    Value::Object(patch)
}

/// A stable hash of the desired properties, categories and photo hash (what a mailbox record remembers).
pub fn desired_hash(
    desired: &BTreeMap<String, Value>,
    categories: &[String],
    photo_hash: Option<&str>,
) -> String {
    let mut hasher = Sha256::new();
    for (property, value) in desired {
        hasher.update(property.as_bytes());
        hasher.update([0]);
        hasher.update(normalize(value).to_string().as_bytes());
        hasher.update([0]);
    }
    for category in categories {
        hasher.update(category.as_bytes());
        hasher.update([1]);
    }
    hasher.update(photo_hash.unwrap_or("").as_bytes());
    hex::encode(hasher.finalize())
}

/// The sha256 of a photo, hex.
pub fn photo_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The primary email address of a contact as listed (lowercase), for adoption.
pub fn primary_address(contact: &Value) -> Option<String> {
    contact
        .get("emailAddresses")?
        .as_array()?
        .first()?
        .get("address")?
        .as_str()
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> Entry {
        let mut entry = Entry::new("galbridge:t:1");
        entry.set(Field::GivenName, "Ada");
        entry.set(Field::Surname, "Lovelace");
        entry.set(Field::DisplayName, "Ada Lovelace");
        entry.set(Field::Email, "ada@acme.com");
        entry.set(Field::BusinessPhone, "+1 555 0100");
        entry.set(Field::HomePhone, "");
        entry.set(Field::City, "London");
        entry.set(Field::MobilePhone, "+1 555 0101");
        entry
    }

    #[test]
    fn renders_file_as_named_addresses_and_phone_lists() {
        let properties = render_properties(&ada());
        assert_eq!(properties["fileAs"], json!("Lovelace, Ada"));
        assert_eq!(
            properties["emailAddresses"],
            json!([{"name": "Ada Lovelace", "address": "ada@acme.com"}])
        );
        assert_eq!(properties["businessPhones"], json!(["+1 555 0100"]));
        assert_eq!(properties["homePhones"], json!([]));
        assert_eq!(properties["businessAddress"], json!({"city": "London"}));
        assert!(
            !properties.contains_key("jobTitle"),
            "unsynced fields stay out"
        );
    }

    #[test]
    fn fill_blank_keeps_what_the_owner_typed_and_overwrite_resets() {
        let desired = render_properties(&ada());
        let fill_blank = fill_blank_properties(&BTreeSet::from([Field::MobilePhone]));
        let current = json!({
            "mobilePhone": "+44 owner's own",
            "businessPhones": ["+1 555 9999"],
            "businessAddress": {"city": "London", "street": "", "countryOrRegion": ""},
            "categories": ["Family"],
            "displayName": "Ada Lovelace", "givenName": "Ada", "surname": "Lovelace", "fileAs": "Lovelace, Ada",
            "emailAddresses": [{"name": "Ada Lovelace", "address": "ADA@acme.com"}],
            "homePhones": [],
        });
        let patch = patch_for_current(&desired, &fill_blank, &["Acme".to_owned()], &current);
        assert_eq!(
            patch.keys().collect::<Vec<_>>(),
            vec!["businessPhones", "categories"]
        );
        assert_eq!(patch["categories"], json!(["Family", "Acme"]));
    }

    #[test]
    fn incremental_patches_only_changed_overwrite_properties() {
        let written = render_properties(&ada());
        let mut moved = ada();
        moved.set(Field::City, "Paris");
        moved.set(Field::MobilePhone, "+1 555 0202");
        let fill_blank = fill_blank_properties(&BTreeSet::from([Field::MobilePhone]));
        let patch = patch_for_written(&render_properties(&moved), &written, &fill_blank);
        assert_eq!(patch.keys().collect::<Vec<_>>(), vec!["businessAddress"]);
    }

    #[test]
    fn the_hash_follows_content_categories_and_photo() {
        let desired = render_properties(&ada());
        let base = desired_hash(&desired, &["A".into()], None);
        assert_eq!(base, desired_hash(&desired, &["A".into()], None));
        assert_ne!(base, desired_hash(&desired, &["B".into()], None));
        assert_ne!(base, desired_hash(&desired, &["A".into()], Some("x")));
    }
}
