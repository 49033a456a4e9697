//! What the engine consumes: every link, mesh links included, with defaults filled in and values parsed
//! ([`ResolvedLink`]), and each tenant's endpoints resolved from its cloud and overrides ([`TenantEndpoints`]).
//! Built once from a validated [`ConfigFile`]; the engine never sees meshes, defaults or raw strings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::file::{Cloud, ConfigFile, Tenant};
use super::link::{
    FieldPolicy, FilterRule, HiddenSource, MailboxSelection, MappingConfig, OnDelete,
    OnMailboxLeave, OverrideConfig, SafetyConfig, SourceConfig, TargetConfig,
};
use super::template::{EntryField, Template};
use super::values::{CronSchedule, Duration, Guid, Pattern};

/// A tenant with its name in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTenant {
    /// The key under `[tenants]` (also the value of `{sourceTenant}` in templates).
    pub name: String,
    pub tenant: Tenant,
}

/// The base URLs galbridge calls for one tenant, and the token audiences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantEndpoints {
    /// Login authority base; the token endpoint is `{login}{tenant_id}/oauth2/v2.0/token`.
    pub login: url::Url,
    /// Graph base; requests go to `{graph}v1.0/...`.
    pub graph: url::Url,
    /// Exchange admin base; commands go to `{exchange}adminapi/beta/{tenant}/InvokeCommand`.
    pub exchange: url::Url,
    /// Token audience for Graph (scope `{graph_audience}/.default`). Follows the cloud, not the overrides:
    /// a proxy or test double in front of Graph still receives tokens for the real resource.
    pub graph_audience: &'static str,
    /// Token audience for Exchange (scope `{exchange_audience}/.default`).
    pub exchange_audience: &'static str,
}

impl Cloud {
    /// (login, graph, exchange) base URLs of the cloud (docs/microsoft-facts.md §6).
    fn hosts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Global => (
                "https://login.microsoftonline.com/",
                "https://graph.microsoft.com/",
                "https://outlook.office365.com/",
            ),
            Self::Usgov => (
                "https://login.microsoftonline.us/",
                "https://graph.microsoft.us/",
                "https://outlook.office365.us/",
            ),
            Self::Usgovdod => (
                "https://login.microsoftonline.us/",
                "https://dod-graph.microsoft.us/",
                "https://outlook-dod.office365.us/",
            ),
            // Quirk: the Exchange admin host of 21Vianet is unverified (docs/microsoft-facts.md §1/§6); the
            // ExchangeOnlineManagement module connects to partner.outlook.cn, so that is what we use.
            // Override `endpoints.exchange` if a tenant answers elsewhere.
            Self::China => (
                "https://login.chinacloudapi.cn/",
                "https://microsoftgraph.chinacloudapi.cn/",
                "https://partner.outlook.cn/",
            ),
        }
    }
}

impl Tenant {
    /// The tenant's endpoints: the cloud's, replaced by any explicit `[tenants.X.endpoints]`.
    pub fn endpoints(&self) -> TenantEndpoints {
        let (login, graph, exchange) = self.cloud.hosts();
        let pick = |explicit: &Option<super::values::EndpointUrl>, default: &str| match explicit {
            Some(url) => url.url().clone(),
            None => url::Url::parse(default).expect("cloud base URLs are valid constants"),
        };
        fn audience(base: &'static str) -> &'static str {
            base.trim_end_matches('/')
        }
        TenantEndpoints {
            login: pick(&self.endpoints.login, login),
            graph: pick(&self.endpoints.graph, graph),
            exchange: pick(&self.endpoints.exchange, exchange),
            graph_audience: audience(graph),
            exchange_audience: audience(exchange),
        }
    }

    /// The initial domain (for Exchange's `X-AnchorMailbox`), when known without asking Graph.
    pub fn known_initial_domain(&self) -> Option<&str> {
        match (&self.initial_domain, &self.tenant_id) {
            (Some(domain), _) => Some(domain),
            (None, super::values::TenantId::Domain(domain)) => Some(domain),
            (None, super::values::TenantId::Guid(_)) => None,
        }
    }
}

/// When a link is due.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    /// Due once this long has passed since the last run started.
    Every(Duration),
    /// Due at each occurrence of a cron schedule (UTC).
    Cron(CronSchedule),
}

impl Cadence {
    /// Timer ticks and run starts drift by seconds; a link due within this margin counts as due now, so a 15-minute
    /// link on a 15-minute timer runs every tick rather than every other one.
    const GRACE_SECS: i64 = 60;

