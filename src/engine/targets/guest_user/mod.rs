//! Target kind `guest_user`: the link's people as B2B guest users in another tenant, shown in its GAL (what Entra
//! cross-tenant synchronization makes, from galbridge's configuration and with its safety rails).
//! docs/microsoft-facts.md §5: a guest is made by `POST /invitations` (no mail sent), its fields and anchor
//! (`onPremisesExtensionAttributes.extensionAttributeN`) are written by `PATCH /users/{id}`, and it is shown in the
//! GAL only through Exchange (`Set-MailUser`), once Exchange knows it.
//!
//! Rooms:
//! - [`plan`]: from the source batch, the managed records and (on a full run, or when someone is to be invited)
//!   the target's guests and mail contacts, to the shared [`crate::engine::plan::Plan`] (the mail contacts a
//!   migration removes first are among its removals).
//! - [`apply`]: invitations, field updates, removals (block sign-in or delete), the GAL step.
//! - [`run`]: [`GuestUsers`], the [`crate::engine::targets::Target`] the shared lifecycle runs; [`purge`]: uninstalling.

pub mod apply;
pub mod plan;
pub mod purge;
pub mod run;

pub use run::GuestUsers;

use crate::engine::entry::Field;

/// The Graph user property an entry field is written to on a guest; `None` for fields a guest does not carry
/// (the address is the invitation's and cannot be changed by a PATCH).
pub fn graph_property(field: Field) -> Option<&'static str> {
    Some(match field {
        Field::GivenName => "givenName",
        Field::Surname => "surname",
        Field::DisplayName => "displayName",
        Field::JobTitle => "jobTitle",
        Field::Department => "department",
        Field::Company => "companyName",
        Field::Office => "officeLocation",
        Field::BusinessPhone => "businessPhones",
        Field::MobilePhone => "mobilePhone",
        Field::Fax => "faxNumber",
        Field::StreetAddress => "streetAddress",
        Field::City => "city",
        Field::State => "state",
        Field::PostalCode => "postalCode",
        Field::Country => "country",
        _ => return None,
    })
}

/// Whether a guest carries this entry field (the writable ones, and the address it was invited with).
pub fn guest_carries(field: Field) -> bool {
    field == Field::Email || graph_property(field).is_some()
}
