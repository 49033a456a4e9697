//! The narrow interfaces the runner needs from the outside world: the source directory (Graph), the mail-contact
//! target (Exchange), the guest-user target (Graph and Exchange), and request counters. `adapters` implements them over the real clients; tests implement them
//! in memory. Keeping them narrow keeps the runner testable without HTTP.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use super::diff::TargetObject;
use super::entry::{Entry, Field, SourceObject};

/// What a port call can fail with. Only kinds the engine acts on are distinguished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The stored delta link expired (`410 Gone`, `syncStateNotFound`): a full read is needed.
    #[error("the delta token expired: a full read is needed")]
    DeltaExpired,
    /// The address is a proxy address of another recipient.
    #[error("address {address} is already used by {owner}")]
    AddressInUse { address: String, owner: String },
    /// The unique `Name` is used by another recipient.
    #[error("name {name:?} is already used by another recipient")]
    NameInUse { name: String },
    /// The object does not exist (any more).
    #[error("object {id} not found")]
    NotFound { id: String },
    /// Anything else, after the client's own retries.
    #[error("{service}: {message}")]
    Failed { service: String, message: String },
}

impl PortError {
    /// The `Failure::kind` of the run report.
    pub fn failure_kind(&self) -> &'static str {
        match self {
            PortError::DeltaExpired => "delta_expired",
            PortError::AddressInUse { .. } => "conflict_address",
            PortError::NameInUse { .. } => "conflict_name",
            PortError::NotFound { .. } => "not_found",
            PortError::Failed { service, .. } if service == "graph" => "graph_error",
            PortError::Failed { .. } => "exchange_error",
        }
    }
}

/// The result of reading users: the objects (all, or the changes since the delta link) and the next delta link.
#[derive(Debug, Clone, Default)]
pub struct SourceRead {
    pub objects: Vec<SourceObject>,
    pub delta_link: String,
}

/// The source tenant's directory, read through Graph.
#[async_trait]
pub trait SourceDirectory: Send + Sync {
    /// The tenant's directory id (GUID), used in anchors.
    async fn tenant_id(&self) -> Result<String, PortError>;
    /// Reads users: in full when `delta_link` is `None` (following every page), else the changes since it.
    async fn read_users(
        &self,
        delta_link: Option<&str>,
        select: &[String],
    ) -> Result<SourceRead, PortError>;
    /// Reads users like [`SourceDirectory::read_users`], handing each object to `each` as it is read instead of
    /// collecting them (a full read of a large tenant is mapped page by page, never held whole); returns the delta
    /// link. The default collects through `read_users`.
    async fn read_users_each(
        &self,
        delta_link: Option<&str>,
        select: &[String],
        each: &mut (dyn FnMut(SourceObject) + Send),
    ) -> Result<String, PortError> {
        let read = self.read_users(delta_link, select).await?;
        read.objects.into_iter().for_each(&mut *each);
        Ok(read.delta_link)
    }
    /// Reads every org contact of the tenant.
    async fn read_org_contacts(&self) -> Result<Vec<SourceObject>, PortError>;
    /// Transitive member ids of a group (users only).
    async fn group_members(&self, group_id: &str) -> Result<Vec<String>, PortError>;
    /// One user by id (`GET /users/{id}?$select=…`), `None` when it does not exist (any more).
    async fn read_user(
        &self,
        id: &str,
        select: &[String],
    ) -> Result<Option<SourceObject>, PortError>;
    /// Reads the tenant's groups (`groups/delta`, docs/microsoft-facts.md §10): in full when `delta_link` is `None`
    /// (following every page), else the changes since it. Every group comes back as a [`SourceKind::Group`] object,
    /// security groups without mail too: the scope keeps the mail-enabled ones. A source without groups refuses
    /// (the default), so `include_groups` on it fails the run instead of syncing nothing.
    ///
    /// [`SourceKind::Group`]: super::entry::SourceKind::Group
    async fn read_groups(
        &self,
        delta_link: Option<&str>,
        select: &[String],
    ) -> Result<SourceRead, PortError> {
        let _ = (delta_link, select);
        Err(PortError::Failed {
            service: "source".into(),
            message: "this source has no groups: remove include_groups from the link".into(),
        })
    }
    /// One group by id (`GET /groups/{id}?$select=…`), `None` when it does not exist (any more) or the source has
    /// no groups (the default).
    async fn read_group(
        &self,
        id: &str,
        select: &[String],
    ) -> Result<Option<SourceObject>, PortError> {
        let _ = (id, select);
        Ok(None)
    }
    /// Whether this source keeps its objects' photos itself ([`SourceDirectory::photo`]); otherwise photos are the
    /// tenant's user photos, read through its Graph.
    fn keeps_photos(&self) -> bool {
        false
    }
    /// The photo of one object (its id as in the anchor, lowercase), for sources that keep photos.
    async fn photo(&self, _id: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(None)
    }
    /// Entra ids (lowercase) of every recipient hidden from the address lists in the tenant's Exchange
    /// (docs/microsoft-facts.md, "Hidden from address lists": Graph's `showInAddressList` is not the truth),
    /// mail-enabled groups included (docs/microsoft-facts.md §10).
    async fn hidden_ids(&self) -> Result<BTreeSet<String>, PortError>;
    /// Exchange's hidden flag (id lowercase → hidden) of the people and mail-enabled groups whose recipient changed
    /// at or after `changed_since`, and of the objects `ids`; objects without a recipient are absent. One Exchange
    /// request for up to 50 ids (more are batched). Mail contacts are left out: only people (mailboxes, mail users)
    /// and groups are answered.
    async fn hidden_flags(
        &self,
        changed_since: Option<chrono::DateTime<chrono::Utc>>,
        ids: &[String],
    ) -> Result<BTreeMap<String, bool>, PortError>;
}

