//! A mailbox's contact folders and personal contacts (Outlook data reached through Graph), with the bookkeeping
//! that per-folder contacts delta needs.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{Tombstone, Tracked};

/// Contact properties Graph accepts on create/PATCH (microsoft.graph.contact, v1.0).
pub(crate) const CONTACT_PROPS: &[&str] = &[
    "givenName",
    "surname",
    "middleName",
    "displayName",
    "fileAs",
    "nickName",
    "title",
    "initials",
    "generation",
    "emailAddresses",
    "imAddresses",
    "businessPhones",
    "homePhones",
    "mobilePhone",
    "jobTitle",
    "companyName",
    "department",
    "officeLocation",
    "profession",
    "businessHomePage",
    "assistantName",
    "manager",
    "homeAddress",
    "businessAddress",
    "otherAddress",
    "personalNotes",
    "birthday",
    "spouseName",
    "children",
    "categories",
    "yomiGivenName",
    "yomiSurname",
    "yomiCompanyName",
];

const LIST_PROPS: &[&str] = &[
    "emailAddresses",
    "imAddresses",
    "businessPhones",
    "homePhones",
    "children",
    "categories",
];
const ADDRESS_PROPS: &[&str] = &["homeAddress", "businessAddress", "otherAddress"];

#[derive(Clone, Debug)]
pub(crate) struct ContactFolder {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) parent_folder_id: String,
}