    /// When the link is next due, given when its last run started (`None`: never ran, due at once).
    pub fn next_due(
        &self,
        last_run_started: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let Some(last) = last_run_started else {
            return now;
        };
        match self {
            Self::Every(interval) => last + interval.as_chrono(),
            Self::Cron(schedule) => schedule
                .next_after(last)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// Whether a timer tick at `now` should run the link.
    pub fn is_due(&self, last_run_started: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        self.next_due(last_run_started, now) <= now + chrono::Duration::seconds(Self::GRACE_SECS)
    }
}

/// A filter on one source attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeFilter {
    /// Graph attribute name (camelCase), one of [`super::SOURCE_ATTRIBUTES`].
    pub attribute: String,
    pub test: FilterTest,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterTest {
    /// Equal, ignoring case ([`equals_ignoring_case`]).
    Equals(String),
    /// Starts with, ignoring case ([`starts_with_ignoring_case`]).
    StartsWith(String),
    Matches(Pattern),
}

/// Whether two attribute values are equal, ignoring case: the one case-folding rule of attribute filters
/// (`equals`, `starts_with`), for the source scope (`engine::scope`) and the mailbox filter alike.
///
/// Unicode lowercase, not ASCII: it is what the mailbox filter and every `starts_with` already did, an `equals` and a
/// `starts_with` must agree on what "ignoring case" means, and people's attributes are not ASCII (`equals = "équipe"`
/// must take "Équipe"; ASCII folding kept such people out of scope without a word). No test asks for ASCII folding.
pub fn equals_ignoring_case(value: &str, expected: &str) -> bool {
    value.to_lowercase() == expected.to_lowercase()
}

/// Whether an attribute value starts with `prefix`, ignoring case (the rule of [`equals_ignoring_case`]).
pub fn starts_with_ignoring_case(value: &str, prefix: &str) -> bool {
    value.to_lowercase().starts_with(&prefix.to_lowercase())
}

impl AttributeFilter {
    /// Whether an attribute value passes (an absent value passes nothing but a regex that matches "").
    pub fn accepts(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match &self.test {
            FilterTest::Equals(expected) => equals_ignoring_case(value, expected),
            FilterTest::StartsWith(prefix) => starts_with_ignoring_case(value, prefix),
            FilterTest::Matches(pattern) => pattern.is_match(value),
        }
    }

    /// From a validated rule (exactly one test set).
    pub(super) fn from_rule(rule: &FilterRule) -> Option<Self> {
        let test = match (&rule.equals, &rule.starts_with, &rule.matches) {
            (Some(text), None, None) => FilterTest::Equals(text.clone()),
            (None, Some(text), None) => FilterTest::StartsWith(text.clone()),
            (None, None, Some(pattern)) => FilterTest::Matches(pattern.clone()),
            _ => return None,
        };
        Some(Self {
            attribute: rule.attribute.clone(),
            test,
        })
    }
}

/// Who a link reads from its source tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceScope {
    pub include_disabled: bool,
    pub include_guests: bool,
    pub include_org_contacts: bool,
    /// Who counts as hidden (`hidden`, or the deprecated `include_hidden = true` = `include`).
    pub hidden: HiddenSource,
    /// Lowercase, without `@`; empty = every domain.
    pub include_domains: BTreeSet<String>,
    /// Lowercase, without `@`.
    pub exclude_domains: BTreeSet<String>,
    /// Transitive members of these groups only; empty = everyone.
    pub groups: Vec<Guid>,
    pub exclude_ids: BTreeSet<Guid>,
    /// All must accept.
    pub filters: Vec<AttributeFilter>,
    /// Mail-enabled groups are read too.
    pub include_groups: bool,
    /// All must accept a group.
    pub group_filters: Vec<AttributeFilter>,
    /// `kind = "mailbox_folder"`: the mailbox folder read instead of the directory.
    pub mailbox_folder: Option<super::MailboxFolderSource>,
}

impl SourceScope {
    /// Whether an email address passes the domain lists (an address without a domain passes only when no
    /// include list is set).
    pub fn accepts_email(&self, email: &str) -> bool {
        let domain = email
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_lowercase());
        match domain {
            Some(domain) => {
                !self.exclude_domains.contains(&domain)
                    && (self.include_domains.is_empty() || self.include_domains.contains(&domain))
            }
            None => self.include_domains.is_empty(),
        }
    }

