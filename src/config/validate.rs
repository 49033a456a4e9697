//! Cross-checks of a parsed configuration that serde cannot express: names, dangling tenant references,
//! impossible combinations, ranges. Pure (no network, no environment, no credentials). Each problem is reported
//! with its key path (`links[2].target.tenant`) and a reason, all problems at once.

use std::collections::{BTreeMap, BTreeSet};

use super::file::{ConfigFile, Credential, StateSettings, TableAuth};
use super::link::GROUP_FILTER_ATTRIBUTES;
use super::link::{
    FilterRule, MailboxSelection, MeshConfig, OnDelete, OverrideConfig, SourceConfig, TargetConfig,
};
use super::names::{is_valid_name, suggestion_suffix};
use super::resolve::{mesh_link_name, mesh_pairs};
use super::template::SOURCE_ATTRIBUTES;
use super::values::is_domain_name;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where: `links[2].target.tenant`, `tenants.acme.credential`, or `env GALBRIDGE_KEY_VAULT_URL`.
    pub path: String,
    pub reason: String,
}

#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

/// The largest `mailboxes_per_shard`: a shard's record lists its mailboxes and must stay well under a Table Storage
/// entity (1 MiB), and one invocation must not run long.
const MAX_MAILBOXES_PER_SHARD: u32 = 1000;

const NAME_RULE: &str =
    "must be lowercase letters, digits, '-', '_' or '.', starting with a letter or digit";