impl ContactFolder {
    pub(crate) fn render(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("displayName".into(), json!(self.display_name));
        m.insert("parentFolderId".into(), json!(self.parent_folder_id));
        m
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct PersonalContact {
    pub(crate) id: String,
    pub(crate) parent_folder_id: String,
    /// The properties that are set, as compact JSON (canonical names). Kept serialized: a mailbox may hold
    /// thousands of contacts and a parsed map costs several times the bytes.
    pub(crate) fields: Box<str>,
    /// Single-value extended properties: id as the client spelled it → value.
    pub(crate) extended: Vec<(String, String)>,
    pub(crate) photo: Option<Arc<Vec<u8>>>,
    pub(crate) change_key: u64,
    pub(crate) created: String,
    pub(crate) modified: String,
    pub(crate) user_made: bool,
    /// The immutable id (`Prefer: IdType="ImmutableId"`), once a move gave the contact a new regular id; `None`:
    /// the regular id is still the one it was created with, which is also its immutable id.
    pub(crate) immutable_id: Option<Box<str>>,
}

impl PersonalContact {
    /// The id that never changes while the contact stays in this mailbox (docs/microsoft-facts.md §12).
    pub(crate) fn immutable_id(&self) -> &str {
        self.immutable_id.as_deref().unwrap_or(&self.id)
    }

    pub(crate) fn render(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "@odata.etag".into(),
            json!(format!("W/\"CQAAAB{:08}\"", self.change_key)),
        );
        m.insert("id".into(), json!(self.id));
        m.insert("createdDateTime".into(), json!(self.created));
        m.insert("lastModifiedDateTime".into(), json!(self.modified));
        m.insert(
            "changeKey".into(),
            json!(format!("CQAAAB{:08}", self.change_key)),
        );
        m.insert("parentFolderId".into(), json!(self.parent_folder_id));
        let mut fields = self.field_map();
        for p in CONTACT_PROPS {
            let v = fields.remove(*p).unwrap_or_else(|| {
                if LIST_PROPS.contains(p) {
                    json!([])
                } else if ADDRESS_PROPS.contains(p) {
                    json!({})
                } else {
                    Value::Null
                }
            });
            m.insert((*p).to_string(), v);
        }
        m
    }

    /// `render()` serialised, written straight from the stored fields (their JSON text is already canonical: it was
    /// written by `apply` from parsed values), without building a map of every property. Same bytes as
    /// `serde_json::to_vec(&Value::Object(self.render()))`: keys in serde_json's sorted map order.
    pub(crate) fn render_json(&self) -> Vec<u8> {
        self.render_json_with(None)
    }

    /// `render_json` with one more key (`singleValueExtendedProperties` of an `$expand`) and its JSON, written at
    /// its sorted place as a map would.
    pub(crate) fn render_json_with(&self, extra: Option<(&str, &[u8])>) -> Vec<u8> {
        let stored = if self.fields.is_empty() {
            "{}"
        } else {
            &self.fields
        };
        // Keys are canonical property names (no escapes), so they borrow; anything else takes the slow road.
        let Ok(StoredFields(mut fields)) = serde_json::from_str::<StoredFields<'_>>(stored) else {
            let mut m = self.render();
            if let Some((key, json)) = extra {
                m.insert(
                    key.to_string(),
                    serde_json::from_slice(json).unwrap_or(Value::Null),
                );
            }
            return serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
        };
        // `apply` writes the fields from a sorted map, so they come sorted; merge them with the sorted keys.
        if !fields.is_sorted_by(|a, b| a.0 < b.0) {
            fields.sort_by(|a, b| a.0.cmp(b.0));
        }
        let mut stored_fields = fields.into_iter().peekable();
        let mut extra = extra;
        let mut out = Vec::with_capacity(stored.len() + 900);
        out.push(b'{');
        for (i, (key, slot)) in RENDER_ORDER.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some((extra_key, json)) = extra.filter(|(k, _)| k < key) {
                write_key(&mut out, extra_key);
                out.extend_from_slice(json);
                out.push(b',');
                extra = None;
            }
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            let text = |out: &mut Vec<u8>, s: &str| {
                // Serialising a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, s);
            };
            match slot {
                RenderSlot::Etag => text(&mut out, &format!("W/\"CQAAAB{:08}\"", self.change_key)),
                RenderSlot::Id => text(&mut out, &self.id),
                RenderSlot::Created => text(&mut out, &self.created),
                RenderSlot::Modified => text(&mut out, &self.modified),
                RenderSlot::ChangeKey => text(&mut out, &format!("CQAAAB{:08}", self.change_key)),
                RenderSlot::ParentFolder => text(&mut out, &self.parent_folder_id),
                RenderSlot::Property(empty) => {
                    while stored_fields.next_if(|(name, _)| name < key).is_some() {}
                    match stored_fields.next_if(|(name, _)| name == key) {
                        Some((_, raw)) => out.extend_from_slice(raw.get().as_bytes()),
                        None => out.extend_from_slice(empty.as_bytes()),
                    }
                }
            }
        }
        if let Some((extra_key, json)) = extra {
            out.push(b',');
            write_key(&mut out, extra_key);
            out.extend_from_slice(json);
        }
        out.push(b'}');
        out
    }

    /// The properties that are set, parsed.
    pub(crate) fn field_map(&self) -> Map<String, Value> {
        serde_json::from_str(&self.fields).unwrap_or_default()
    }

    /// The rendering a filter sees: every property plus the extended properties.
    pub(crate) fn render_for_filter(&self) -> Map<String, Value> {
        let mut m = self.render();
        m.insert(
            "singleValueExtendedProperties".into(),
            Value::Array(
                self.extended
                    .iter()
                    .map(|(id, value)| json!({"id": id, "value": value}))
                    .collect(),
            ),
        );
        m
    }

    /// Validates and applies a create/PATCH body; returns an error message in Graph's words.
    pub(crate) fn apply(&mut self, body: Map<String, Value>) -> Result<(), String> {
        let mut fields = if self.fields.is_empty() {
            Map::new()
        } else {
            self.field_map()
        };
        for (key, value) in body {
            if key == "singleValueExtendedProperties" {
                let items = value
                    .as_array()
                    .ok_or("singleValueExtendedProperties must be a collection")?;
                for item in items {
                    let id = item
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or("extended property needs an id")?;
                    let val = item
                        .get("value")
                        .and_then(Value::as_str)
                        .ok_or("extended property needs a string value")?;
                    validate_extended_id(id)?;
                    match self
                        .extended
                        .iter_mut()
                        .find(|(existing, _)| existing.eq_ignore_ascii_case(id))
                    {
                        Some(slot) => slot.1 = val.to_string(),
                        None => self.extended.push((id.to_string(), val.to_string())),
                    }
                }
                continue;
            }
            if key.starts_with("@odata")
                || key == "id"
                || key == "parentFolderId"
                || key == "changeKey"
            {
                continue;
            }
            let Some(prop) = CONTACT_PROPS.iter().find(|p| p.eq_ignore_ascii_case(&key)) else {
                return Err(format!(
                    "The property '{key}' does not exist on type 'Microsoft.OutlookServices.Contact'."
                ));
            };
            if *prop == "emailAddresses" && value.as_array().is_some_and(|a| a.len() > 3) {
                // Outlook contacts hold at most three email addresses (Email1..3).
                return Err("A contact can have at most 3 email addresses.".into());
            }
            if value.is_null() {
                fields.remove(*prop);
            } else {
                fields.insert((*prop).to_string(), value);
            }
        }
        self.fields = serde_json::to_string(&fields)
            .unwrap_or_else(|_| "{}".into())
            .into_boxed_str();
        Ok(())
    }
}

