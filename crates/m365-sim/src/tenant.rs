//! One simulated tenant: identity (GUID, domains), its galbridge app registration, the directory (users, mail
//! contacts, groups, with change sequence numbers for delta) and the mailboxes. Every mutation goes through here so
//! the address and name indexes that Exchange's uniqueness rules need stay right.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::auth::certs::AppCertificate;
use crate::model::mail_contact::{MailContact, bare_address};
use crate::model::mailbox::Mailbox;
use crate::model::user::{MailboxKind, User};
use crate::model::{Group, Tombstone, Tracked};

/// Application permissions the galbridge app holds in a tenant by default.
pub const DEFAULT_PERMISSIONS: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "User.Invite.All",
    "GroupMember.Read.All",
    "OrgContact.Read.All",
    "ProfilePhoto.Read.All",
    "Contacts.ReadWrite",
    "Exchange.ManageAsApp",
];

pub(crate) struct AppRegistration {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) certificate: tokio::sync::OnceCell<Arc<AppCertificate>>,
    pub(crate) permissions: RwLock<BTreeSet<String>>,
    /// Federated identity credentials: (issuer, subject) pairs the app trusts.
    pub(crate) federations: RwLock<Vec<(String, String)>>,
    pub(crate) cert_seed: u64,
    /// RBAC for Applications: the user ids of the only mailboxes the app may reach (`None`: every mailbox).
    pub(crate) mailbox_scope: RwLock<Option<BTreeSet<String>>>,
}

impl AppRegistration {
    pub(crate) fn has_permission(&self, any_of: &[&str]) -> bool {
        let held = self.permissions.read();
        any_of.iter().any(|p| held.contains(*p))
    }
}

pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) initial_domain: String,
    pub(crate) mail_domain: String,
    pub(crate) app: AppRegistration,
    pub(crate) dir: RwLock<Directory>,
    pub(crate) mailboxes: RwLock<HashMap<String, Arc<RwLock<Mailbox>>>>,
    /// Delegated sign-ins (device codes, refresh tokens).
    pub(crate) delegated: crate::auth::device_code::DelegatedGrants,
}

impl Tenant {
    pub(crate) fn mailbox(&self, user_id: &str) -> Option<Arc<RwLock<Mailbox>>> {
        self.mailboxes.read().get(user_id).cloned()
    }

    /// Creates the mailbox of a user who has one (idempotent).
    pub(crate) fn ensure_mailbox(&self, user_id: &str) -> Arc<RwLock<Mailbox>> {
        let mut boxes = self.mailboxes.write();
        let index = boxes.len() as u64 + 1;
        Arc::clone(
            boxes
                .entry(user_id.to_string())
                .or_insert_with(|| Arc::new(RwLock::new(Mailbox::new(user_id, index)))),
        )
    }
}

/// What owns an SMTP address in the tenant (Exchange refuses a second owner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AddressOwner {
    User(String),
    MailContact(String),
}

#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) seq: u64,
    pub(crate) delta_generation: u64,
    pub(crate) users: BTreeMap<String, Tracked<User>>,
    pub(crate) user_tombstones: BTreeMap<String, Tombstone>,
    pub(crate) soft_deleted_users: BTreeMap<String, User>,
    pub(crate) contacts: BTreeMap<String, Tracked<MailContact>>,
    pub(crate) contact_tombstones: BTreeMap<String, Tombstone>,
    /// Sim-clock millis at which each mail contact becomes a Graph orgContact (replication delay).
    pub(crate) contact_replicated_at: HashMap<String, i64>,
    pub(crate) groups: BTreeMap<String, Tracked<Group>>,
    /// Groups deleted, for groups/delta (`model/group.rs`).
    pub(crate) group_tombstones: BTreeMap<String, Tombstone>,
    /// Exchange's WhenChangedUTC of mail-enabled groups changed since they were added (hidden flag included).
    pub(crate) group_exchange_changed: HashMap<String, String>,
    /// Sim-clock millis before which Exchange's Get-* cmdlets do not see a new mail contact (replication delay).
    contact_readable_at: HashMap<String, i64>,
    /// Exchange's WhenChangedUTC of users whose recipient changed since they were seeded or added (else their
    /// creation time): Exchange-only changes (hidden flag) move it without touching Graph's delta.
    user_exchange_changed: HashMap<String, String>,
    addresses: HashMap<String, AddressOwner>,
    contact_names: HashMap<String, String>,
    /// Mail contacts per lowercase alias (New-MailContact picks a free one; a scan made a large tenant quadratic).
    contact_aliases: HashMap<String, usize>,
}

fn user_addresses(u: &User) -> Vec<String> {
    let mut out: Vec<String> = u
        .proxy_addresses
        .iter()
        .map(|a| bare_address(a).to_ascii_lowercase())
        .collect();
    if let Some(m) = &u.mail {
        out.push(m.to_ascii_lowercase());
    }
    out.push(u.user_principal_name.to_ascii_lowercase());
    out.sort();
    out.dedup();
    out
}

