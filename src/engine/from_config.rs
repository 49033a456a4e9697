//! From the configuration's [`ResolvedLink`] to the engine's [`LinkSpec`]: the mapping taken as the configuration
//! parsed it (templates are parsed once, when the file loads), scope rules converted, target options and safety
//! carried over. The configuration room has already validated everything; errors here mean the two rooms disagree
//! (e.g. a target kind the engine does not run yet).

use std::collections::BTreeMap;

use super::diff::{DiffPolicy, OnDelete};
use super::scope::{AttributeFilter, HiddenRule, Matcher, ScopeRules};
use super::spec::{LinkSpec, MailContactOptions, ObjectOverride, TargetSpec};
use super::targets::personal_contacts::phones_target;
use crate::config::{self, Cadence, ResolvedLink, ServiceSettings, TargetOptions};

/// A resolved link the engine cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("link {link:?}: target kind {kind:?} is not supported by this engine yet")]
    UnsupportedTarget { link: String, kind: &'static str },
}

/// The per-object overrides of a resolved link, by lowercase source object id (an override's mapping is already
/// complete: the link's mapping with the override's fields on top).
pub fn object_overrides(link: &ResolvedLink) -> BTreeMap<String, ObjectOverride> {
    link.overrides
        .iter()
        .map(|(source_id, object_override)| {
            let engine_override = match object_override {
                config::ObjectOverride::Exclude => ObjectOverride::Exclude,
                config::ObjectOverride::Mapping(mapping) => {
                    ObjectOverride::Mapping(mapping.clone())
                }
            };
            (source_id.as_str().to_ascii_lowercase(), engine_override)
        })
        .collect()
}

/// The scope rules of a resolved link.
pub fn scope_rules(scope: &config::SourceScope) -> ScopeRules {
    ScopeRules {
        include_disabled: scope.include_disabled,
        include_guests: scope.include_guests,
        include_org_contacts: scope.include_org_contacts,
        hidden: match scope.hidden {
            config::HiddenSource::Exclude => HiddenRule::Exclude,
            config::HiddenSource::Include => HiddenRule::Include,
            config::HiddenSource::Graph => HiddenRule::Graph,
        },
        include_domains: scope.include_domains.iter().cloned().collect(),
        exclude_domains: scope.exclude_domains.iter().cloned().collect(),
        groups: scope
            .groups
            .iter()
            .map(|g| g.as_str().to_ascii_lowercase())
            .collect(),
        exclude_ids: scope
            .exclude_ids
            .iter()
            .map(|g| g.as_str().to_ascii_lowercase())
            .collect(),
        filters: scope
            .filters
            .iter()
            .map(|filter| AttributeFilter {
                attribute: filter.attribute.clone(),
                matcher: match &filter.test {
                    config::FilterTest::Equals(text) => Matcher::Equals(text.clone()),
                    config::FilterTest::StartsWith(text) => Matcher::StartsWith(text.clone()),
                    config::FilterTest::Matches(pattern) => {
                        Matcher::Matches(pattern.regex().clone())
                    }
                },
            })
            .collect(),
        include_groups: scope.include_groups,
        group_filters: scope.group_filters.iter().map(attribute_filter).collect(),
    }
}

/// One configured attribute filter as the scope evaluates it.
fn attribute_filter(filter: &config::AttributeFilter) -> AttributeFilter {
    AttributeFilter {
        attribute: filter.attribute.clone(),
        matcher: match &filter.test {
            config::FilterTest::Equals(text) => Matcher::Equals(text.clone()),
            config::FilterTest::StartsWith(text) => Matcher::StartsWith(text.clone()),
            config::FilterTest::Matches(pattern) => Matcher::Matches(pattern.regex().clone()),
        },
    }
}

