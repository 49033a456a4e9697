//! A link as the engine runs it ([`LinkSpec`]): everything resolved and compiled (scope, mapping, per-object
//! overrides, target policy, safety, schedule), so the runner never deals with configuration defaults or meshes.
//! The service builds these from the configuration's resolved links.

use std::collections::BTreeMap;

use super::diff::DiffPolicy;
use super::mapping::Mapping;
use super::safety::SafetyLimits;
use super::scope::ScopeRules;

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

/// One link, ready to run.
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
    pub target: MailContactOptions,
    pub safety: SafetyLimits,
    /// How often the link is due.
    pub interval: chrono::Duration,
    /// How often a full read and drift repair happens.
    pub full_reconcile_every: chrono::Duration,
    /// Concurrent target writes.
    pub max_concurrency: usize,
}