fn contact_addresses(c: &MailContact) -> Vec<String> {
    let mut out: Vec<String> = c
        .email_addresses
        .iter()
        .map(|a| bare_address(a).to_ascii_lowercase())
        .collect();
    out.push(c.primary_smtp().to_ascii_lowercase());
    out.sort();
    out.dedup();
    out
}

impl Directory {
    pub(crate) fn bump(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn address_owner(&self, address: &str) -> Option<&AddressOwner> {
        self.addresses
            .get(&bare_address(address).to_ascii_lowercase())
    }

    /// Whether a mail contact has this alias (case-insensitively).
    pub(crate) fn contact_alias_taken(&self, alias: &str) -> bool {
        self.contact_aliases.contains_key(&alias.to_lowercase())
    }

    fn count_alias(&mut self, alias: &str, added: bool) {
        let key = alias.to_lowercase();
        if added {
            *self.contact_aliases.entry(key).or_default() += 1;
        } else if let Some(count) = self.contact_aliases.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.contact_aliases.remove(&key);
            }
        }
    }

    pub(crate) fn contact_by_name(&self, name: &str) -> Option<&str> {
        self.contact_names
            .get(&name.to_lowercase())
            .map(String::as_str)
    }

    pub(crate) fn insert_user(&mut self, user: User, visible_from_ms: i64) {
        let version = self.bump();
        for a in user_addresses(&user) {
            self.addresses
                .insert(a, AddressOwner::User(user.id.clone()));
        }
        self.user_tombstones.remove(&user.id);
        let id = user.id.clone();
        self.users.insert(
            id,
            Tracked {
                value: user,
                version,
                created_version: version,
                prop_versions: HashMap::new(),
                visible_from_ms,
            },
        );
    }

    /// Applies a Graph-style patch at `now_utc` (Exchange's WhenChangedUTC); returns the changed properties.
    /// The hidden-from-address-lists flag lives in Exchange only: changing it moves WhenChangedUTC but not Graph's
    /// delta (Graph is not kept in step with Exchange: Graph known issue, see the crate README).
    pub(crate) fn patch_user(
        &mut self,
        id: &str,
        patch: &Map<String, Value>,
        now_utc: &str,
    ) -> Result<Vec<&'static str>, PatchError> {
        let tracked = self.users.get_mut(id).ok_or(PatchError::NotFound)?;
        let mut updated = tracked.value.clone();
        let changed = updated.apply_patch(patch).map_err(PatchError::Invalid)?;
        let exchange_changed = updated != tracked.value;
        // Sim-only fields (mailbox kind, manager) change the object without a Graph property; the hidden flag does
        // not change it for Graph at all.
        let touched = {
            let mut graph_view = updated.clone();
            graph_view.hidden_from_address_lists = tracked.value.hidden_from_address_lists;
            graph_view != tracked.value
        };
        let manager_changed = updated.manager_id != tracked.value.manager_id;
        let old_addresses = user_addresses(&tracked.value);
        let new_addresses = user_addresses(&updated);
        for a in &new_addresses {
            if let Some(AddressOwner::MailContact(_)) = self.addresses.get(a) {
                return Err(PatchError::Invalid(format!(
                    "Another object with the same value for property proxyAddresses already exists: {a}"
                )));
            }
        }
        self.seq += 1;
        let version = self.seq;
        let Some(tracked) = self.users.get_mut(id) else {
            return Err(PatchError::NotFound);
        };
        tracked.value = updated;
        if touched {
            tracked.version = version;
        }
        if exchange_changed {
            self.user_exchange_changed
                .insert(id.to_string(), now_utc.to_string());
        }
        for p in &changed {
            tracked.prop_versions.insert(p, version);
        }
        if manager_changed {
            tracked.prop_versions.insert("manager", version);
        }
        for a in old_addresses {
            self.addresses.remove(&a);
        }
        for a in new_addresses {
            self.addresses.insert(a, AddressOwner::User(id.to_string()));
        }
        Ok(changed)
    }

    /// Removes a user; `soft` keeps it restorable (delta reports `changed`), else `deleted`.
    pub(crate) fn delete_user(&mut self, id: &str, soft: bool) -> bool {
        let Some(tracked) = self.users.remove(id) else {
            return false;
        };
        for a in user_addresses(&tracked.value) {
            self.addresses.remove(&a);
        }
        self.user_exchange_changed.remove(id);
        let version = self.bump();
        self.user_tombstones.insert(
            id.to_string(),
            Tombstone {
                version,
                reason: if soft { "changed" } else { "deleted" },
            },
        );
        if soft {
            self.soft_deleted_users
                .insert(id.to_string(), tracked.value);
        }
        for g in self.groups.values_mut() {
            g.value.members.retain(|m| m != id);
        }
        true
    }

    pub(crate) fn restore_user(&mut self, id: &str, now_ms: i64) -> bool {
        let Some(user) = self.soft_deleted_users.remove(id) else {
            return false;
        };
        self.insert_user(user, now_ms);
        if let Some(t) = chrono::DateTime::from_timestamp_millis(now_ms) {
            self.touch_user_exchange(id, &t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        true
    }

    pub(crate) fn insert_contact(
        &mut self,
        contact: MailContact,
        visible_from_ms: i64,
        replicated_at_ms: i64,
    ) {
        let version = self.bump();
        for a in contact_addresses(&contact) {
            self.addresses.insert(
                a,
                AddressOwner::MailContact(contact.external_directory_object_id.clone()),
            );
        }
        let id = contact.external_directory_object_id.clone();
        self.contact_names
            .insert(contact.name.to_lowercase(), id.clone());
        self.count_alias(&contact.alias, true);
        self.contact_replicated_at
            .insert(id.clone(), replicated_at_ms);
        self.contact_tombstones.remove(&id);
        self.contacts.insert(
            id,
            Tracked {
                value: contact,
                version,
                created_version: version,
                prop_versions: HashMap::new(),
                visible_from_ms,
            },
        );
    }

    /// Hides a new mail contact from Exchange's Get-* cmdlets until `readable_at_ms` (replication delay).
    pub(crate) fn set_contact_readable_at(&mut self, id: &str, readable_at_ms: i64) {
        self.contact_readable_at
            .insert(id.to_string(), readable_at_ms);
    }

    /// Whether Exchange's Get-* cmdlets see this mail contact at `now_ms`.
    pub(crate) fn contact_readable(&self, id: &str, now_ms: i64) -> bool {
        self.contact_readable_at
            .get(id)
            .is_none_or(|at| *at <= now_ms)
    }

    /// Exchange's WhenChangedUTC of a user: the last Exchange-visible change, else the creation time.
    pub(crate) fn user_when_changed<'a>(&'a self, user: &'a User) -> &'a str {
        self.user_exchange_changed
            .get(&user.id)
            .map_or(user.created_date_time.as_str(), String::as_str)
    }

    /// Marks a user's recipient as changed by something outside `patch_user` (proxy addresses set by control).
    pub(crate) fn touch_user_exchange(&mut self, id: &str, now_utc: &str) {
        self.user_exchange_changed
            .insert(id.to_string(), now_utc.to_string());
    }

    /// Replaces a mail contact after a Set-* cmdlet, keeping the indexes right.
    pub(crate) fn replace_contact(&mut self, updated: MailContact) {
        let id = updated.external_directory_object_id.clone();
        let version = self.bump();
        let Some(tracked) = self.contacts.get_mut(&id) else {
            return;
        };
        let old_addresses = contact_addresses(&tracked.value);
        let old_name = tracked.value.name.to_lowercase();
        let (old_alias, new_alias) = (tracked.value.alias.clone(), updated.alias.clone());
        tracked.value = updated;
        tracked.version = version;
        let new_addresses = contact_addresses(&tracked.value);
        let new_name = tracked.value.name.to_lowercase();
        for a in old_addresses {
            self.addresses.remove(&a);
        }
        for a in new_addresses {
            self.addresses
                .insert(a, AddressOwner::MailContact(id.clone()));
        }
        self.contact_names.remove(&old_name);
        self.contact_names.insert(new_name, id);
        self.count_alias(&old_alias, false);
        self.count_alias(&new_alias, true);
    }

    pub(crate) fn remove_contact(&mut self, id: &str) -> Option<MailContact> {
        let tracked = self.contacts.remove(id)?;
        self.count_alias(&tracked.value.alias, false);
        for a in contact_addresses(&tracked.value) {
            self.addresses.remove(&a);
        }
        self.contact_names
            .remove(&tracked.value.name.to_lowercase());
        self.contact_replicated_at.remove(id);
        self.contact_readable_at.remove(id);
        let version = self.bump();
        self.contact_tombstones.insert(
            id.to_string(),
            Tombstone {
                version,
                reason: "deleted",
            },
        );
        Some(tracked.value)
    }

    /// Transitive user members of a group (nested groups expanded once each).
    pub(crate) fn transitive_user_members(&self, group_id: &str) -> Vec<String> {
        let mut seen_groups = BTreeSet::new();
        let mut users = BTreeSet::new();
        let mut stack = vec![group_id.to_string()];
        while let Some(g) = stack.pop() {
            if !seen_groups.insert(g.clone()) {
                continue;
            }
            if let Some(group) = self.groups.get(&g) {
                for m in &group.value.members {
                    if self.groups.contains_key(m) {
                        stack.push(m.clone());
                    } else if self.users.contains_key(m) {
                        users.insert(m.clone());
                    }
                }
            }
        }
        users.into_iter().collect()
    }

    pub(crate) fn users_with_mailbox(&self) -> impl Iterator<Item = &User> {
        self.users
            .values()
            .map(|t| &t.value)
            .filter(|u| u.mailbox != MailboxKind::None)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PatchError {
    #[error("object not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
}
