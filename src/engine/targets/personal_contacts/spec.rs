//! A `personal_contacts` link as the phones runner runs it: the common parts of a link (scope, mapping, overrides,
//! safety, schedule) built like a mail-contact link's, plus the target options.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{self, Cadence, Mailboxes, ResolvedLink, ServiceSettings, TargetOptions};
use crate::engine::entry::Field;
use crate::engine::from_config::{SpecError, object_overrides, scope_rules};
use crate::engine::mapping::Mapping;
use crate::engine::safety::SafetyLimits;
use crate::engine::scope::ScopeRules;
use crate::engine::spec::ObjectOverride;

/// What happens to a contact whose person left the source scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPersonGone {
    Delete,
    Keep,
}

/// The target options, resolved.
#[derive(Debug, Clone)]
pub struct PhonesTarget {
    pub mailboxes: Mailboxes,
    /// Lowercase UPNs or addresses.
    pub exclude_mailboxes: BTreeSet<String>,
    /// `None`: the default Contacts folder.
    pub folder: Option<String>,
    pub categories: Vec<String>,
    pub photos: bool,
    /// `true`: a mailbox leaving the selection has its managed contacts removed.
    pub remove_on_leave: bool,
    pub on_delete: OnPersonGone,
    pub adopt_existing: bool,
    /// Fields written only when the contact's value is blank.
    pub fill_blank: BTreeSet<Field>,
}

/// One `personal_contacts` link, ready to run.
#[derive(Debug, Clone)]
pub struct PhonesSpec {
    pub name: String,
    pub source_tenant: String,
    pub target_tenant: String,
    pub scope: ScopeRules,
    pub mapping: Mapping,
    pub overrides: BTreeMap<String, ObjectOverride>,
    pub target: PhonesTarget,
    pub safety: SafetyLimits,
    pub interval: chrono::Duration,
    pub full_reconcile_every: chrono::Duration,
    /// Mailboxes written at the same time (`service.mailboxes_in_flight`; each holds at most one `$batch` in flight).
    pub max_concurrency: usize,
}

/// The phones view of a resolved link; `None` when the link is not a `personal_contacts` link.
pub fn phones_spec(
    link: &ResolvedLink,
    service: &ServiceSettings,
) -> Option<Result<PhonesSpec, SpecError>> {
    let TargetOptions::PersonalContacts(options) = &link.target else {
        return None;
    };
    Some(Ok(build(link, service, options)))
}

fn build(
    link: &ResolvedLink,
    service: &ServiceSettings,
    options: &config::PersonalContactsOptions,
) -> PhonesSpec {
    let interval = match &link.cadence {
        Cadence::Every(every) => every.as_chrono(),
        Cadence::Cron(_) => service.default_interval.as_chrono(),
    };
    let fill_blank = options
        .field_policy
        .iter()
        .filter(|(_, policy)| **policy == config::FieldPolicy::FillBlank)
        .filter_map(|(field, _)| Field::parse(field.as_str()))
        .collect();
    PhonesSpec {
        name: link.name.clone(),
        source_tenant: link.source_tenant.name.clone(),
        target_tenant: link.target_tenant.name.clone(),
        scope: scope_rules(&link.scope),
        mapping: link.mapping.clone(),
        overrides: object_overrides(link),
        target: PhonesTarget {
            mailboxes: options.mailboxes.clone(),
            exclude_mailboxes: options.exclude_mailboxes.clone(),
            folder: options.folder.clone(),
            categories: options.categories.clone(),
            photos: options.photos,
            remove_on_leave: options.on_mailbox_leave == config::OnMailboxLeave::Remove,
            on_delete: match options.on_delete {
                config::OnDelete::Keep => OnPersonGone::Keep,
                config::OnDelete::Delete | config::OnDelete::Hide => OnPersonGone::Delete,
            },
            adopt_existing: options.adopt_existing,
            fill_blank,
        },
        safety: SafetyLimits {
            max_deletes: link.safety.max_deletes,
            max_delete_percent: link.safety.max_delete_percent,
        },
        interval,
        full_reconcile_every: link.full_reconcile_every.as_chrono(),
        max_concurrency: usize::try_from(service.mailboxes_in_flight)
            .unwrap_or(256)
            .max(1),
    }
}
