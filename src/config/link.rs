//! The shape of `[[links]]` and `[[meshes]]` in `galbridge.toml`: source scope, target kind and options, safety
//! thresholds, field mapping and per-object overrides. A mesh carries the same sections without tenants (its
//! `tenants` list supplies them). Cross-checks live in [`super::validate`]; the engine reads
//! [`super::ResolvedLink`], never these.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::template::{EntryField, Template};
use super::values::{CronSchedule, Duration, Guid, Pattern};

/// `[[links]]`: one direction, from a source scope in one tenant to a target in a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Unique name, `[a-z0-9][a-z0-9-_.]*`; used in `POST /api/sync/{name}` and `galbridge sync --link NAME`.
    pub name: String,
    /// A disabled link is validated but never run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often the link is due (default: `service.default_interval`). Exclusive with `schedule`.
    #[serde(default)]
    pub interval: Option<Duration>,
    /// A 6-field cron schedule in UTC (`"0 0 2 * * *"` = 02:00 daily) at which the link is due. Exclusive with
    /// `interval`. The timer trigger runs due links, so the effective time is rounded up to its next tick.
    #[serde(default)]
    pub schedule: Option<CronSchedule>,
    /// How often this link does a full reconcile (default: `service.full_reconcile_every`).
    #[serde(default)]
    pub full_reconcile_every: Option<Duration>,
    /// Who is read from the source tenant.
    pub source: SourceConfig,
    /// Where and how they are written.
    pub target: TargetConfig,
    /// Deletion thresholds that quarantine the link instead of deleting.
    #[serde(default)]
    pub safety: SafetyConfig,
    /// Target field → template over source attributes; unmapped fields use the defaults, "" stops syncing a field.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Per-object exceptions: exclude one person, or change one person's fields.
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

/// `[[meshes]]`: tenants that all sync with each other; expands to a link `{mesh}.{from}-to-{to}` per ordered pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Unique name, `[a-z0-9][a-z0-9-_.]*`; prefixes the names of the links it expands to.
    pub name: String,
    /// The tenants (names from `[tenants]`), at least two.
    pub tenants: Vec<String>,
    /// A disabled mesh is validated but none of its links run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often each link of the mesh is due (default: `service.default_interval`). Exclusive with `schedule`.
    #[serde(default)]
    pub interval: Option<Duration>,
    /// A 6-field cron schedule in UTC at which each link of the mesh is due. Exclusive with `interval`.
    #[serde(default)]
    pub schedule: Option<CronSchedule>,
    /// How often each link does a full reconcile (default: `service.full_reconcile_every`).
    #[serde(default)]
    pub full_reconcile_every: Option<Duration>,
    /// Who is read from each tenant (without `tenant`: each tenant of the mesh in turn). Only each tenant's own
    /// members flow out: contacts galbridge wrote are never read back.
    #[serde(default)]
    pub source: SourceConfig,
    /// How each tenant's people are written into every other tenant (without `tenant`).
    pub target: TargetConfig,
    /// Deletion thresholds, applied to each link of the mesh.
    #[serde(default)]
    pub safety: SafetyConfig,
    /// Field mapping for every link of the mesh.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Per-object exceptions, applied to every link of the mesh.
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

fn yes() -> bool {
    true
}

/// `[links.source]`: who is read from the source tenant. Every `include_*` defaults to false.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// The source tenant's name from `[tenants]` (links only; a mesh's sources are its tenants).
    pub tenant: Option<String>,
    /// What is read: `directory` (default: the tenant's people) or `mailbox_folder` (the contacts of one folder of
    /// one mailbox of the tenant, e.g. an export mailbox another organisation fills with its address book).
    pub kind: super::mailbox_source::SourceKindConfig,
    /// `kind = "mailbox_folder"`: the mailbox (UPN) whose folder is read.
    pub mailbox: Option<String>,
    /// `kind = "mailbox_folder"`: the contact folder, a path with `/` between levels ("ACME GAL").
    pub folder: Option<String>,
    /// `kind = "mailbox_folder"`: also read the folder's subfolders, at every level.
    pub include_subfolders: bool,
    /// `kind = "mailbox_folder"`: `app` (default: the tenant's app with Contacts.Read, limited to the mailbox by
    /// RBAC for Applications) or `delegated` (the mailbox's user, signed in once with `galbridge login`).
    pub sign_in: Option<super::mailbox_source::MailboxSignIn>,
    /// Also read users whose account is disabled.
    pub include_disabled: bool,
    /// Also read guest users (`userType = Guest`).
    pub include_guests: bool,
    /// Also read the source tenant's own organisational contacts (never those galbridge wrote).
    pub include_org_contacts: bool,
    /// Who is hidden from the address lists, and whether they are synced: `exclude` (default: hidden in the source
    /// tenant's Exchange means out; needs Exchange.ManageAsApp and the View-Only Recipients role there),
    /// `include`, or `graph` (Graph's unreliable showInAddressList decides; a warning in every run report).
    pub hidden: Option<HiddenSource>,
    /// Deprecated: `include_hidden = true` is `hidden = "include"`; `false` is the default (`hidden = "exclude"`).
    pub include_hidden: Option<bool>,
    /// Only people whose email is in one of these domains; empty = every domain.
    pub include_domains: Vec<String>,
    /// Never people whose email is in one of these domains.
    pub exclude_domains: Vec<String>,
    /// Only transitive members of these groups (object ids); empty = everyone.
    pub groups: Vec<Guid>,
    /// Never these objects (object ids).
    pub exclude_ids: Vec<Guid>,
    /// Attribute filters; a person is read only if all of them match.
    pub filters: Vec<FilterRule>,
    /// Also read the source tenant's mail-enabled groups (distribution lists, Microsoft 365 groups, mail-enabled
    /// security groups): each becomes a contact with the group's address and display name. Scoped by
    /// `group_filters`, `exclude_ids`, the domain lists and `hidden`; never by `groups`, `filters` or the people
    /// options.
    pub include_groups: bool,
    /// Attribute filters on groups (`displayName`, `mail` or `groupTypes`); a group is read only if all of them
    /// match. Needs `include_groups = true`.
    pub group_filters: Vec<FilterRule>,
}