    fn from_config(source: &SourceConfig) -> Self {
        let domains = |list: &[String]| {
            list.iter()
                .map(|domain| domain.trim_start_matches('@').to_lowercase())
                .collect()
        };
        Self {
            include_disabled: source.include_disabled,
            include_guests: source.include_guests,
            include_org_contacts: source.include_org_contacts,
            // A mailbox folder's contacts are never hidden: nothing to ask Exchange.
            hidden: source.hidden.unwrap_or(
                if source.include_hidden == Some(true) || source.kind.is_mailbox_folder() {
                    HiddenSource::Include
                } else {
                    HiddenSource::Exclude
                },
            ),
            include_domains: domains(&source.include_domains),
            exclude_domains: domains(&source.exclude_domains),
            groups: source.groups.clone(),
            exclude_ids: source.exclude_ids.iter().cloned().collect(),
            filters: source
                .filters
                .iter()
                .filter_map(AttributeFilter::from_rule)
                .collect(),
            include_groups: source.include_groups,
            group_filters: source
                .group_filters
                .iter()
                .filter_map(AttributeFilter::from_rule)
                .collect(),
            mailbox_folder: super::MailboxFolderSource::from_config(source),
        }
    }
}

/// Which mailboxes a personal-contacts link fills.
#[derive(Debug, Clone, PartialEq)]
pub enum Mailboxes {
    All,
    Groups(Vec<Guid>),
    /// UPNs or SMTP addresses, lowercase.
    List(Vec<String>),
    Filter(AttributeFilter),
}

/// Options of a `mail_contact` target.
#[derive(Debug, Clone, PartialEq)]
pub struct MailContactOptions {
    /// N of the `CustomAttributeN` holding the anchor, 1..=15.
    pub anchor_attribute: u8,
    pub on_delete: OnDelete,
    pub adopt_existing: bool,
}

/// Options of a `personal_contacts` target.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonalContactsOptions {
    pub mailboxes: Mailboxes,
    /// Lowercase.
    pub exclude_mailboxes: BTreeSet<String>,
    /// `None`: the default Contacts folder.
    pub folder: Option<String>,
    /// Never empty: defaults to the link's name.
    pub categories: Vec<String>,
    pub photos: bool,
    pub on_mailbox_leave: OnMailboxLeave,
    /// `Delete` or `Keep` (validation refuses `Hide` here).
    pub on_delete: OnDelete,
    pub adopt_existing: bool,
    /// Fields not listed are overwritten.
    pub field_policy: BTreeMap<EntryField, FieldPolicy>,
    /// Mailboxes per shard of a run (validated: 1..=1000).
    pub mailboxes_per_shard: u32,
}

/// What a link writes.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetOptions {
    MailContact(MailContactOptions),
    PersonalContacts(PersonalContactsOptions),
    GuestUser(super::guest::GuestUserOptions),
}

impl TargetOptions {
    /// `mail_contact` or `personal_contacts`, as in the file and the status report.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::MailContact(_) => "mail_contact",
            Self::PersonalContacts(_) => "personal_contacts",
            Self::GuestUser(_) => "guest_user",
        }
    }
}

/// Target field → template, for the fields that are synced (an empty template in the file removes a field). The
/// engine runs this very mapping (`engine::mapping` renders it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapping {
    fields: BTreeMap<EntryField, Template>,
}

impl Mapping {
    /// The built-in mapping (see [`EntryField::default_template`]), parsed once per process.
    pub fn defaults() -> Self {
        static DEFAULTS: LazyLock<Mapping> = LazyLock::new(|| Mapping {
            fields: EntryField::ALL
                .into_iter()
                .filter_map(|field| {
                    let text = field.default_template()?;
                    Some((
                        field,
                        Template::parse(text).expect("default templates are valid constants"),
                    ))
                })
                .collect(),
        });
        DEFAULTS.clone()
    }

    /// This mapping with the fields `config` sets replaced (empty templates remove a field).
    pub fn overlaid(&self, config: &MappingConfig) -> Self {
        let mut fields = self.fields.clone();
        for (field, template) in config.entries() {
            if template.is_empty() {
                fields.remove(&field);
            } else {
                fields.insert(field, template.clone());
            }
        }
        Self { fields }
    }

    pub fn get(&self, field: EntryField) -> Option<&Template> {
        self.fields.get(&field)
    }

    /// Whether the field is synced.
    pub fn syncs(&self, field: EntryField) -> bool {
        self.fields.contains_key(&field)
    }

