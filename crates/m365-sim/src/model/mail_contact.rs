//! An Exchange mail contact (a GAL entry pointing outside the tenant), with the contact attributes `Set-Contact`
//! writes. Rendered as Exchange sees it (Get-MailContact / Get-Contact) and as Graph's read-only `orgContact`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MailContact {
    /// ExternalDirectoryObjectId: the same GUID Graph uses as the orgContact id.
    pub external_directory_object_id: String,
    pub guid: String,
    pub name: String,
    pub alias: String,
    pub display_name: String,
    /// `SMTP:addr` form, as Exchange stores it.
    pub external_email_address: String,
    pub email_addresses: Vec<String>,
    pub first_name: String,
    pub last_name: String,
    pub initials: String,
    pub custom_attributes: [String; 15],
    pub hidden_from_address_lists_enabled: bool,
    pub title: String,
    pub department: String,
    pub company: String,
    pub office: String,
    pub phone: String,
    pub mobile_phone: String,
    pub home_phone: String,
    pub fax: String,
    pub street_address: String,
    pub city: String,
    pub state_or_province: String,
    pub postal_code: String,
    pub country_or_region: String,
    pub notes: String,
    pub web_page: String,
    pub manager: String,
    pub when_created_utc: String,
    pub when_changed_utc: String,
    /// True when the contact was made by someone other than galbridge (ownership tests).
    pub user_made: bool,
}

/// Strips Exchange's `SMTP:` prefix.
pub(crate) fn bare_address(addr: &str) -> &str {
    addr.split_once(':')
        .filter(|(p, _)| p.eq_ignore_ascii_case("smtp"))
        .map_or(addr, |(_, a)| a)
}

impl MailContact {
    pub(crate) fn primary_smtp(&self) -> &str {
        bare_address(&self.external_email_address)
    }

    pub(crate) fn distinguished_name(&self, tenant_domain: &str) -> String {
        format!(
            "CN={},OU={},OU=Microsoft Exchange Hosted Organizations,DC=EURPR01A001,DC=prod,DC=outlook,DC=com",
            self.name, tenant_domain
        )
    }

    /// Get-MailContact's object (serialization level "Partial" subset plus every custom attribute).
    pub(crate) fn render_mail_contact(&self, tenant_domain: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Identity".into(), json!(self.name));
        m.insert("Id".into(), json!(self.name));
        m.insert("Name".into(), json!(self.name));
        m.insert("Alias".into(), json!(self.alias));
        m.insert("DisplayName".into(), json!(self.display_name));
        m.insert(
            "ExternalEmailAddress".into(),
            json!(self.external_email_address),
        );
        m.insert("PrimarySmtpAddress".into(), json!(self.primary_smtp()));
        m.insert("EmailAddresses".into(), json!(self.email_addresses));
        m.insert(
            "ExternalDirectoryObjectId".into(),
            json!(self.external_directory_object_id),
        );
        m.insert("Guid".into(), json!(self.guid));
        m.insert(
            "DistinguishedName".into(),
            json!(self.distinguished_name(tenant_domain)),
        );
        m.insert(
            "HiddenFromAddressListsEnabled".into(),
            json!(self.hidden_from_address_lists_enabled),
        );
        m.insert("RecipientType".into(), json!("MailContact"));
        m.insert("RecipientTypeDetails".into(), json!("MailContact"));
        m.insert("OrganizationalUnit".into(), json!(tenant_domain));
        for (i, v) in self.custom_attributes.iter().enumerate() {
            m.insert(format!("CustomAttribute{}", i + 1), json!(v));
        }
        m.insert("WhenCreatedUTC".into(), json!(self.when_created_utc));
        m.insert("WhenChangedUTC".into(), json!(self.when_changed_utc));
        m
    }

    /// Get-Contact's object: the person attributes.
    pub(crate) fn render_contact(&self, tenant_domain: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Identity".into(), json!(self.name));
        m.insert("Name".into(), json!(self.name));
        m.insert("DisplayName".into(), json!(self.display_name));
        m.insert("FirstName".into(), json!(self.first_name));
        m.insert("LastName".into(), json!(self.last_name));
        m.insert("Initials".into(), json!(self.initials));
        m.insert("Title".into(), json!(self.title));
        m.insert("Department".into(), json!(self.department));
        m.insert("Company".into(), json!(self.company));
        m.insert("Office".into(), json!(self.office));
        m.insert("Phone".into(), json!(self.phone));
        m.insert("MobilePhone".into(), json!(self.mobile_phone));
        m.insert("HomePhone".into(), json!(self.home_phone));
        m.insert("Fax".into(), json!(self.fax));
        m.insert("StreetAddress".into(), json!(self.street_address));
        m.insert("City".into(), json!(self.city));
        m.insert("StateOrProvince".into(), json!(self.state_or_province));
        m.insert("PostalCode".into(), json!(self.postal_code));
        m.insert("CountryOrRegion".into(), json!(self.country_or_region));
        m.insert("Notes".into(), json!(self.notes));
        m.insert("WebPage".into(), json!(self.web_page));
        m.insert("Manager".into(), json!(self.manager));
        m.insert(
            "ExternalDirectoryObjectId".into(),
            json!(self.external_directory_object_id),
        );
        m.insert(
            "DistinguishedName".into(),
            json!(self.distinguished_name(tenant_domain)),
        );
        m.insert("RecipientType".into(), json!("MailContact"));
        m
    }

    /// Both views merged: what the control API and OPATH filters see.
    pub(crate) fn render_all(&self, tenant_domain: &str) -> Map<String, Value> {
        let mut m = self.render_mail_contact(tenant_domain);
        m.extend(self.render_contact(tenant_domain));
        m.insert("UserMade".into(), json!(self.user_made));
        m
    }

    /// Graph's orgContact view of the same object (read-only in Graph).
    pub(crate) fn render_org_contact(&self) -> Map<String, Value> {
        let nz = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
        let mut phones = Vec::new();
        for (kind, number) in [
            ("business", &self.phone),
            ("mobile", &self.mobile_phone),
            ("home", &self.home_phone),
            ("businessFax", &self.fax),
        ] {
            if !number.is_empty() {
                phones.push(json!({"type": kind, "number": number}));
            }
        }
        let mut m = Map::new();
        m.insert("id".into(), json!(self.external_directory_object_id));
        m.insert("displayName".into(), json!(self.display_name));
        m.insert("givenName".into(), nz(&self.first_name));
        m.insert("surname".into(), nz(&self.last_name));
        m.insert("mail".into(), json!(self.primary_smtp()));
        m.insert("mailNickname".into(), json!(self.alias));
        m.insert("proxyAddresses".into(), json!(self.email_addresses));
        m.insert("jobTitle".into(), nz(&self.title));
        m.insert("department".into(), nz(&self.department));
        m.insert("companyName".into(), nz(&self.company));
        m.insert(
            "addresses".into(),
            json!([{
                "city": nz(&self.city), "countryOrRegion": nz(&self.country_or_region), "officeLocation": nz(&self.office),
                "postalCode": nz(&self.postal_code), "state": nz(&self.state_or_province), "street": nz(&self.street_address)
            }]),
        );
        m.insert("phones".into(), json!(phones));
        m.insert("onPremisesSyncEnabled".into(), Value::Null);
        m
    }
}