/// The group attributes `group_filters` may test, as Graph spells them.
pub const GROUP_FILTER_ATTRIBUTES: &[&str] = &["displayName", "mail", "groupTypes"];

/// An attribute filter: `attribute` and exactly one of `equals`, `starts_with`, `matches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// A source attribute, as Graph names it (camelCase, as in templates), e.g. "department".
    pub attribute: String,
    /// The value equals this text (case-insensitive).
    #[serde(default)]
    pub equals: Option<String>,
    /// The value starts with this text (case-insensitive).
    #[serde(default)]
    pub starts_with: Option<String>,
    /// The value matches this regular expression.
    #[serde(default)]
    pub matches: Option<Pattern>,
}

/// `[links.target]`: what galbridge writes, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetConfig {
    /// Exchange mail contacts in the target tenant's Global Address List.
    MailContact(MailContactTargetConfig),
    /// Personal contacts in chosen mailboxes (they reach phones through Outlook mobile and ActiveSync).
    PersonalContacts(PersonalContactsTargetConfig),
    /// B2B guest users in the target tenant, shown in its Global Address List.
    GuestUser(super::guest::GuestUserTargetConfig),
}

impl TargetConfig {
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::MailContact(target) => target.tenant.as_deref(),
            Self::PersonalContacts(target) => target.tenant.as_deref(),
            Self::GuestUser(target) => target.tenant.as_deref(),
        }
    }
}

/// `kind = "mail_contact"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailContactTargetConfig {
    /// The target tenant's name from `[tenants]` (links only); must differ from the source tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Which CustomAttributeN (1–15) of each mail contact holds galbridge's anchor. Contacts without the anchor
    /// are never touched.
    #[serde(default = "default_anchor_attribute")]
    pub anchor_attribute: i64,
    /// What happens to a contact whose person left the source scope.
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Take over an unanchored contact that has the same external address (writes the anchor on it).
    #[serde(default)]
    pub adopt_existing: bool,
}

fn default_anchor_attribute() -> i64 {
    15
}

/// `kind = "personal_contacts"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonalContactsTargetConfig {
    /// The tenant whose mailboxes receive the contacts (may be the source tenant itself).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Which mailboxes receive the contacts.
    pub mailboxes: MailboxSelection,
    /// Mailboxes (UPNs) that never receive them.
    #[serde(default)]
    pub exclude_mailboxes: Vec<String>,
    /// The contact folder galbridge fills (created if missing); absent = the default Contacts folder.
    #[serde(default)]
    pub folder: Option<String>,
    /// Categories set on every contact (default: the link's name).
    #[serde(default)]
    pub categories: Option<Vec<String>>,
    /// Also copy each person's photo onto the contact.
    #[serde(default)]
    pub photos: bool,
    /// What happens to the contacts of a mailbox that leaves the selection.
    #[serde(default)]
    pub on_mailbox_leave: OnMailboxLeave,
    /// What happens to a contact whose person left the source scope (`delete` or `keep`).
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Take over an unanchored contact in the folder that has the same email address.
    #[serde(default)]
    pub adopt_existing: bool,
    /// Per field: `overwrite` (default) or `fill_blank` (only write when the mailbox owner left it empty).
    #[serde(default)]
    pub field_policy: BTreeMap<EntryField, FieldPolicy>,
    /// How many mailboxes one shard of a run holds (1..=1000). A run's mailboxes are split into shards of this size;
    /// with a shard queue configured each shard is one queue message processed by `PhonesShard` on any instance,
    /// otherwise the shards run in the process that runs the link.
    #[serde(default = "default_mailboxes_per_shard")]
    pub mailboxes_per_shard: u32,
}

/// Mailboxes per shard when `mailboxes_per_shard` is not set.
pub const DEFAULT_MAILBOXES_PER_SHARD: u32 = 200;

fn default_mailboxes_per_shard() -> u32 {
    DEFAULT_MAILBOXES_PER_SHARD
}