/// Settings of `Set-MailContact` the engine changes; `None` = leave as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailContactSettings {
    /// `CustomAttributeN` = anchor.
    pub anchor: Option<(u8, String)>,
    pub hidden: Option<bool>,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub external_address: Option<String>,
}

impl MailContactSettings {
    pub fn is_empty(&self) -> bool {
        *self == MailContactSettings::default()
    }
}

/// The target tenant's mail contacts, through Exchange `InvokeCommand`.
#[async_trait]
pub trait MailContactTarget: Send + Sync {
    /// Every mail contact of the tenant, with the anchor read from `CustomAttribute{anchor_attribute}`.
    async fn list_contacts(&self, anchor_attribute: u8) -> Result<Vec<TargetObject>, PortError>;
    /// The mail contact with this external address, if any.
    async fn find_by_address(
        &self,
        address: &str,
        anchor_attribute: u8,
    ) -> Result<Option<TargetObject>, PortError>;
    /// Who holds `address` among every kind of recipient (mailbox, group, guest, contact), as "kind name", if
    /// anyone visible does (`Get-Recipient`).
    async fn recipient_holding(&self, address: &str) -> Result<Option<String>, PortError>;
    /// `New-MailContact` (name, address, display and given names); returns the new contact's id.
    /// Quirk (docs/microsoft-facts.md §1): New-MailContact cannot set `CustomAttributeN`; the anchor follows separately.
    async fn create(&self, name: &str, entry: &Entry) -> Result<String, PortError>;
    /// `Set-MailContact`.
    async fn set_mail_contact(
        &self,
        id: &str,
        settings: &MailContactSettings,
    ) -> Result<(), PortError>;
    /// `Set-Contact` with the given entry fields (`""` clears a field).
    async fn set_contact(
        &self,
        id: &str,
        fields: &BTreeMap<Field, String>,
    ) -> Result<(), PortError>;
    /// `Remove-MailContact`.
    async fn remove(&self, id: &str) -> Result<(), PortError>;
}

/// What a guest-user write changes; `None` / empty = leave as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestPatch {
    /// `onPremisesExtensionAttributes.extensionAttributeN` = anchor.
    pub anchor: Option<(u8, String)>,
    /// Entry fields a guest carries (`""` clears one); see `targets::guest_user::graph_property`.
    pub fields: BTreeMap<Field, String>,
    /// `Member` or `Guest`.
    pub user_type: Option<String>,
    /// `false` blocks sign-in.
    pub account_enabled: Option<bool>,
}

impl GuestPatch {
    pub fn is_empty(&self) -> bool {
        *self == GuestPatch::default()
    }
}

/// The target tenant's B2B guests, through Graph (invitations, users) and Exchange (GAL visibility, and the mail
/// contacts an invitation can collide with).
#[async_trait]
pub trait GuestUserTarget: Send + Sync {
    /// Every guest of the tenant (`userType` Guest or Member with an `#EXT#` UPN), anchor read from
    /// `extensionAttribute{anchor_attribute}`; `hidden` = sign-in blocked, `address` = the invited address.
    async fn list_guests(&self, anchor_attribute: u8) -> Result<Vec<TargetObject>, PortError>;
    /// Every mail contact of the tenant, anchor read from `CustomAttribute{anchor_attribute}`.
    async fn list_mail_contacts(
        &self,
        anchor_attribute: u8,
    ) -> Result<Vec<TargetObject>, PortError>;
    /// `POST /invitations` (no mail sent); returns the guest's id.
    async fn invite(&self, entry: &Entry, redirect_url: &str) -> Result<String, PortError>;
    /// `PATCH /users/{id}`.
    async fn update(&self, id: &str, patch: &GuestPatch) -> Result<(), PortError>;
    /// `DELETE /users/{id}` (restorable for 30 days).
    async fn delete(&self, id: &str) -> Result<(), PortError>;
    /// `Set-MailUser -HiddenFromAddressListsEnabled`; `Ok(false)` while Exchange does not know the guest yet.
    async fn set_hidden_in_gal(&self, id: &str, hidden: bool) -> Result<bool, PortError>;
    /// `Remove-MailContact` (migration from `mail_contact`).
    async fn remove_mail_contact(&self, id: &str) -> Result<(), PortError>;
}

/// Request counts of the clients a run used, read before and after the run.
pub trait RequestMeter: Send + Sync {
    /// Requests sent per service (`graph`, `exchange`, `login`, ...), and retries after throttling or transient errors.
    fn snapshot(&self) -> CounterSnapshot;
}

/// A reading of [`RequestMeter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub requests: BTreeMap<String, u64>,
    pub throttled_retries: u64,
}

impl CounterSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            requests: self
                .requests
                .iter()
                .map(|(service, n)| {
                    (
                        service.clone(),
                        n.saturating_sub(earlier.requests.get(service).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            throttled_retries: self
                .throttled_retries
                .saturating_sub(earlier.throttled_retries),
        }
    }
}
