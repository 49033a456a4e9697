//! The objects the simulator holds: directory users, Exchange mail contacts, groups, mailboxes with contacts.

pub mod group;
pub mod mail_contact;
pub mod mailbox;
pub mod user;

pub(crate) use user::Tracked;

/// A removed object as delta queries report it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tombstone {
    pub(crate) version: u64,
    /// `changed` (soft-deleted, restorable) or `deleted` (gone for good).
    pub(crate) reason: &'static str,
}

/// A group with direct members (users or nested groups): a security group by default; mail-enabled ones (distribution
/// lists, Microsoft 365 groups, mail-enabled security groups) carry an address and are Exchange recipients
/// (`model/group.rs`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub members: Vec<String>,
    pub mail: Option<String>,
    pub mail_enabled: bool,
    pub security_enabled: bool,
    pub mail_nickname: Option<String>,
    /// `["Unified"]` for a Microsoft 365 group, else empty.
    pub group_types: Vec<String>,
    /// Exchange's `HiddenFromAddressListsEnabled` (never shown by Graph).
    pub hidden_from_address_lists: bool,
    pub created_date_time: String,
}
