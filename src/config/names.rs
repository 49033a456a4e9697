//! Names in the configuration: what a link, mesh or tenant name may look like (they appear in URLs such as
//! `/api/sync/{link}`), and "did you mean" suggestions for misspelt names.

/// Names of links, meshes and tenants: `[a-z0-9][a-z0-9-_.]*` (they appear in URLs: `/api/sync/{link}`).
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// The closest candidate to a misspelt name, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (wrong.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(wrong, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `" (did you mean \"x\"?)"` or nothing.
pub fn suggestion_suffix<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(wrong, candidates)
        .map(|name| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_suggestions() {
        assert!(is_valid_name("acme-to-northern"));
        assert!(is_valid_name("group.acme-to-globex"));
        assert!(!is_valid_name("Acme"));
        assert!(!is_valid_name("-acme"));
        assert!(!is_valid_name("acme/northern"));
        assert_eq!(
            did_you_mean("northen", ["acme", "northern"]),
            Some("northern")
        );
        assert_eq!(did_you_mean("zzz", ["acme", "northern"]), None);
    }
}
