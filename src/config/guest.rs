//! `kind = "guest_user"`: the file's shape of a guest-user target (B2B users in the target tenant's GAL), its
//! resolved options, and its checks. Kept apart from `link.rs` so the other target kinds' keys stay where they are.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `kind = "guest_user"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestUserTargetConfig {
    /// The target tenant's name from `[tenants]` (links only); must differ from the source tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The guests' `userType`: `Member` (as Entra cross-tenant sync makes them) or `Guest`.
    #[serde(default)]
    pub user_type: GuestUserType,
    /// Show each guest in the GAL (Exchange `Set-MailUser -HiddenFromAddressListsEnabled:$false`) once Exchange
    /// knows it; a guest starts hidden.
    #[serde(default = "yes")]
    pub show_in_gal: bool,
    /// Which `onPremisesExtensionAttributes.extensionAttributeN` (1–15) of each guest holds galbridge's anchor.
    /// Guests without the anchor are never touched.
    #[serde(default = "default_anchor_attribute")]
    pub anchor_attribute: i64,
    /// What happens to a guest whose person left the source scope.
    #[serde(default)]
    pub on_delete: GuestOnDelete,
    /// Take over an unanchored guest that has the same address (writes the anchor on it).
    #[serde(default)]
    pub adopt_existing: bool,
    /// Remove galbridge's own mail contact of a person (anchored in `CustomAttribute{anchor_attribute}`) before
    /// inviting that person, so a link moves from `mail_contact` to `guest_user` without duplicates in the GAL.
    #[serde(default)]
    pub migrate_from_mail_contact: bool,
    /// Where a guest lands after redeeming (the invitation's `inviteRedirectUrl`; no invitation mail is sent).
    #[serde(default = "default_redirect_url")]
    pub redirect_url: String,
}

fn yes() -> bool {
    true
}

fn default_anchor_attribute() -> i64 {
    15
}

fn default_redirect_url() -> String {
    "https://myapps.microsoft.com".into()
}

/// A guest's `userType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum GuestUserType {
    #[default]
    Member,
    Guest,
}

impl GuestUserType {
    /// As Graph spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestUserType::Member => "Member",
            GuestUserType::Guest => "Guest",
        }
    }
}

/// What happens to a guest whose person left the source scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuestOnDelete {
    /// Block sign-in (`accountEnabled = false`) and hide it from the GAL; undone if the person comes back.
    #[default]
    BlockSignIn,
    /// Delete it (Entra keeps it restorable for 30 days).
    Delete,
    /// Leave it as it is, and stop managing it.
    Keep,
}

/// Options of a `guest_user` target, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestUserOptions {
    /// N of `extensionAttributeN` holding the anchor, 1..=15.
    pub anchor_attribute: u8,
    pub user_type: GuestUserType,
    pub show_in_gal: bool,
    pub on_delete: GuestOnDelete,
    pub adopt_existing: bool,
    pub migrate_from_mail_contact: bool,
    pub redirect_url: String,
}

impl GuestUserTargetConfig {
    /// The resolved options (`None` when validation would refuse them).
    pub fn resolve(&self) -> Option<GuestUserOptions> {
        Some(GuestUserOptions {
            anchor_attribute: u8::try_from(self.anchor_attribute)
                .ok()
                .filter(|n| (1..=15).contains(n))?,
            user_type: self.user_type,
            show_in_gal: self.show_in_gal,
            on_delete: self.on_delete,
            adopt_existing: self.adopt_existing,
            migrate_from_mail_contact: self.migrate_from_mail_contact,
            redirect_url: self.redirect_url.clone(),
        })
    }

    /// Problems with these options, as (key under `target.`, reason).
    pub fn issues(&self) -> Vec<(&'static str, String)> {
        let mut issues = Vec::new();
        if !(1..=15).contains(&self.anchor_attribute) {
            issues.push((
                "anchor_attribute",
                format!(
                    "must be between 1 and 15 (onPremisesExtensionAttributes.extensionAttribute1..15); got {}",
                    self.anchor_attribute
                ),
            ));
        }
        match url::Url::parse(&self.redirect_url) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
            _ => issues.push((
                "redirect_url",
                format!("must be an https URL; got {:?}", self.redirect_url),
            )),
        }
        issues
    }
}