/// Which mailboxes receive personal contacts: exactly one of `all`, `groups`, `list`, `filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailboxSelection {
    /// `{ all = true }`: every user mailbox of the tenant.
    All(bool),
    /// `{ groups = ["id"] }`: mailboxes of the transitive members of these groups.
    Groups(Vec<Guid>),
    /// `{ list = ["upn"] }`: these mailboxes (UPNs or SMTP addresses).
    List(Vec<String>),
    /// `{ filter = { attribute = "department", equals = "Sales" } }`: users whose attribute matches.
    Filter(FilterRule),
}

/// Who counts as hidden from the address lists (`[links.source] hidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HiddenSource {
    /// People hidden from the address lists in the source tenant's Exchange (`HiddenFromAddressListsEnabled`) are
    /// not synced; becoming hidden is leaving (per `on_delete`). Needs Exchange.ManageAsApp and the View-Only
    /// Recipients role in the source tenant (docs/app-registrations.md).
    #[default]
    Exclude,
    /// Hidden people are synced like everyone else.
    Include,
    /// Graph's `showInAddressList = false` decides. Unreliable (Exchange does not keep it in step; usually null for
    /// cloud mailboxes): accepted explicitly, with a warning in every run report.
    Graph,
}

/// What happens to a managed object whose person left the source scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// Delete it.
    #[default]
    Delete,
    /// Keep it but hide it from the address lists (mail contacts only).
    Hide,
    /// Leave it as it is, and stop managing it.
    Keep,
}

/// What happens to the contacts of a mailbox that leaves the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMailboxLeave {
    /// Remove the contacts galbridge put there.
    #[default]
    Remove,
    /// Leave them.
    Keep,
}

/// How a field is written into a personal contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldPolicy {
    /// Always write the source's value.
    #[default]
    Overwrite,
    /// Only write when the contact's field is empty.
    FillBlank,
}

/// `[links.safety]`: a run that would delete more than either threshold is quarantined (nothing deleted until an
/// operator allows it; the rest of the plan still applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// Quarantine when a run would delete more than this many objects.
    pub max_deletes: u64,
    /// Quarantine when a run would delete more than this percentage (0–100) of the managed objects.
    pub max_delete_percent: u64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            max_deletes: 50,
            max_delete_percent: 10,
        }
    }
}

macro_rules! mapping_config {
    ($($(#[$doc:meta])* $field:ident => $variant:ident,)*) => {
        /// `[links.mapping]`: target field → template over source attributes. Unset fields keep the default
        /// mapping; `""` stops syncing a field; a text without placeholders is a constant.
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        pub struct MappingConfig {
            $($(#[$doc])* #[serde(skip_serializing_if = "Option::is_none")] pub $field: Option<Template>,)*
        }

        impl MappingConfig {
            /// The fields this mapping sets, with their templates.
            pub fn entries(&self) -> Vec<(EntryField, &Template)> {
                let mut entries = Vec::new();
                $(if let Some(template) = &self.$field {
                    entries.push((EntryField::$variant, template));
                })*
                entries
            }
        }
    };
}

mapping_config! {
    /// First name (default `{givenName}`).
    given_name => GivenName,
    /// Last name (default `{surname}`).
    surname => Surname,
    /// Display name in the address book (default `{displayName}`).
    display_name => DisplayName,
    /// Primary email address (default `{mail}`).
    email => Email,
    /// Further email addresses (default `{otherMails}`: the whole list).
    other_emails => OtherEmails,
    /// Job title (default `{jobTitle}`).
    job_title => JobTitle,
    /// Department (default `{department}`).
    department => Department,
    /// Company (default `{companyName}`).
    company => Company,
    /// Office (default `{officeLocation}`).
    office => Office,
    /// Business phone (default `{businessPhones}`: the first).
    business_phone => BusinessPhone,
    /// Mobile phone (default `{mobilePhone}`).
    mobile_phone => MobilePhone,
    /// Home phone (not synced by default).
    home_phone => HomePhone,
    /// Fax (default `{faxNumber}`).
    fax => Fax,
    /// Street address (default `{streetAddress}`).
    street_address => StreetAddress,
    /// City (default `{city}`).
    city => City,
    /// State or province (default `{state}`).
    state => State,
    /// Postal code (default `{postalCode}`).
    postal_code => PostalCode,
    /// Country or region (default `{country}`).
    country => Country,
    /// Manager's name (not synced by default).
    manager_name => ManagerName,
    /// Notes (not synced by default).
    notes => Notes,
    /// Initials (not synced by default).
    initials => Initials,
    /// Web page (not synced by default).
    web_page => WebPage,
}

/// `[[links.overrides]]`: an exception for one source object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// The source object's id.
    pub source_id: Guid,
    /// Leave this object out of the link (its managed copy is removed like any departure).
    #[serde(default)]
    pub exclude: bool,
    /// Field templates for this object only, on top of the link's mapping.
    #[serde(default)]
    pub mapping: Option<MappingConfig>,
}
