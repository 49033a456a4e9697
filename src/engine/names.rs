//! Unique target names. Quirk (docs/microsoft-facts.md §1): Exchange `Name` is required, at most 64 characters and unique
//! across all recipients of the tenant, while display names are neither. The resolution is deterministic and does not
//! flap: the display name itself when free, else the display name truncated plus a short suffix derived from the
//! anchor's hash (stable for that person); the diff keeps an assigned name as long as the display name is unchanged.

use sha2::{Digest, Sha256};

use super::entry::{Entry, Field};

/// Longest `Name` Exchange accepts.
pub const MAX_NAME_CHARS: usize = 64;

/// The name to try first: the display name (else the address, else the anchor), truncated to 64 characters.
pub fn base_name(entry: &Entry) -> String {
    let display = entry.get(Field::DisplayName);
    let source = if !display.is_empty() {
        display
    } else if !entry.get(Field::Email).is_empty() {
        entry.get(Field::Email)
    } else {
        entry.anchor.as_str()
    };
    truncate_chars(source.trim(), MAX_NAME_CHARS)
}

/// The name used when the base name is taken: base truncated, a space and `hex_len` hex digits of the anchor's hash.
pub fn suffixed_name(entry: &Entry, hex_len: usize) -> String {
    let digest = hex::encode(Sha256::digest(entry.anchor.as_bytes()));
    let suffix = &digest[..hex_len.min(digest.len())];
    let base = truncate_chars(&base_name(entry), MAX_NAME_CHARS - suffix.len() - 1);
    format!("{} {suffix}", base.trim_end())
}

/// A unique name for the entry given which names are taken (case-insensitively, as Exchange compares them).
pub fn unique_name(entry: &Entry, is_taken: impl Fn(&str) -> bool) -> String {
    let base = base_name(entry);
    if !is_taken(&base) {
        return base;
    }
    for hex_len in [6, 10, 16] {
        let candidate = suffixed_name(entry, hex_len);
        if !is_taken(&candidate) {
            return candidate;
        }
    }
    suffixed_name(entry, 32)
}

fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(anchor: &str, display: &str) -> Entry {
        let mut entry = Entry::new(anchor);
        entry.set(Field::DisplayName, display);
        entry
    }

    #[test]
    fn free_display_names_are_used_as_is() {
        assert_eq!(
            unique_name(&entry("galbridge:t:1", "Ada Lovelace"), |_| false),
            "Ada Lovelace"
        );
    }

    #[test]
    fn clashes_get_a_stable_suffix_per_anchor() {
        let taken = |name: &str| name.eq_ignore_ascii_case("john smith");
        let first = unique_name(&entry("galbridge:t:1", "John Smith"), taken);
        let second = unique_name(&entry("galbridge:t:2", "John Smith"), taken);
        assert!(first.starts_with("John Smith "), "{first}");
        assert_ne!(
            first, second,
            "two people with one name get different names"
        );
        assert_eq!(
            first,
            unique_name(&entry("galbridge:t:1", "John Smith"), taken),
            "deterministic"
        );
        assert_eq!(first.len(), "John Smith ".len() + 6);
    }

    #[test]
    fn long_names_are_cut_to_64_characters_on_char_boundaries() {
        let long = "Ž".repeat(80);
        let name = unique_name(&entry("galbridge:t:1", &long), |_| false);
        assert_eq!(name.chars().count(), 64);
        let suffixed = unique_name(&entry("galbridge:t:1", &long), |n| n == name);
        assert_eq!(suffixed.chars().count(), 64);
        assert!(suffixed.starts_with("ŽŽŽ"));
    }

    #[test]
    fn entries_without_display_name_fall_back_to_address() {
        let mut e = Entry::new("galbridge:t:1");
        e.set(Field::Email, "ada@acme.com");
        assert_eq!(base_name(&e), "ada@acme.com");
    }
}