impl ConfigFile {
    /// Checks everything that can be checked without the network. `Ok` means [`super::Config`] can be built.
    pub fn validate(&self) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Issues::default();
        self.check_service(&mut issues);
        self.check_state(&mut issues);
        self.check_tenants(&mut issues);
        let mut link_names: BTreeMap<String, String> = BTreeMap::new();
        for (index, link) in self.links.iter().enumerate() {
            let path = format!("links[{index}]");
            if !is_valid_name(&link.name) {
                issues.add(
                    format!("{path}.name"),
                    format!("{:?} {NAME_RULE}", link.name),
                );
            } else if let Some(first) = link_names.insert(link.name.clone(), path.clone()) {
                issues.add(
                    format!("{path}.name"),
                    format!("duplicate link name {:?} (also {first})", link.name),
                );
            }
            check_cadence(
                &mut issues,
                &path,
                link.interval.is_some(),
                link.schedule.is_some(),
            );
            let source = self.check_tenant_ref(
                &mut issues,
                &format!("{path}.source.tenant"),
                link.source.tenant.as_deref(),
            );
            let target = self.check_tenant_ref(
                &mut issues,
                &format!("{path}.target.tenant"),
                link.target.tenant(),
            );
            if let (
                Some(source),
                Some(target),
                TargetConfig::MailContact(_) | TargetConfig::GuestUser(_),
            ) = (source, target, &link.target)
                && source == target
                && !link.source.kind.is_mailbox_folder()
            {
                issues.add(
                    format!("{path}.target.tenant"),
                    format!(
                        "a {} link cannot write into its own source tenant {source:?} (its people are already in that GAL)",
                        if matches!(link.target, TargetConfig::GuestUser(_)) { "guest_user" } else { "mail_contact" }
                    ),
                );
            }
            self.check_link_body(
                &mut issues,
                &path,
                &link.source,
                &link.target,
                link.safety.max_delete_percent,
                &link.overrides,
            );
            for (key, reason) in super::mailbox_source::check(
                &link.source,
                &link.target,
                link.source.tenant.as_deref(),
                false,
            ) {
                issues.add(format!("{path}.{key}"), reason);
            }
        }
        for (index, reason) in super::mailbox_source::check_overlaps(&self.links) {
            issues.add(format!("links[{index}].target"), reason);
        }
        let mut mesh_names = BTreeSet::new();
        for (index, mesh) in self.meshes.iter().enumerate() {
            let path = format!("meshes[{index}]");
            if !is_valid_name(&mesh.name) {
                issues.add(
                    format!("{path}.name"),
                    format!("{:?} {NAME_RULE}", mesh.name),
                );
            } else if !mesh_names.insert(mesh.name.clone()) {
                issues.add(
                    format!("{path}.name"),
                    format!("duplicate mesh name {:?}", mesh.name),
                );
            }
            self.check_mesh(&mut issues, &path, mesh, &mut link_names);
        }
        if issues.0.is_empty() {
            Ok(())
        } else {
            Err(issues.0)
        }
    }

    fn check_service(&self, issues: &mut Issues) {
        if self.service.max_concurrency == 0 {
            issues.add("service.max_concurrency", "must be at least 1");
        }
        if !(20..=130_000).contains(&self.service.graph_requests_per_10s) {
            issues.add(
                "service.graph_requests_per_10s",
                format!(
                    "must be between 20 (one $batch) and 130,000 (Graph's limit per app), not {}",
                    self.service.graph_requests_per_10s
                ),
            );
        }
        if self.service.mailboxes_in_flight == 0 {
            issues.add("service.mailboxes_in_flight", "must be at least 1");
        }
        if self.service.run_budget.as_std() < std::time::Duration::from_secs(60) {
            issues.add(
                "service.run_budget",
                "must be at least \"1m\" (a run needs time to read, apply and record)",
            );
        }
        if let Some(notifications) = &self.service.notifications {
            for (key, reason) in notifications.problems() {
                issues.add(format!("service.notifications.{key}"), reason);
            }
        }
        if let Some(queue) = &self.service.shard_queue {
            let name = &queue.name;
            if let Err(reason) = crate::queue::azure::check_queue_name(name) {
                issues.add("service.shard_queue.name", reason);
            } else if name.len() > 56 {
                issues.add(
                    "service.shard_queue.name",
                    format!("{name:?} is longer than 56 characters: its poison queue \"{name}-poison\" would be over the service's 63"),
                );
            }
            match &queue.auth {
                TableAuth::ManagedIdentity if queue.endpoint.is_none() => issues.add(
                    "service.shard_queue.endpoint",
                    "required with auth = \"managed_identity\" (or set GALBRIDGE_QUEUE__queueServiceUri)",
                ),
                TableAuth::ConnectionStringEnv(variable) if !is_env_name(variable) => issues.add(
                    "service.shard_queue.auth.connection_string_env",
                    format!("{variable:?} is not an environment variable name"),
                ),
                _ => {}
            }
        }
    }

    fn check_state(&self, issues: &mut Issues) {
        let StateSettings::Table(table) = &self.state else {
            return;
        };
        let name = &table.table;
        let valid_table = (3..=63).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_table {
            issues.add("state.table", format!("{name:?} is not a valid table name (3-63 letters and digits, starting with a letter)"));
        }
        match &table.auth {
            TableAuth::ManagedIdentity if table.endpoint.is_none() => issues.add(
                "state.endpoint",
                "required with auth = \"managed_identity\" (or set GALBRIDGE_STATE_TABLE_ENDPOINT)",
            ),
            TableAuth::ConnectionStringEnv(variable) if !is_env_name(variable) => issues.add(
                "state.auth.connection_string_env",
                format!("{variable:?} is not an environment variable name"),
            ),
            _ => {}
        }
    }

    fn check_tenants(&self, issues: &mut Issues) {
        for (name, tenant) in &self.tenants {
            let path = format!("tenants.{name}");
            if !is_valid_name(name) {
                issues.add(&path, format!("tenant name {name:?} {NAME_RULE}"));
            }
            if let Some(domain) = &tenant.initial_domain
                && !is_domain_name(domain)
            {
                issues.add(
                    format!("{path}.initial_domain"),
                    format!("{domain:?} is not a domain name"),
                );
            }
            let credential_path = format!("{path}.credential");
            match &tenant.credential {
                Credential::KeyVaultSecret(item) | Credential::KeyVaultCertificate(item) => {
                    let valid = (1..=127).contains(&item.len())
                        && item.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !valid {
                        issues.add(&credential_path, format!("{item:?} is not a Key Vault secret name (1-127 letters, digits and '-')"));
                    }
                    if self.key_vault.is_none() {
                        issues.add(
                            &credential_path,
                            "names a Key Vault item but there is no [key_vault] section (add one with its url, or set GALBRIDGE_KEY_VAULT_URL)",
                        );
                    }
                }
                Credential::Env(variable) if !is_env_name(variable) => {
                    issues.add(
                        &credential_path,
                        format!("{variable:?} is not an environment variable name"),
                    );
                }
                Credential::Env(_) | Credential::FederatedManagedIdentity => {}
            }
        }
    }

    /// The tenant name if it exists (reporting missing or unknown names).
    fn check_tenant_ref<'a>(
        &self,
        issues: &mut Issues,
        path: &str,
        name: Option<&'a str>,
    ) -> Option<&'a str> {
        let Some(name) = name else {
            issues.add(path, "missing: name the tenant (a key of [tenants])");
            return None;
        };
        if self.tenants.contains_key(name) {
            return Some(name);
        }
        issues.add(
            path,
            format!(
                "no tenant named {name:?}{}",
                suggestion_suffix(name, self.tenants.keys().map(String::as_str))
            ),
        );
        None
    }

    fn check_link_body(
        &self,
        issues: &mut Issues,
        path: &str,
        source: &SourceConfig,
        target: &TargetConfig,
        max_delete_percent: u64,
        overrides: &[OverrideConfig],
    ) {
        for (list, key) in [
            (&source.include_domains, "include_domains"),
            (&source.exclude_domains, "exclude_domains"),
        ] {
            for (index, domain) in list.iter().enumerate() {
                if !is_domain_name(domain.trim_start_matches('@')) {
                    issues.add(
                        format!("{path}.source.{key}[{index}]"),
                        format!("{domain:?} is not a domain name"),
                    );
                }
            }
        }
        for (index, rule) in source.filters.iter().enumerate() {
            check_filter(issues, &format!("{path}.source.filters[{index}]"), rule);
        }
        check_group_filters(issues, path, source);
        if let (Some(hidden), Some(include_hidden)) = (source.hidden, source.include_hidden) {
            issues.add(
                format!("{path}.source.include_hidden"),
                format!(
                    "replaced by `hidden`; remove it (it says {include_hidden}, `hidden` says {:?})",
                    serde_json::to_value(hidden)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
            );
        }
        match target {
            TargetConfig::GuestUser(options) => {
                for (key, reason) in options.issues() {
                    issues.add(format!("{path}.target.{key}"), reason);
                }
            }
            TargetConfig::MailContact(options) => {
                if !(1..=15).contains(&options.anchor_attribute) {
                    issues.add(
                        format!("{path}.target.anchor_attribute"),
                        format!(
                            "must be between 1 and 15 (CustomAttribute1..15); got {}",
                            options.anchor_attribute
                        ),
                    );
                }
            }
            TargetConfig::PersonalContacts(options) => {
                let mailboxes = format!("{path}.target.mailboxes");
                match &options.mailboxes {
                    MailboxSelection::All(false) => {
                        issues.add(
                            &mailboxes,
                            "all = false selects nothing; choose mailboxes or disable the link",
                        );
                    }
                    MailboxSelection::Groups(groups) if groups.is_empty() => {
                        issues.add(&mailboxes, "groups is empty")
                    }
                    MailboxSelection::List(list) if list.is_empty() => {
                        issues.add(&mailboxes, "list is empty")
                    }
                    MailboxSelection::Filter(rule) => {
                        check_filter(issues, &format!("{mailboxes}.filter"), rule)
                    }
                    _ => {}
                }
                if options.on_delete == OnDelete::Hide {
                    issues.add(
                        format!("{path}.target.on_delete"),
                        "\"hide\" applies to mail contacts only; use \"delete\" or \"keep\"",
                    );
                }
                if options
                    .folder
                    .as_deref()
                    .is_some_and(|folder| folder.trim().is_empty())
                {
                    issues.add(
                        format!("{path}.target.folder"),
                        "must not be empty (leave it out for the default Contacts folder)",
                    );
                }
                if let Some(categories) = &options.categories
                    && categories.iter().any(|category| category.trim().is_empty())
                {
                    issues.add(
                        format!("{path}.target.categories"),
                        "categories must not be empty strings",
                    );
                }
                if !(1..=MAX_MAILBOXES_PER_SHARD).contains(&options.mailboxes_per_shard) {
                    issues.add(
                        format!("{path}.target.mailboxes_per_shard"),
                        format!(
                            "must be between 1 and {MAX_MAILBOXES_PER_SHARD}; got {}",
                            options.mailboxes_per_shard
                        ),
                    );
                }
            }
        }
        if max_delete_percent > 100 {
            issues.add(
                format!("{path}.safety.max_delete_percent"),
                format!("must be a percentage between 0 and 100; got {max_delete_percent}"),
            );
        }
        let mut seen = BTreeSet::new();
        for (index, entry) in overrides.iter().enumerate() {
            let entry_path = format!("{path}.overrides[{index}]");
            if !seen.insert(&entry.source_id) {
                issues.add(
                    format!("{entry_path}.source_id"),
                    format!("{} has more than one override", entry.source_id),
                );
            }
            match (entry.exclude, &entry.mapping) {
                (true, Some(_)) => issues.add(
                    &entry_path,
                    "set either exclude = true or mapping, not both",
                ),
                (false, None) => {
                    issues.add(&entry_path, "does nothing: set exclude = true or a mapping")
                }
                _ => {}
            }
        }
    }

    fn check_mesh(
        &self,
        issues: &mut Issues,
        path: &str,
        mesh: &MeshConfig,
        link_names: &mut BTreeMap<String, String>,
    ) {
        check_cadence(
            issues,
            path,
            mesh.interval.is_some(),
            mesh.schedule.is_some(),
        );
        if mesh.source.tenant.is_some() {
            issues.add(
                format!("{path}.source.tenant"),
                "a mesh reads from each of its tenants; remove this key",
            );
        }
        if mesh.target.tenant().is_some() {
            issues.add(
                format!("{path}.target.tenant"),
                "a mesh writes into each of its tenants; remove this key",
            );
        }
        if mesh.tenants.len() < 2 {
            issues.add(
                format!("{path}.tenants"),
                format!(
                    "a mesh needs at least two tenants; it has {}",
                    mesh.tenants.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        let mut all_known = true;
        for (index, tenant) in mesh.tenants.iter().enumerate() {
            let tenant_path = format!("{path}.tenants[{index}]");
            if !seen.insert(tenant) {
                issues.add(&tenant_path, format!("{tenant:?} is listed twice"));
            }
            all_known &= self
                .check_tenant_ref(issues, &tenant_path, Some(tenant))
                .is_some();
        }
        self.check_link_body(
            issues,
            path,
            &mesh.source,
            &mesh.target,
            mesh.safety.max_delete_percent,
            &mesh.overrides,
        );
        for (key, reason) in super::mailbox_source::check(&mesh.source, &mesh.target, None, true) {
            issues.add(format!("{path}.{key}"), reason);
        }
        if !all_known || !is_valid_name(&mesh.name) {
            return;
        }
        let mut pairs_seen = BTreeSet::new();
        for (from, to) in mesh_pairs(&mesh.tenants) {
            let name = mesh_link_name(&mesh.name, from, to);
            if !pairs_seen.insert(name.clone()) {
                continue; // a tenant listed twice, already reported
            }
            if let Some(first) = link_names.insert(name.clone(), path.to_owned()) {
                issues.add(
                    format!("{path}.name"),
                    format!("expands to link {name:?}, which {first} already defines"),
                );
            }
        }
    }
}

fn check_cadence(issues: &mut Issues, path: &str, has_interval: bool, has_schedule: bool) {
    if has_interval && has_schedule {
        issues.add(
            format!("{path}.schedule"),
            "set either interval or schedule, not both",
        );
    }
}

fn check_filter(issues: &mut Issues, path: &str, rule: &FilterRule) {
    if !SOURCE_ATTRIBUTES.contains(&rule.attribute.as_str()) {
        issues.add(
            format!("{path}.attribute"),
            format!(
                "unknown source attribute {:?}{}",
                rule.attribute,
                suggestion_suffix(&rule.attribute, SOURCE_ATTRIBUTES.iter().copied())
            ),
        );
    }
    let tests = [
        rule.equals.is_some(),
        rule.starts_with.is_some(),
        rule.matches.is_some(),
    ];
    if tests.iter().filter(|set| **set).count() != 1 {
        issues.add(path, "set exactly one of equals, starts_with, matches");
    }
}

/// `group_filters`: group attributes only, one test each, and only with `include_groups`.
fn check_group_filters(issues: &mut Issues, path: &str, source: &SourceConfig) {
    if !source.group_filters.is_empty() && !source.include_groups {
        issues.add(
            format!("{path}.source.group_filters"),
            "filters groups, but groups are not read: set include_groups = true or remove group_filters",
        );
    }
    for (index, rule) in source.group_filters.iter().enumerate() {
        let rule_path = format!("{path}.source.group_filters[{index}]");
        if !GROUP_FILTER_ATTRIBUTES.contains(&rule.attribute.as_str()) {
            issues.add(
                format!("{rule_path}.attribute"),
                format!(
                    "{:?} is not a group attribute galbridge reads: use one of {}{}",
                    rule.attribute,
                    GROUP_FILTER_ATTRIBUTES.join(", "),
                    suggestion_suffix(&rule.attribute, GROUP_FILTER_ATTRIBUTES.iter().copied())
                ),
            );
        }
        let tests = [
            rule.equals.is_some(),
            rule.starts_with.is_some(),
            rule.matches.is_some(),
        ];
        if tests.iter().filter(|set| **set).count() != 1 {
            issues.add(
                &rule_path,
                "set exactly one of equals, starts_with, matches",
            );
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
