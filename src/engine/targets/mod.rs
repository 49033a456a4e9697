//! Appliers of a plan, one per target kind. `mail_contact` writes Exchange mail contacts (issue 4);
//! `personal_contacts` writes mailbox contacts (issue 5, GAL to phones) with its own runner over the same scope,
//! mapping, safety and lease.

pub mod mail_contact;
pub mod personal_contacts;