/// A contact's stored fields as (name, raw JSON) in stored order, borrowed: no map is built. Names are canonical
/// property names (no escapes), so they borrow.
struct StoredFields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for StoredFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
            type Value = StoredFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of contact properties")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<&'de str, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(StoredFields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// `"key":` with the key escaped as JSON.
fn write_key(out: &mut Vec<u8>, key: &str) {
    // Serialising a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

/// Where the value of each key of a rendered contact comes from.
enum RenderSlot {
    Etag,
    Id,
    Created,
    Modified,
    ChangeKey,
    ParentFolder,
    /// A contact property: its stored value, or this JSON when it is not set.
    Property(&'static str),
}

/// Every key `PersonalContact::render` writes, in serde_json's (sorted) map order.
static RENDER_ORDER: LazyLock<Vec<(&'static str, RenderSlot)>> = LazyLock::new(|| {
    let mut order = vec![
        ("@odata.etag", RenderSlot::Etag),
        ("id", RenderSlot::Id),
        ("createdDateTime", RenderSlot::Created),
        ("lastModifiedDateTime", RenderSlot::Modified),
        ("changeKey", RenderSlot::ChangeKey),
        ("parentFolderId", RenderSlot::ParentFolder),
    ];
    order.extend(CONTACT_PROPS.iter().map(|p| {
        let empty = if LIST_PROPS.contains(p) {
            "[]"
        } else if ADDRESS_PROPS.contains(p) {
            "{}"
        } else {
            "null"
        };
        (*p, RenderSlot::Property(empty))
    }));
    order.sort_unstable_by_key(|(key, _)| *key);
    order
});

/// Extended property ids must be `Type {GUID} Name X` or `Type {GUID} Id 0x..` (Graph's format).
fn validate_extended_id(id: &str) -> Result<(), String> {
    let mut parts = id.splitn(4, ' ');
    let kind = parts.next().unwrap_or_default();
    let guid = parts.next().unwrap_or_default();
    let selector = parts.next().unwrap_or_default();
    let ok = !kind.is_empty()
        && guid.starts_with('{')
        && guid.ends_with('}')
        && uuid::Uuid::parse_str(guid.trim_matches(|c| c == '{' || c == '}')).is_ok()
        && (selector == "Name" || selector == "Id")
        && parts.next().is_some_and(|n| !n.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!("The extended property id '{id}' is not valid."))
    }
}

pub(crate) struct Mailbox {
    pub(crate) user_id: String,
    pub(crate) seq: u64,
    pub(crate) folders: BTreeMap<String, ContactFolder>,
    pub(crate) contacts: BTreeMap<String, Tracked<PersonalContact>>,
    pub(crate) tombstones: BTreeMap<String, (String, Tombstone)>,
    /// Immutable ids of tombstoned regular ids whose immutable id differs (moved contacts).
    pub(crate) tombstone_immutable_ids: BTreeMap<String, Box<str>>,
    pub(crate) root_folder_id: String,
    pub(crate) default_folder_id: String,
    next_id: u64,
    pub(crate) delta_generation: u64,
}

impl Mailbox {
    pub(crate) fn new(user_id: &str, mailbox_index: u64) -> Self {
        let mut mb = Mailbox {
            user_id: user_id.to_string(),
            seq: 0,
            folders: BTreeMap::new(),
            contacts: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            tombstone_immutable_ids: BTreeMap::new(),
            root_folder_id: String::new(),
            default_folder_id: String::new(),
            next_id: mailbox_index << 32,
            delta_generation: 0,
        };
        mb.root_folder_id = mb.new_id("AQMk");
        mb.default_folder_id = mb.new_id("AQMk");
        mb.folders.insert(
            mb.default_folder_id.clone(),
            ContactFolder {
                id: mb.default_folder_id.clone(),
                display_name: "Contacts".into(),
                parent_folder_id: mb.root_folder_id.clone(),
            },
        );
        mb
    }

