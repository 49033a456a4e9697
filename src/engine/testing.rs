//! In-memory doubles of the engine's ports (and the state store it uses), for the engine's unit tests. They enforce what
//! the real services enforce where the engine depends on it: unique names and addresses in Exchange, leases with
//! compare-and-swap, delta links that can expire.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;

use super::diff::TargetObject;
use super::entry::{Entry, Field, SourceKind, SourceObject};
use super::ports::{
    MailContactSettings, MailContactTarget, PortError, SourceDirectory, SourceRead,
};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The in-memory state store the engine's unit tests use: the crate's own `MemoryStore` (which passes the stores'
/// conformance suite), with its test knobs.
pub type MemStore = crate::state::MemoryStore;

/// A source directory in memory with a change log for delta reads.
pub struct FakeDirectory {
    pub tenant_id: String,
    inner: Mutex<DirInner>,
}

#[derive(Default)]
struct DirInner {
    users: BTreeMap<String, Value>,
    /// (generation, id) of every change.
    log: Vec<(u64, String)>,
    generation: u64,
    expired: bool,
    unreachable: bool,
    groups: HashMap<String, Vec<String>>,
    latency: std::time::Duration,
    /// Exchange's hidden flag per user id, and when it last changed (Graph's delta does not show it).
    hidden: BTreeMap<String, (bool, chrono::DateTime<Utc>)>,
    /// Exchange reads of hidden flags (`hidden_ids` and `hidden_flags` calls).
    hidden_reads: u64,
    /// Whether Exchange refuses the app (no Exchange.ManageAsApp).
    exchange_refused: bool,
    /// Groups as `groups/delta` serves them, by id, and their change log (generation, id).
    mail_groups: BTreeMap<String, Value>,
    group_log: Vec<(u64, String)>,
    groups_expired: bool,
    /// `groups/delta` reads (full or not).
    group_reads: Vec<bool>,
}

impl FakeDirectory {
    pub fn new(tenant_id: &str) -> Self {
        FakeDirectory {
            tenant_id: tenant_id.into(),
            inner: Mutex::new(DirInner::default()),
        }
    }

    /// Adds or replaces a user (`id` inside the JSON).
    pub fn put_user(&self, user: Value) {
        let mut inner = lock(&self.inner);
        let id = user["id"].as_str().unwrap_or_default().to_owned();
        inner.generation += 1;
        let generation = inner.generation;
        inner.log.push((generation, id.clone()));
        inner.users.insert(id, user);
    }

    /// Changes one attribute of a user.
    pub fn set(&self, id: &str, attribute: &str, value: Value) {
        let user = lock(&self.inner).users.get(id).cloned();
        if let Some(mut user) = user {
            user[attribute] = value;
            self.put_user(user);
        }
    }

    pub fn delete_user(&self, id: &str) {
        let mut inner = lock(&self.inner);
        inner.users.remove(id);
        inner.generation += 1;
        let generation = inner.generation;
        inner.log.push((generation, id.to_owned()));
    }

    pub fn expire_delta_links(&self) {
        lock(&self.inner).expired = true;
    }

    pub fn set_unreachable(&self, unreachable: bool) {
        lock(&self.inner).unreachable = unreachable;
    }

    /// Makes every read take this long (to overlap runs).
    pub fn set_latency(&self, latency: std::time::Duration) {
        lock(&self.inner).latency = latency;
    }

    /// Hides (or shows) a user in Exchange's address lists: no Graph change.
    pub fn set_hidden(&self, id: &str, hidden: bool) {
        lock(&self.inner)
            .hidden
            .insert(id.to_ascii_lowercase(), (hidden, Utc::now()));
    }

    /// Exchange reads of hidden flags so far.
    pub fn hidden_reads(&self) -> u64 {
        lock(&self.inner).hidden_reads
    }

    /// Makes Exchange refuse every read (the app lacks the Exchange permission).
    pub fn refuse_exchange(&self, refused: bool) {
        lock(&self.inner).exchange_refused = refused;
    }

    /// Adds or replaces a group as `groups/delta` serves it (`id`, `displayName`, `mail`, `mailEnabled`, ...).
    pub fn put_mail_group(&self, group: Value) {
        let mut inner = lock(&self.inner);
        let id = group["id"].as_str().unwrap_or_default().to_owned();
        inner.generation += 1;
        let generation = inner.generation;
        inner.group_log.push((generation, id.clone()));
        inner.mail_groups.insert(id, group);
    }

    /// Deletes a group (`@removed` in the next `groups/delta` round).
    pub fn delete_mail_group(&self, id: &str) {
        let mut inner = lock(&self.inner);
        inner.mail_groups.remove(id);
        inner.generation += 1;
        let generation = inner.generation;
        inner.group_log.push((generation, id.to_owned()));
    }

    /// Makes the stored `groups/delta` links expire (the users' ones keep working).
    pub fn expire_group_delta_links(&self) {
        lock(&self.inner).groups_expired = true;
    }

    /// The `groups/delta` reads so far: `true` for a full one.
    pub fn group_reads(&self) -> Vec<bool> {
        lock(&self.inner).group_reads.clone()
    }

    pub fn set_group(&self, group: &str, members: &[&str]) {
        lock(&self.inner).groups.insert(
            group.into(),
            members.iter().map(|m| (*m).to_owned()).collect(),
        );
    }
}

#[async_trait]
impl SourceDirectory for FakeDirectory {
    async fn tenant_id(&self) -> Result<String, PortError> {
        Ok(self.tenant_id.clone())
    }

    async fn read_users(
        &self,
        delta_link: Option<&str>,
        _select: &[String],
    ) -> Result<SourceRead, PortError> {
        let latency = lock(&self.inner).latency;
        tokio::time::sleep(latency).await;
        let mut inner = lock(&self.inner);
        if inner.unreachable {
            return Err(PortError::Failed {
                service: "graph".into(),
                message: "503 after retries".into(),
            });
        }
        let values: Vec<Value> = match delta_link {
            None => {
                inner.expired = false;
                inner.users.values().cloned().collect()
            }
            Some(_) if inner.expired => return Err(PortError::DeltaExpired),
            Some(link) => {
                let since: u64 = link.trim_start_matches("delta:").parse().unwrap_or(0);
                let mut ids: Vec<&String> = inner
                    .log
                    .iter()
                    .filter(|(g, _)| *g > since)
                    .map(|(_, id)| id)
                    .collect();
                ids.sort();
                ids.dedup();
                ids.iter()
                    .map(|id| {
                        inner.users.get(*id).cloned().unwrap_or_else(
                            || serde_json::json!({"id": id, "@removed": {"reason": "deleted"}}),
                        )
                    })
                    .collect()
            }
        };
        let objects = values
            .iter()
            .filter_map(|v| SourceObject::from_graph(v, SourceKind::User).ok())
            .collect();
        Ok(SourceRead {
            objects,
            delta_link: format!("delta:{}", inner.generation),
        })
    }

    async fn read_groups(
        &self,
        delta_link: Option<&str>,
        _select: &[String],
    ) -> Result<SourceRead, PortError> {
        let mut inner = lock(&self.inner);
        inner.group_reads.push(delta_link.is_none());
        let values: Vec<Value> = match delta_link {
            None => {
                inner.groups_expired = false;
                inner.mail_groups.values().cloned().collect()
            }
            Some(_) if inner.groups_expired => return Err(PortError::DeltaExpired),
            Some(link) => {
                let since: u64 = link.trim_start_matches("groups:").parse().unwrap_or(0);
                let ids: BTreeSet<&String> = inner
                    .group_log
                    .iter()
                    .filter(|(g, _)| *g > since)
                    .map(|(_, id)| id)
                    .collect();
                ids.into_iter()
                    .map(|id| {
                        inner.mail_groups.get(id).cloned().unwrap_or_else(
                            || serde_json::json!({"id": id, "@removed": {"reason": "deleted"}}),
                        )
                    })
                    .collect()
            }
        };
        Ok(SourceRead {
            objects: values
                .iter()
                .filter_map(|v| SourceObject::from_graph(v, SourceKind::Group).ok())
                .collect(),
            delta_link: format!("groups:{}", inner.generation),
        })
    }

    async fn read_org_contacts(&self) -> Result<Vec<SourceObject>, PortError> {
        Ok(Vec::new())
    }

    async fn group_members(&self, group_id: &str) -> Result<Vec<String>, PortError> {
        Ok(lock(&self.inner)
            .groups
            .get(group_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn read_user(
        &self,
        id: &str,
        _select: &[String],
    ) -> Result<Option<SourceObject>, PortError> {
        let inner = lock(&self.inner);
        Ok(inner
            .users
            .get(id)
            .or_else(|| {
                inner
                    .users
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(id))
                    .map(|(_, user)| user)
            })
            .and_then(|user| SourceObject::from_graph(user, SourceKind::User).ok()))
    }

    async fn hidden_ids(&self) -> Result<std::collections::BTreeSet<String>, PortError> {
        let mut inner = lock(&self.inner);
        if inner.exchange_refused {
            return Err(PortError::Failed {
                service: "exchange".into(),
                message: "refused: grant Exchange.ManageAsApp".into(),
            });
        }
        inner.hidden_reads += 1;
        Ok(inner
            .hidden
            .iter()
            .filter(|(_, (hidden, _))| *hidden)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn hidden_flags(
        &self,
        changed_since: Option<chrono::DateTime<Utc>>,
        ids: &[String],
    ) -> Result<BTreeMap<String, bool>, PortError> {
        let mut inner = lock(&self.inner);
        if inner.exchange_refused {
            return Err(PortError::Failed {
                service: "exchange".into(),
                message: "refused: grant Exchange.ManageAsApp".into(),
            });
        }
        inner.hidden_reads += ids.len().div_ceil(50).max(1) as u64;
        let mut flags = BTreeMap::new();
        for id in ids {
            let id = id.to_ascii_lowercase();
            let hidden = inner.hidden.get(&id).is_some_and(|(hidden, _)| *hidden);
            flags.insert(id, hidden);
        }
        if let Some(since) = changed_since {
            for (id, (hidden, at)) in &inner.hidden {
                if *at >= since {
                    flags.insert(id.clone(), *hidden);
                }
            }
        }
        Ok(flags)
    }
}

/// One mail contact of [`FakeExchange`].
#[derive(Debug, Clone, Default)]
pub struct FakeContact {
    pub id: String,
    pub name: String,
    pub address: String,
    pub hidden: bool,
    pub custom: BTreeMap<u8, String>,
    pub fields: BTreeMap<Field, String>,
}

/// Exchange mail contacts in memory, with unique names and addresses, and injectable failures.
#[derive(Default)]
pub struct FakeExchange {
    inner: Mutex<ExInner>,
}

#[derive(Default)]
struct ExInner {
    contacts: BTreeMap<String, FakeContact>,
    next_id: u64,
    /// Addresses owned by other recipients (mailboxes, groups).
    mailboxes: HashMap<String, String>,
    /// Fail the next N `Set-MailContact` calls (simulates a crash right after New-MailContact).
    fail_set_mail_contact: u64,
    pub writes: u64,
}

impl FakeExchange {
    pub fn contacts(&self) -> Vec<FakeContact> {
        lock(&self.inner).contacts.values().cloned().collect()
    }

    pub fn writes(&self) -> u64 {
        lock(&self.inner).writes
    }

    pub fn by_address(&self, address: &str) -> Option<FakeContact> {
        lock(&self.inner)
            .contacts
            .values()
            .find(|c| c.address.eq_ignore_ascii_case(address))
            .cloned()
    }

    /// Adds a contact made by a human (no anchor).
    pub fn add_manual(&self, name: &str, address: &str) -> String {
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        let id = format!("manual-{}", inner.next_id);
        let mut fields = BTreeMap::new();
        fields.insert(Field::DisplayName, name.to_owned());
        fields.insert(Field::Email, address.to_owned());
        inner.contacts.insert(
            id.clone(),
            FakeContact {
                id: id.clone(),
                name: name.into(),
                address: address.into(),
                fields,
                ..FakeContact::default()
            },
        );
        id
    }

    pub fn add_mailbox(&self, address: &str, name: &str) {
        lock(&self.inner)
            .mailboxes
            .insert(address.to_ascii_lowercase(), name.into());
    }

    pub fn edit(&self, id: &str, field: Field, value: &str) {
        if let Some(contact) = lock(&self.inner).contacts.get_mut(id) {
            contact.fields.insert(field, value.into());
        }
    }

    pub fn delete(&self, id: &str) {
        lock(&self.inner).contacts.remove(id);
    }

    pub fn fail_next_set_mail_contact(&self, n: u64) {
        lock(&self.inner).fail_set_mail_contact = n;
    }

    fn view(contact: &FakeContact, attribute: u8) -> TargetObject {
        TargetObject {
            id: contact.id.clone(),
            anchor: contact
                .custom
                .get(&attribute)
                .filter(|a| !a.is_empty())
                .cloned(),
            name: contact.name.clone(),
            address: contact.address.clone(),
            hidden: contact.hidden,
            fields: contact.fields.clone(),
        }
    }
}

#[async_trait]
impl MailContactTarget for FakeExchange {
    async fn list_contacts(&self, anchor_attribute: u8) -> Result<Vec<TargetObject>, PortError> {
        Ok(lock(&self.inner)
            .contacts
            .values()
            .map(|c| Self::view(c, anchor_attribute))
            .collect())
    }

    async fn find_by_address(
        &self,
        address: &str,
        anchor_attribute: u8,
    ) -> Result<Option<TargetObject>, PortError> {
        Ok(self
            .by_address(address)
            .map(|c| Self::view(&c, anchor_attribute)))
    }

    async fn recipient_holding(&self, address: &str) -> Result<Option<String>, PortError> {
        let inner = lock(&self.inner);
        if let Some(owner) = inner.mailboxes.get(&address.to_ascii_lowercase()) {
            return Ok(Some(format!("UserMailbox {owner:?}")));
        }
        Ok(inner
            .contacts
            .values()
            .find(|c| c.address.eq_ignore_ascii_case(address))
            .map(|c| format!("MailContact {:?}", c.name)))
    }

    async fn create(&self, name: &str, entry: &Entry) -> Result<String, PortError> {
        let mut inner = lock(&self.inner);
        let address = entry.get(Field::Email).to_owned();
        if let Some(owner) = inner.mailboxes.get(&address.to_ascii_lowercase()) {
            return Err(PortError::AddressInUse {
                address,
                owner: format!("mailbox {owner}"),
            });
        }
        if let Some(existing) = inner
            .contacts
            .values()
            .find(|c| c.address.eq_ignore_ascii_case(&address))
        {
            return Err(PortError::AddressInUse {
                address,
                owner: format!("contact {}", existing.name),
            });
        }
        if inner
            .contacts
            .values()
            .any(|c| c.name.eq_ignore_ascii_case(name))
            || inner
                .mailboxes
                .values()
                .any(|n| n.eq_ignore_ascii_case(name))
        {
            return Err(PortError::NameInUse { name: name.into() });
        }
        inner.next_id += 1;
        inner.writes += 1;
        let id = format!("contact-{}", inner.next_id);
        let mut fields = BTreeMap::new();
        for field in [
            Field::DisplayName,
            Field::Email,
            Field::GivenName,
            Field::Surname,
            Field::Initials,
        ] {
            if !entry.get(field).is_empty() {
                fields.insert(field, entry.get(field).to_owned());
            }
        }
        inner.contacts.insert(
            id.clone(),
            FakeContact {
                id: id.clone(),
                name: name.into(),
                address,
                fields,
                ..FakeContact::default()
            },
        );
        Ok(id)
    }

    async fn set_mail_contact(
        &self,
        id: &str,
        settings: &MailContactSettings,
    ) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        if inner.fail_set_mail_contact > 0 {
            inner.fail_set_mail_contact -= 1;
            return Err(PortError::Failed {
                service: "exchange".into(),
                message: "connection dropped".into(),
            });
        }
        inner.writes += 1;
        let contact = inner
            .contacts
            .get_mut(id)
            .ok_or(PortError::NotFound { id: id.into() })?;
        if let Some((attribute, anchor)) = &settings.anchor {
            contact.custom.insert(*attribute, anchor.clone());
        }
        if let Some(hidden) = settings.hidden {
            contact.hidden = hidden;
        }
        if let Some(name) = &settings.name {
            contact.name = name.clone();
        }
        if let Some(display) = &settings.display_name {
            contact.fields.insert(Field::DisplayName, display.clone());
        }
        if let Some(address) = &settings.external_address {
            contact.address = address.clone();
            contact.fields.insert(Field::Email, address.clone());
        }
        Ok(())
    }

    async fn set_contact(
        &self,
        id: &str,
        fields: &BTreeMap<Field, String>,
    ) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        inner.writes += 1;
        let contact = inner
            .contacts
            .get_mut(id)
            .ok_or(PortError::NotFound { id: id.into() })?;
        for (field, value) in fields {
            contact.fields.insert(*field, value.clone());
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        inner.writes += 1;
        inner
            .contacts
            .remove(id)
            .map(|_| ())
            .ok_or(PortError::NotFound { id: id.into() })
    }
}
