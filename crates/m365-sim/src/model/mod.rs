//! The objects the simulator holds: directory users, Exchange mail contacts, groups, mailboxes with contacts.

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

/// A security group with direct members (users or nested groups).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub members: Vec<String>,
}
