//! The source scope of a link: which source objects flow to the target. Enabled accounts only (default), members
//! only (guests opt-in), an email address required, include/exclude domains, transitive group membership, attribute
//! filters (equals / starts-with / regex, all must match), explicit excludes, hidden-from-GAL, and org contacts
//! opt-in. Objects carrying a galbridge anchor are never in scope (loop prevention in two-way and mesh sync).
//! An object that leaves the scope is treated like a deletion by the diff.

use std::collections::{BTreeSet, HashSet};

use regex::Regex;
use serde::Serialize;

use super::entry::{SourceKind, SourceObject};

/// How an attribute filter matches.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Case-insensitive equality (directory values are case-insensitive).
    Equals(String),
    /// Case-insensitive prefix.
    StartsWith(String),
    /// A regular expression (as written; add `(?i)` for case-insensitivity).
    Matches(Regex),
}

/// One attribute filter: the attribute (Graph name, camelCase) and how it must match.
#[derive(Debug, Clone)]
pub struct AttributeFilter {
    pub attribute: String,
    pub matcher: Matcher,
}

impl AttributeFilter {
    fn accepts(&self, object: &SourceObject) -> bool {
        let value = object.text(&self.attribute).unwrap_or_default();
        match &self.matcher {
            Matcher::Equals(expected) => value.eq_ignore_ascii_case(expected),
            Matcher::StartsWith(prefix) => value.to_lowercase().starts_with(&prefix.to_lowercase()),
            Matcher::Matches(regex) => regex.is_match(&value),
        }
    }
}

/// The scope rules of a link (built from the link's `source` configuration).
#[derive(Debug, Clone, Default)]
pub struct ScopeRules {
    pub include_disabled: bool,
    pub include_guests: bool,
    pub include_org_contacts: bool,
    pub include_hidden: bool,
    /// Email domains to include (lowercase); empty = all.
    pub include_domains: Vec<String>,
    /// Email domains to exclude (lowercase).
    pub exclude_domains: Vec<String>,
    /// Group object ids; when non-empty, only transitive members of one of them are in scope.
    pub groups: Vec<String>,
    /// Source object ids never synced.
    pub exclude_ids: BTreeSet<String>,
    pub filters: Vec<AttributeFilter>,
}

/// Why an object is out of scope (reported in plans; stable snake_case names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfScope {
    Removed,
    Anchored,
    Excluded,
    OrgContact,
    Guest,
    Disabled,
    Hidden,
    NoEmail,
    Domain,
    NotInGroups,
    Filter,
}

impl ScopeRules {
    /// The attributes the filters read (to `$select` them).
    pub fn filter_attributes(&self) -> Vec<String> {
        self.filters
            .iter()
            .map(|filter| filter.attribute.clone())
            .collect()
    }