    /// Outlook-looking ids: a prefix and a base64url counter, unique in the tenant.
    pub(crate) fn new_id(&mut self, prefix: &str) -> String {
        use base64::Engine as _;
        self.next_id += 1;
        let raw = [self.user_id.as_bytes(), &self.next_id.to_be_bytes()].concat();
        let digest = ring::digest::digest(&ring::digest::SHA256, &raw);
        format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..24])
        )
    }

    pub(crate) fn bump(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(body: Value) -> PersonalContact {
        let mut c = PersonalContact {
            id: "AAMk\"id".into(),
            parent_folder_id: "AQMk".into(),
            created: "2024-01-01T00:00:00Z".into(),
            modified: "2024-01-02T00:00:00Z".into(),
            change_key: 7,
            ..PersonalContact::default()
        };
        let Value::Object(body) = body else {
            panic!("test body must be an object")
        };
        c.apply(body).unwrap();
        c
    }

    #[test]
    fn render_json_writes_the_bytes_render_would() {
        let cases = [
            json!({}),
            json!({"displayName": "Ada \"Countess\" Lovelace \u{e9}\u{1F600}\n", "givenName": "Ada", "surname": null}),
            json!({"emailAddresses": [{"name": "A", "address": "a@x.example"}], "businessPhones": ["+1 2", "3"],
                "businessAddress": {"street": "1 Main St", "city": "London", "postalCode": "EC1"}, "categories": ["GAL", "b"],
                "birthday": "1815-12-10T00:00:00Z", "personalNotes": "x\\y\ttab", "children": [], "homeAddress": {},
                "mobilePhone": "+44 7700 900000", "jobTitle": "Analyst", "companyName": "Northern", "yomiSurname": "ラブレス",
                "singleValueExtendedProperties": [{"id": "String {00020329-0000-0000-C000-000000000046} Name a", "value": "v"}]}),
            json!({"DisplayName": "case-insensitive key", "FILEAS": "f", "nickName": 1.5, "initials": 12, "title": true}),
        ];
        for body in cases {
            let c = contact(body.clone());
            let expected = serde_json::to_vec(&Value::Object(c.render())).unwrap();
            assert_eq!(
                String::from_utf8(c.render_json()).unwrap(),
                String::from_utf8(expected).unwrap(),
                "{body}"
            );
        }
        // Stored fields out of order, or with a name that is not a property, still render as `render` does.
        let mut odd = contact(json!({}));
        odd.fields = r#"{"surname":"Z","zzz":1,"displayName":"A","aaa":[]}"#.into();
        assert_eq!(
            String::from_utf8(odd.render_json()).unwrap(),
            serde_json::to_string(&Value::Object(odd.render())).unwrap()
        );
        // A contact that was never given fields renders too.
        let bare = PersonalContact::default();
        assert_eq!(
            bare.render_json(),
            serde_json::to_vec(&Value::Object(bare.render())).unwrap()
        );
    }

    #[test]
    fn render_json_with_places_the_expanded_key_as_a_map_would() {
        let c = contact(json!({"displayName": "A", "surname": "Z", "yomiSurname": "y"}));
        let expanded =
            json!([{"id": "String {00020329-0000-0000-C000-000000000046} Name a", "value": "v\""}]);
        let json = serde_json::to_vec(&expanded).unwrap();
        for key in ["singleValueExtendedProperties", "aaa", "zzz"] {
            let mut m = c.render();
            m.insert(key.to_string(), expanded.clone());
            assert_eq!(
                String::from_utf8(c.render_json_with(Some((key, &json)))).unwrap(),
                serde_json::to_string(&Value::Object(m)).unwrap(),
                "{key}"
            );
        }
    }

    #[test]
    fn apply_keeps_earlier_fields_and_removes_nulls() {
        let mut c = contact(json!({"displayName": "A", "jobTitle": "Analyst"}));
        let Value::Object(patch) = json!({"jobTitle": null, "department": "R"}) else {
            unreachable!()
        };
        c.apply(patch).unwrap();
        let fields = c.field_map();
        assert_eq!(fields.get("displayName"), Some(&json!("A")));
        assert_eq!(fields.get("department"), Some(&json!("R")));
        assert!(!fields.contains_key("jobTitle"));
    }
}
