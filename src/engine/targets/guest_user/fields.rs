//! Which entry fields a guest carries, and the Graph user property each is written to.

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