    /// The synced fields and their templates, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (EntryField, &Template)> {
        self.fields
            .iter()
            .map(|(field, template)| (*field, template))
    }
}

/// An exception for one source object.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectOverride {
    /// Leave it out of the link.
    Exclude,
    /// Use this mapping for it (already the link's mapping with the override's fields on top).
    Mapping(Mapping),
}

/// Deletion thresholds: a run that would delete more than `max_deletes` objects, or more than
/// `max_delete_percent` % of the managed objects, is quarantined. The one statement of the rule: the engine's safety
/// net (`engine::safety`) asks these methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Safety {
    pub max_deletes: u64,
    pub max_delete_percent: u8,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_deletes: 50,
            max_delete_percent: 10,
        }
    }
}

impl Safety {
    /// Whether `deletes` out of `managed` objects trips the threshold.
    pub fn trips(&self, deletes: u64, managed: u64) -> bool {
        self.exceeds_count(deletes) || self.exceeds_share(deletes, managed)
    }

    /// More than `max_deletes`.
    pub fn exceeds_count(&self, deletes: u64) -> bool {
        deletes > self.max_deletes
    }

    /// More than `max_delete_percent` % of `managed` (never when nothing is managed), in integers.
    pub fn exceeds_share(&self, deletes: u64, managed: u64) -> bool {
        managed > 0
            && deletes.saturating_mul(100) > managed.saturating_mul(self.max_delete_percent.into())
    }
}

/// One link, ready to run: everything the engine needs, defaults applied, meshes expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedLink {
    /// Unique; `{mesh}.{from}-to-{to}` for mesh links.
    pub name: String,
    /// The mesh it came from, if any.
    pub mesh: Option<String>,
    pub enabled: bool,
    pub cadence: Cadence,
    pub full_reconcile_every: Duration,
    pub source_tenant: NamedTenant,
    pub target_tenant: NamedTenant,
    pub scope: SourceScope,
    pub target: TargetOptions,
    pub safety: Safety,
    pub mapping: Mapping,
    /// By source object id.
    pub overrides: BTreeMap<Guid, ObjectOverride>,
}

impl ResolvedLink {
    /// The mapping for one source object, or `None` when an override excludes it.
    pub fn mapping_for(&self, source_id: &Guid) -> Option<&Mapping> {
        match self.overrides.get(source_id) {
            Some(ObjectOverride::Exclude) => None,
            Some(ObjectOverride::Mapping(mapping)) => Some(mapping),
            None => Some(&self.mapping),
        }
    }

    /// Whether a source object is in scope by id (explicit excludes and exclude overrides).
    pub fn excludes_id(&self, source_id: &Guid) -> bool {
        self.scope.exclude_ids.contains(source_id)
            || matches!(self.overrides.get(source_id), Some(ObjectOverride::Exclude))
    }
}

/// The common part of a link and a mesh, from which links are built.
pub(super) struct LinkTemplate<'a> {
    pub enabled: bool,
    pub interval: Option<Duration>,
    pub schedule: Option<&'a CronSchedule>,
    pub full_reconcile_every: Option<Duration>,
    pub source: &'a SourceConfig,
    pub target: &'a TargetConfig,
    pub safety: &'a SafetyConfig,
    pub mapping: &'a MappingConfig,
    pub overrides: &'a [OverrideConfig],
}

/// Every link of a validated file, meshes expanded (in file order: links, then each mesh's pairs).
pub(super) fn resolve_links(file: &ConfigFile) -> Vec<ResolvedLink> {
    let mut links = Vec::new();
    for link in &file.links {
        let (Some(source), Some(target)) = (link.source.tenant.as_deref(), link.target.tenant())
        else {
            continue; // refused by validation
        };
        let template = LinkTemplate {
            enabled: link.enabled,
            interval: link.interval,
            schedule: link.schedule.as_ref(),
            full_reconcile_every: link.full_reconcile_every,
            source: &link.source,
            target: &link.target,
            safety: &link.safety,
            mapping: &link.mapping,
            overrides: &link.overrides,
        };
        links.extend(build_link(
            file, &link.name, None, source, target, &template,
        ));
    }
    for mesh in &file.meshes {
        let template = LinkTemplate {
            enabled: mesh.enabled,
            interval: mesh.interval,
            schedule: mesh.schedule.as_ref(),
            full_reconcile_every: mesh.full_reconcile_every,
            source: &mesh.source,
            target: &mesh.target,
            safety: &mesh.safety,
            mapping: &mesh.mapping,
            overrides: &mesh.overrides,
        };
        for (from, to) in mesh_pairs(&mesh.tenants) {
            let name = mesh_link_name(&mesh.name, from, to);
            links.extend(build_link(
                file,
                &name,
                Some(&mesh.name),
                from,
                to,
                &template,
            ));
        }
    }
    links
}

