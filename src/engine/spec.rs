//! A link as the engine runs it ([`LinkSpec`]): everything resolved and compiled (scope, mapping, per-object
//! overrides, safety, schedule, and the options of its target kind in [`TargetSpec`]), so the run never deals with
//! configuration defaults or meshes. The service builds these from the configuration's resolved links
//! (`engine::from_config`).

use std::collections::BTreeMap;

use super::diff::DiffPolicy;
use super::mapping::Mapping;
use super::safety::SafetyLimits;
use super::scope::ScopeRules;
use super::targets::personal_contacts::PhonesTarget;

/// Per-object override (`[[links.overrides]]`).
#[derive(Debug, Clone)]
pub enum ObjectOverride {
    /// Never sync this source object (an existing managed object is removed per `on_delete`).
    Exclude,
    /// Use this mapping for this source object.
    Mapping(Mapping),
}

/// Options of a `mail_contact` target.
#[derive(Debug, Clone)]
pub struct MailContactOptions {
    /// `CustomAttributeN` holding the anchor, 1..=15.
    pub anchor_attribute: u8,
    pub policy: DiffPolicy,
}

/// The link's target kind and its options: one variant per folder of `engine/targets/`.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    MailContact(MailContactOptions),
    PersonalContacts(PhonesTarget),
    GuestUser(crate::config::GuestUserOptions),
}

impl TargetSpec {
    /// The kind's name, as in the configuration and in plans.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetSpec::MailContact(_) => "mail_contact",
            TargetSpec::PersonalContacts(_) => "personal_contacts",
            TargetSpec::GuestUser(_) => "guest_user",
        }
    }
}

/// One link, ready to run, whatever its target kind.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub name: String,
    /// Configuration name of the source tenant (`{sourceTenant}` in templates).
    pub source_tenant: String,
    pub target_tenant: String,
    pub scope: ScopeRules,
    pub mapping: Mapping,
    /// Per source object id (lowercase).
    pub overrides: BTreeMap<String, ObjectOverride>,
    pub target: TargetSpec,
    pub safety: SafetyLimits,
    /// How often the link is due.
    pub interval: chrono::Duration,
    /// How often a full read and drift repair happens.
    pub full_reconcile_every: chrono::Duration,
    /// Concurrent target writes (`service.max_concurrency`; for personal contacts the mailboxes written at once,
    /// `service.mailboxes_in_flight`).
    pub max_concurrency: usize,
}