    /// Decides whether a source object is in scope. `group_members` holds the transitive member ids of
    /// [`ScopeRules::groups`] (ignored when the link has no groups).
    pub fn check(
        &self,
        object: &SourceObject,
        group_members: &HashSet<String>,
    ) -> Result<(), OutOfScope> {
        if object.removed.is_some() {
            return Err(OutOfScope::Removed);
        }
        if object.carries_anchor() {
            return Err(OutOfScope::Anchored);
        }
        if self.exclude_ids.contains(&object.id)
            || self.exclude_ids.contains(&object.id.to_ascii_lowercase())
        {
            return Err(OutOfScope::Excluded);
        }
        match object.kind {
            SourceKind::OrgContact if !self.include_org_contacts => {
                return Err(OutOfScope::OrgContact);
            }
            SourceKind::OrgContact => {}
            SourceKind::User => {
                let guest = object
                    .text("userType")
                    .is_some_and(|t| t.eq_ignore_ascii_case("guest"));
                if guest && !self.include_guests {
                    return Err(OutOfScope::Guest);
                }
                if !self.include_disabled && object.flag("accountEnabled") == Some(false) {
                    return Err(OutOfScope::Disabled);
                }
            }
        }
        let hidden = object.flag("showInAddressList") == Some(false)
            || object.flag("hiddenFromAddressListsEnabled") == Some(true);
        if hidden && !self.include_hidden {
            return Err(OutOfScope::Hidden);
        }
        let mail = object.text("mail").ok_or(OutOfScope::NoEmail)?;
        let domain = mail
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
            .ok_or(OutOfScope::NoEmail)?;
        if !self.include_domains.is_empty()
            && !self
                .include_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            return Err(OutOfScope::Domain);
        }
        if self
            .exclude_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            return Err(OutOfScope::Domain);
        }
        if !self.groups.is_empty()
            && !group_members.contains(&object.id)
            && !group_members.contains(&object.id.to_ascii_lowercase())
        {
            return Err(OutOfScope::NotInGroups);
        }
        if !self.filters.iter().all(|filter| filter.accepts(object)) {
            return Err(OutOfScope::Filter);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(extra: serde_json::Value) -> SourceObject {
        let mut base = json!({"id": "u1", "mail": "ada@acme.com", "accountEnabled": true, "userType": "Member",
                               "department": "Sales"});
        for (key, value) in extra.as_object().unwrap() {
            base[key] = value.clone();
        }
        SourceObject::from_graph(&base, SourceKind::User).unwrap()
    }

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    #[test]
    fn default_scope_takes_enabled_members_with_mail() {
        let rules = ScopeRules::default();
        assert_eq!(rules.check(&user(json!({})), &none()), Ok(()));
        assert_eq!(
            rules.check(&user(json!({"accountEnabled": false})), &none()),
            Err(OutOfScope::Disabled)
        );
        assert_eq!(
            rules.check(&user(json!({"userType": "Guest"})), &none()),
            Err(OutOfScope::Guest)
        );
        assert_eq!(
            rules.check(&user(json!({"mail": null})), &none()),
            Err(OutOfScope::NoEmail)
        );
        assert_eq!(
            rules.check(&user(json!({"showInAddressList": false})), &none()),
            Err(OutOfScope::Hidden)
        );
        let contact = SourceObject::from_graph(
            &json!({"id": "c1", "mail": "x@y.com"}),
            SourceKind::OrgContact,
        )
        .unwrap();
        assert_eq!(rules.check(&contact, &none()), Err(OutOfScope::OrgContact));
    }

    #[test]
    fn opt_ins_widen_the_scope() {
        let rules = ScopeRules {
            include_disabled: true,
            include_guests: true,
            include_hidden: true,
            include_org_contacts: true,
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({"accountEnabled": false})), &none()),
            Ok(())
        );
        assert_eq!(
            rules.check(&user(json!({"userType": "Guest"})), &none()),
            Ok(())
        );
        assert_eq!(
            rules.check(&user(json!({"showInAddressList": false})), &none()),
            Ok(())
        );
        let contact = SourceObject::from_graph(
            &json!({"id": "c1", "mail": "x@y.com"}),
            SourceKind::OrgContact,
        )
        .unwrap();
        assert_eq!(rules.check(&contact, &none()), Ok(()));
    }

    #[test]
    fn anchored_objects_never_flow_out_even_when_everything_is_included() {
        let rules = ScopeRules {
            include_org_contacts: true,
            ..ScopeRules::default()
        };
        let synced = SourceObject::from_graph(
            &json!({"id": "c9", "mail": "bob@northern.com",
                    "onPremisesExtensionAttributes": {"extensionAttribute15": "galbridge:northern-id:u7"}}),
            SourceKind::OrgContact,
        )
        .unwrap();
        assert_eq!(rules.check(&synced, &none()), Err(OutOfScope::Anchored));
    }

    #[test]
    fn domains_groups_excludes_and_filters() {
        let rules = ScopeRules {
            include_domains: vec!["acme.com".into()],
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({"mail": "ADA@ACME.COM"})), &none()),
            Ok(())
        );
        assert_eq!(
            rules.check(&user(json!({"mail": "ada@other.com"})), &none()),
            Err(OutOfScope::Domain)
        );
        let rules = ScopeRules {
            exclude_domains: vec!["acme.com".into()],
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({})), &none()),
            Err(OutOfScope::Domain)
        );

        let rules = ScopeRules {
            groups: vec!["g1".into()],
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({})), &none()),
            Err(OutOfScope::NotInGroups)
        );
        assert_eq!(
            rules.check(&user(json!({})), &HashSet::from(["u1".to_owned()])),
            Ok(())
        );

        let rules = ScopeRules {
            exclude_ids: BTreeSet::from(["u1".to_owned()]),
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({})), &none()),
            Err(OutOfScope::Excluded)
        );

        let filters = |matcher| ScopeRules {
            filters: vec![AttributeFilter {
                attribute: "department".into(),
                matcher,
            }],
            ..ScopeRules::default()
        };
        assert_eq!(
            filters(Matcher::Equals("sales".into())).check(&user(json!({})), &none()),
            Ok(())
        );
        assert_eq!(
            filters(Matcher::Equals("Sale".into())).check(&user(json!({})), &none()),
            Err(OutOfScope::Filter)
        );
        assert_eq!(
            filters(Matcher::StartsWith("SA".into())).check(&user(json!({})), &none()),
            Ok(())
        );
        let regex = Regex::new("^(Sales|Marketing)$").unwrap();
        assert_eq!(
            filters(Matcher::Matches(regex.clone())).check(&user(json!({})), &none()),
            Ok(())
        );
        assert_eq!(
            filters(Matcher::Matches(regex)).check(&user(json!({"department": "Legal"})), &none()),
            Err(OutOfScope::Filter)
        );
        // A missing attribute never equals a non-empty value.
        assert_eq!(
            filters(Matcher::Equals("Sales".into()))
                .check(&user(json!({"department": null})), &none()),
            Err(OutOfScope::Filter)
        );
    }

    #[test]
    fn removed_objects_are_out() {
        let removed = SourceObject::from_graph(
            &json!({"id": "u1", "@removed": {"reason": "changed"}}),
            SourceKind::User,
        )
        .unwrap();
        assert_eq!(
            ScopeRules::default().check(&removed, &none()),
            Err(OutOfScope::Removed)
        );
    }
}
