//! Table Storage keys and property values: safe, reversible key escaping and strings split across properties.
//!
//! Quirks that force this (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model):
//! - `PartitionKey`/`RowKey` forbid `/`, `\`, `#`, `?` and control characters (U+0000–U+001F, U+007F–U+009F), and
//!   keys travel inside the URL as `Table(PartitionKey='…',RowKey='…')`, where `'`, `%` and non-ASCII are known to
//!   trip proxies and older service versions. So every byte outside `[A-Za-z0-9_.-]` is written `!XX` (hex of the
//!   UTF-8 byte). `|` therefore never appears inside an escaped name and is free to separate key parts.
//! - A key is at most 1 KiB; an escaped name longer than [`MAX_ESCAPED_NAME`] becomes `~{sha256}`. The original names
//!   are always stored as properties too, so nothing is ever decoded from a key.
//! - A string property holds at most 64 KiB (32 K UTF-16 code units) and an entity at most 1 MiB. Large JSON is
//!   split into `{name}_0..{name}_{n-1}` with `{name}_parts = n`; an entity over the limit is refused
//!   ([`StateError::TooLarge`]) before anything is sent.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::state::StateError;

/// Escaped names longer than this are hashed (two names plus separators stay under the 1 KiB key limit).
pub(super) const MAX_ESCAPED_NAME: usize = 400;
/// UTF-16 code units per string property chunk (the service limit is 32,768).
const CHUNK_UTF16_UNITS: usize = 30_000;
/// The service's entity size limit.
pub(super) const MAX_ENTITY_BYTES: usize = 1024 * 1024;

/// Escapes a link, scope, anchor or run id for use inside a key (see the module header).
pub(super) fn escape_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for byte in name.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => out.push(byte as char),
            _ => out.push_str(&format!("!{byte:02X}")),
        }
    }
    if out.len() > MAX_ESCAPED_NAME {
        return format!("~{}", hex::encode(Sha256::digest(name.as_bytes())));
    }
    out
}

/// Reverses [`escape_key`] for names that were not hashed (the store never needs it: names live in properties).
#[cfg(test)]
pub(super) fn unescape_key(escaped: &str) -> Option<String> {
    if escaped.starts_with('~') {
        return None;
    }
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut iter = escaped.bytes();
    while let Some(byte) = iter.next() {
        if byte == b'!' {
            let pair = [iter.next()?, iter.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&pair).ok()?, 16).ok()?);
        } else {
            bytes.push(byte);
        }
    }
    String::from_utf8(bytes).ok()
}

/// Puts `text` into `entity` as `{name}_parts` + `{name}_0..` chunks of at most 30,000 UTF-16 code units.
pub(super) fn put_chunked(entity: &mut Map<String, Value>, name: &str, text: &str) {
    let mut parts = 0usize;
    let mut chunk = String::new();
    let mut units = 0usize;
    for ch in text.chars() {
        if units + ch.len_utf16() > CHUNK_UTF16_UNITS {
            entity.insert(
                format!("{name}_{parts}"),
                Value::String(std::mem::take(&mut chunk)),
            );
            parts += 1;
            units = 0;
        }
        chunk.push(ch);
        units += ch.len_utf16();
    }
    if !chunk.is_empty() || parts == 0 {
        entity.insert(format!("{name}_{parts}"), Value::String(chunk));
        parts += 1;
    }
    entity.insert(format!("{name}_parts"), Value::from(parts as u64));
}

/// Reads back what [`put_chunked`] wrote; `Ok(None)` when the entity has no such value.
pub(super) fn get_chunked(
    entity: &Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<Option<String>, StateError> {
    let Some(parts) = entity.get(&format!("{name}_parts")) else {
        return Ok(None);
    };
    let corrupt = |reason: String| StateError::Corrupt {
        what: what.to_owned(),
        reason,
    };
    // Numbers come back as JSON numbers (Int32/Int64 without metadata) or as strings (Int64 with odata type).
    let parts = parts
        .as_u64()
        .or_else(|| parts.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| corrupt(format!("{name}_parts is not a count")))?;
    let mut text = String::new();
    for part in 0..parts {
        let chunk = entity
            .get(&format!("{name}_{part}"))
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt(format!("{name}_{part} of {parts} is missing")))?;
        text.push_str(chunk);
    }
    Ok(Some(text))
}

/// The stored size of an entity as the service counts it (4 bytes + keys as UTF-16 + per property 8 bytes,
/// its name as UTF-16 and its value), to refuse oversize entities before sending them.
pub(super) fn entity_size(entity: &Map<String, Value>) -> usize {
    let utf16 = |s: &str| s.encode_utf16().count() * 2;
    let mut size = 4;
    for (name, value) in entity {
        let value_size = match value {
            Value::String(s) => 4 + utf16(s),
            _ => 8,
        };
        if name == "PartitionKey" || name == "RowKey" {
            size += value_size;
        } else {
            size += 8 + utf16(name) + value_size;
        }
    }
    size
}

/// Refuses an entity above the service's 1 MiB limit, naming it.
pub(super) fn check_entity_size(entity: &Map<String, Value>, what: &str) -> Result<(), StateError> {
    let size = entity_size(entity);
    if size > MAX_ENTITY_BYTES {
        return Err(StateError::TooLarge {
            what: what.to_owned(),
            size,
            limit: MAX_ENTITY_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_hold_only_safe_characters_and_round_trip() {
        let awkward = [
            "galbridge:t1:o/1#2?3",
            "back\\slash",
            "ctl\u{1}\u{7f}\u{85}",
            "Ünïcødé ✓ 😀",
            "quote'%!|",
            "",
        ];
        for name in awkward {
            let escaped = escape_key(name);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-!".contains(&b)),
                "{escaped}"
            );
            assert_eq!(unescape_key(&escaped).as_deref(), Some(name));
        }
        assert_ne!(escape_key("a!41"), escape_key("aA"));
    }

    #[test]
    fn long_names_become_hashes_under_the_key_limit() {
        let escaped = escape_key(&"/".repeat(1000));
        assert!(escaped.starts_with('~') && escaped.len() < 100);
    }

    #[test]
    fn chunked_strings_round_trip_and_respect_the_property_limit() {
        let text: String = "€😀a".repeat(25_000); // 100,000 UTF-16 units
        let mut entity = Map::new();
        put_chunked(&mut entity, "data", &text);
        for (name, value) in &entity {
            if let Value::String(s) = value {
                assert!(s.encode_utf16().count() <= 32_768, "{name} too long");
            }
        }
        assert!(entity["data_parts"].as_u64().unwrap() >= 4);
        assert_eq!(
            get_chunked(&entity, "data", "x").unwrap().as_deref(),
            Some(text.as_str())
        );
        assert_eq!(get_chunked(&entity, "other", "x").unwrap(), None);
    }

    #[test]
    fn oversize_entities_are_refused() {
        let mut entity = Map::new();
        put_chunked(&mut entity, "data", &"x".repeat(600_000));
        let err = check_entity_size(&entity, "record a").unwrap_err();
        assert!(matches!(err, StateError::TooLarge { size, .. } if size > MAX_ENTITY_BYTES));
    }
}
