//! The options of a `personal_contacts` target ([`PhonesTarget`], in `engine::spec::TargetSpec`), compiled from the
//! resolved configuration.

use std::collections::BTreeSet;

use crate::config::{self, Mailboxes};
use crate::engine::entry::Field;

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
    /// How many mailboxes one shard of a run holds (`mailboxes_per_shard`, at least 1).
    pub mailboxes_per_shard: usize,
}

/// The target options of a `personal_contacts` link, from the resolved configuration.
pub fn phones_target(options: &config::PersonalContactsOptions) -> PhonesTarget {
    let fill_blank = options
        .field_policy
        .iter()
        .filter(|(_, policy)| **policy == config::FieldPolicy::FillBlank)
        .filter_map(|(field, _)| Field::parse(field.as_str()))
        .collect();
    PhonesTarget {
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
        mailboxes_per_shard: usize::try_from(options.mailboxes_per_shard)
            .unwrap_or(usize::MAX)
            .max(1),
    }
}