/// The engine's view of a resolved link, whatever its target kind.
pub fn link_spec(link: &ResolvedLink, service: &ServiceSettings) -> Result<LinkSpec, SpecError> {
    let (target, max_concurrency) = match &link.target {
        TargetOptions::MailContact(options) => (
            TargetSpec::MailContact(MailContactOptions {
                anchor_attribute: options.anchor_attribute,
                policy: DiffPolicy {
                    on_delete: match options.on_delete {
                        config::OnDelete::Delete => OnDelete::Delete,
                        config::OnDelete::Hide => OnDelete::Hide,
                        config::OnDelete::Keep => OnDelete::Keep,
                    },
                    adopt_existing: options.adopt_existing,
                },
            }),
            usize::try_from(service.max_concurrency).unwrap_or(8),
        ),
        TargetOptions::PersonalContacts(options) => (
            TargetSpec::PersonalContacts(phones_target(options)),
            // Mailboxes written at once: each holds at most one `$batch` in flight.
            usize::try_from(service.mailboxes_in_flight).unwrap_or(256),
        ),
        TargetOptions::GuestUser(options) => (
            TargetSpec::GuestUser(options.clone()),
            usize::try_from(service.max_concurrency).unwrap_or(8),
        ),
    };
    let interval = match &link.cadence {
        Cadence::Every(every) => every.as_chrono(),
        Cadence::Cron(_) => service.default_interval.as_chrono(),
    };
    Ok(LinkSpec {
        name: link.name.clone(),
        source_tenant: link.source_tenant.name.clone(),
        target_tenant: link.target_tenant.name.clone(),
        scope: scope_rules(&link.scope),
        mapping: link.mapping.clone(),
        overrides: object_overrides(link),
        target,
        safety: link.safety,
        interval,
        full_reconcile_every: link.full_reconcile_every.as_chrono(),
        max_concurrency: max_concurrency.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::entry::Field;
    use std::path::Path;

    const CONFIG: &str = r#"
[tenants.acme]
tenant_id = "11111111-1111-4111-8111-111111111111"
client_id = "22222222-2222-4222-8222-222222222222"
credential = { env = "ACME_SECRET" }
[tenants.northern]
tenant_id = "33333333-3333-4333-8333-333333333333"
client_id = "44444444-4444-4444-8444-444444444444"
credential = { env = "NORTHERN_SECRET" }

[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
exclude_domains = ["contractors.acme.com"]
[[links.source.filters]]
attribute = "department"
starts_with = "Sal"
[links.target]
kind = "mail_contact"
tenant = "northern"
anchor_attribute = 7
on_delete = "hide"
[links.safety]
max_deletes = 5
[links.mapping]
display_name = "{displayName} ({companyName})"
city = ""
[[links.overrides]]
source_id = "55555555-5555-4555-8555-555555555555"
exclude = true

[[meshes]]
name = "group"
tenants = ["acme", "northern"]
[meshes.target]
kind = "mail_contact"
"#;

    #[test]
    fn resolved_links_become_specs() {
        let config = config::Config::from_toml_str(CONFIG, Path::new("galbridge.toml")).unwrap();
        let specs: Vec<LinkSpec> = config
            .links()
            .iter()
            .map(|link| link_spec(link, config.service()).unwrap())
            .collect();
        assert_eq!(specs.len(), 3, "one link and a mesh of two");
        let link = specs.iter().find(|s| s.name == "acme-to-northern").unwrap();
        let TargetSpec::MailContact(target) = &link.target else {
            panic!("a mail-contact link");
        };
        assert_eq!(target.anchor_attribute, 7);
        assert_eq!(target.policy.on_delete, OnDelete::Hide);
        assert_eq!(link.safety.max_deletes, 5);
        assert!(!link.mapping.syncs(Field::City));
        assert_eq!(
            link.mapping.get(Field::DisplayName).unwrap().as_str(),
            "{displayName} ({companyName})"
        );
        assert!(matches!(
            link.overrides.get("55555555-5555-4555-8555-555555555555"),
            Some(ObjectOverride::Exclude)
        ));
        assert_eq!(
            link.scope.exclude_domains,
            vec!["contractors.acme.com".to_owned()]
        );
        assert!(matches!(link.scope.filters[0].matcher, Matcher::StartsWith(ref p) if p == "Sal"));
        let mesh: Vec<&LinkSpec> = specs
            .iter()
            .filter(|s| s.name.starts_with("group."))
            .collect();
        assert_eq!(mesh.len(), 2);
        assert!(mesh.iter().all(|s| s.source_tenant != s.target_tenant));
        assert!(
            mesh.iter().all(|s| s.mapping.syncs(Field::City)),
            "mesh uses the default mapping"
        );
    }
}
