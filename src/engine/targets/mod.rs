//! One folder per target kind, each running the shared lifecycle (`engine::lifecycle`) and source stage
//! (`engine::source_stage`): `mail_contact` writes Exchange mail contacts into another tenant's GAL;
//! `personal_contacts` writes contacts into mailboxes (GAL to phones). A new target kind is a new folder here.

pub mod mail_contact;
pub mod personal_contacts;