/// Ordered pairs of distinct tenants, in list order.
pub(super) fn mesh_pairs(tenants: &[String]) -> impl Iterator<Item = (&str, &str)> {
    tenants.iter().flat_map(move |from| {
        tenants
            .iter()
            .filter(move |to| *to != from)
            .map(move |to| (from.as_str(), to.as_str()))
    })
}

/// `{mesh}.{from}-to-{to}`.
pub fn mesh_link_name(mesh: &str, from: &str, to: &str) -> String {
    format!("{mesh}.{from}-to-{to}")
}

fn build_link(
    file: &ConfigFile,
    name: &str,
    mesh: Option<&str>,
    source: &str,
    target: &str,
    template: &LinkTemplate<'_>,
) -> Option<ResolvedLink> {
    let named = |name: &str| {
        file.tenants.get(name).map(|tenant| NamedTenant {
            name: name.to_owned(),
            tenant: tenant.clone(),
        })
    };
    let cadence = match (template.schedule, template.interval) {
        (Some(schedule), _) => Cadence::Cron(schedule.clone()),
        (None, Some(interval)) => Cadence::Every(interval),
        (None, None) => Cadence::Every(file.service.default_interval),
    };
    let mapping = Mapping::defaults().overlaid(template.mapping);
    let overrides = template
        .overrides
        .iter()
        .map(|entry| {
            let action = match (&entry.mapping, entry.exclude) {
                (_, true) => ObjectOverride::Exclude,
                (Some(fields), false) => ObjectOverride::Mapping(mapping.overlaid(fields)),
                (None, false) => ObjectOverride::Mapping(mapping.clone()),
            };
            (entry.source_id.clone(), action)
        })
        .collect();
    Some(ResolvedLink {
        name: name.to_owned(),
        mesh: mesh.map(str::to_owned),
        enabled: template.enabled,
        cadence,
        full_reconcile_every: template
            .full_reconcile_every
            .unwrap_or(file.service.full_reconcile_every),
        source_tenant: named(source)?,
        target_tenant: named(target)?,
        scope: SourceScope::from_config(template.source),
        target: resolve_target(template.target, name)?,
        safety: Safety {
            max_deletes: template.safety.max_deletes,
            max_delete_percent: u8::try_from(template.safety.max_delete_percent).ok()?,
        },
        mapping,
        overrides,
    })
}

fn resolve_target(target: &TargetConfig, link_name: &str) -> Option<TargetOptions> {
    Some(match target {
        TargetConfig::GuestUser(options) => TargetOptions::GuestUser(options.resolve()?),
        TargetConfig::MailContact(options) => TargetOptions::MailContact(MailContactOptions {
            anchor_attribute: u8::try_from(options.anchor_attribute).ok()?,
            on_delete: options.on_delete,
            adopt_existing: options.adopt_existing,
        }),
        TargetConfig::PersonalContacts(options) => {
            TargetOptions::PersonalContacts(PersonalContactsOptions {
                mailboxes: match &options.mailboxes {
                    MailboxSelection::All(_) => Mailboxes::All,
                    MailboxSelection::Groups(groups) => Mailboxes::Groups(groups.clone()),
                    MailboxSelection::List(list) => {
                        Mailboxes::List(list.iter().map(|m| m.to_lowercase()).collect())
                    }
                    MailboxSelection::Filter(rule) => {
                        Mailboxes::Filter(AttributeFilter::from_rule(rule)?)
                    }
                },
                exclude_mailboxes: options
                    .exclude_mailboxes
                    .iter()
                    .map(|m| m.to_lowercase())
                    .collect(),
                folder: options.folder.clone(),
                categories: options
                    .categories
                    .clone()
                    .unwrap_or_else(|| vec![link_name.to_owned()]),
                photos: options.photos,
                on_mailbox_leave: options.on_mailbox_leave,
                on_delete: options.on_delete,
                adopt_existing: options.adopt_existing,
                field_policy: options.field_policy.clone(),
                mailboxes_per_shard: options.mailboxes_per_shard,
            })
        }
    })
}
