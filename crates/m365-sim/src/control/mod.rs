//! The control surface tests, the demo and benchmarks use: add/change/delete people, inspect mail contacts and
//! mailbox contacts, make "user-made" objects (not galbridge's), read counters and per-mailbox load, expire delta
//! tokens, move the clock, set knobs, faults and permissions. `Control` methods and `/_control/…` (see `http`) are
//! the same powers.

mod folder_source;
mod groups;
pub(crate) mod http;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::SimError;
use crate::auth::certs::{self, AppCertificate};
use crate::graph::contacts_insert;
use crate::knobs::{FaultRule, Knobs, Service};
use crate::limits::MailboxLoad;
use crate::metrics::CounterRow;
use crate::model::mail_contact::MailContact;
use crate::model::user::{MailboxKind, User};
use crate::state::SimState;
use crate::tenant::{PatchError, Tenant};

/// The tenant's app certificate, generated once (in a blocking thread: RSA key generation).
pub(crate) async fn app_certificate(tenant: &Tenant) -> Result<Arc<AppCertificate>, SimError> {
    tenant
        .app
        .certificate
        .get_or_try_init(|| async {
            let seed = tenant.app.cert_seed;
            let subject = format!("galbridge-{}", tenant.name);
            tokio::task::spawn_blocking(move || certs::generate(seed, &subject))
                .await
                .map_err(|e| SimError::Tls(format!("certificate task: {e}")))?
                .map(Arc::new)
        })
        .await
        .cloned()
}

/// One personal contact as the control API shows it: every field, folder, extended properties, photo digest.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MailboxContactView {
    pub id: String,
    pub folder_id: String,
    pub folder_name: String,
    /// Graph JSON of the contact (all properties, categories included).
    pub fields: Value,
    pub extended_properties: Vec<(String, String)>,
    pub photo_sha256: Option<String>,
    pub photo_bytes: Option<usize>,
    pub user_made: bool,
}

#[derive(Clone)]
pub struct Control {
    state: Arc<SimState>,
}

impl Control {
    pub(crate) fn new(state: Arc<SimState>) -> Self {
        Control { state }
    }

    fn tenant(&self, name: &str) -> Result<Arc<Tenant>, SimError> {
        self.state
            .tenant(name)
            .cloned()
            .ok_or_else(|| SimError::UnknownTenant(name.to_string()))
    }

    // ---- people -------------------------------------------------------------------------------------------

    /// Adds a person. `fields` uses Graph's property names (`displayName`, `mail`, `department`, …) plus
    /// `mailbox` (`user`|`shared`|`none`), `hiddenFromAddressLists`, `restEnabled`, `manager` (an id).
    /// Missing id/UPN/mail are derived. Returns the new id.
    pub fn add_user(&self, tenant: &str, fields: Value) -> Result<String, SimError> {
        let t = self.tenant(tenant)?;
        let Value::Object(fields) = fields else {
            return Err(SimError::Refused(
                "user fields must be a JSON object".into(),
            ));
        };
        let display = fields
            .get("displayName")
            .and_then(Value::as_str)
            .ok_or_else(|| SimError::Refused("displayName is required".into()))?;
        let alias: String = display
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let alias = if alias.is_empty() {
            format!("user{}", rand::random::<u32>())
        } else {
            format!("{alias}{}", rand::random::<u16>())
        };
        let now = self.state.clock.now();
        let mut user = User {
            id: uuid::Uuid::new_v4().to_string(),
            user_principal_name: format!("{alias}@{}", t.initial_domain),
            display_name: display.to_string(),
            mail: Some(format!("{alias}@{}", t.mail_domain)),
            mail_nickname: alias.clone(),
            proxy_addresses: vec![format!("SMTP:{alias}@{}", t.mail_domain)],
            user_type: "Member".into(),
            account_enabled: true,
            created_date_time: now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            mailbox: MailboxKind::User,
            rest_enabled: true,
            ..User::default()
        };
        let mut patch = fields.clone();
        if let Some(id) = patch
            .remove("id")
            .and_then(|v| v.as_str().map(str::to_string))
        {
            user.id = id;
        }
        if let Some(Value::Array(p)) = patch.remove("proxyAddresses") {
            user.proxy_addresses = p
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
        }
        if let Some(m) = patch.get("mail").and_then(Value::as_str)
            && !user
                .proxy_addresses
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&format!("smtp:{m}")))
        {
            {
                user.proxy_addresses.insert(0, format!("SMTP:{m}"));
                user.proxy_addresses.retain(|p| {
                    !p.eq_ignore_ascii_case(&format!("smtp:{alias}@{}", t.mail_domain))
                });
            }
        }
        if let Some(photo) = patch.remove("photo")
            && photo.as_bool() == Some(true)
        {
            {
                user.photo = Some(Arc::new(crate::jpeg::tiny_jpeg(
                    rand::random(),
                    user.id.as_bytes(),
                )));
            }
        }
        user.apply_patch(&patch).map_err(SimError::Refused)?;
        if user.mailbox == MailboxKind::None && !fields.contains_key("mail") {
            user.mail = None;
            user.proxy_addresses.clear();
        }
        let id = user.id.clone();
        let mut dir = t.dir.write();
        if dir.users.contains_key(&id) {
            return Err(SimError::Refused(format!("user {id} exists")));
        }
        let visible = now.timestamp_millis()
            + i64::try_from(self.state.knobs.read().consistency_delay_ms).unwrap_or(0);
        dir.insert_user(user, visible);
        drop(dir);
        crate::graph::subscriptions::user_changed(&self.state, &t, &id, "updated");
        Ok(id)
    }

    /// Changes a person with a Graph-style patch (same names as `add_user`). `hiddenFromAddressLists` is Exchange's
    /// flag: it moves the recipient's WhenChangedUTC and never shows in Graph (no users/delta entry, and
    /// `showInAddressList` stays null).
    pub fn update_user(&self, tenant: &str, id: &str, patch: Value) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let Value::Object(mut patch) = patch else {
            return Err(SimError::Refused("patch must be a JSON object".into()));
        };
        let stamp = self.state.clock.stamp();
        let mut dir = t.dir.write();
        if let Some(photo) = patch.remove("photo") {
            let u = dir
                .users
                .get_mut(id)
                .ok_or_else(|| SimError::NotFound(format!("user {id}")))?;
            u.value.photo = match photo {
                Value::Bool(true) => Some(Arc::new(crate::jpeg::tiny_jpeg(
                    rand::random(),
                    format!("{id}{}", rand::random::<u32>()).as_bytes(),
                ))),
                _ => None,
            };
        }
        if let Some(Value::Array(p)) = patch.remove("proxyAddresses") {
            let u = dir
                .users
                .get_mut(id)
                .ok_or_else(|| SimError::NotFound(format!("user {id}")))?;
            u.value.proxy_addresses = p
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            dir.touch_user_exchange(id, &stamp);
        }
        dir.patch_user(id, &patch, &stamp)
            .map(|_| ())
            .map_err(|e| match e {
                PatchError::NotFound => SimError::NotFound(format!("user {id}")),
                PatchError::Invalid(m) => SimError::Refused(m),
            })?;
        drop(dir);
        crate::graph::subscriptions::user_changed(&self.state, &t, id, "updated");
        Ok(())
    }

    /// Deletes a person: `soft` keeps it restorable (delta says `changed`), else gone (`deleted`).
    pub fn delete_user(&self, tenant: &str, id: &str, soft: bool) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        if t.dir.write().delete_user(id, soft) {
            let change = if soft { "updated" } else { "deleted" };
            crate::graph::subscriptions::user_changed(&self.state, &t, id, change);
            Ok(())
        } else {
            Err(SimError::NotFound(format!("user {id}")))
        }
    }

    pub fn restore_user(&self, tenant: &str, id: &str) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let now = self.state.clock.now_ms();
        if t.dir.write().restore_user(id, now) {
            crate::graph::subscriptions::user_changed(&self.state, &t, id, "updated");
            Ok(())
        } else {
            Err(SimError::NotFound(format!("soft-deleted user {id}")))
        }
    }

    /// Every user with every property (plus sim fields: mailbox kind, hidden, photo digest, Exchange's
    /// WhenChangedUTC as `exchangeWhenChangedUTC`).
    pub fn users(&self, tenant: &str) -> Result<Vec<Value>, SimError> {
        let t = self.tenant(tenant)?;
        let dir = t.dir.read();
        Ok(dir
            .users
            .values()
            .map(|tr| {
                let u = &tr.value;
                let mut m = u.render_all();
                m.insert(
                    "exchangeWhenChangedUTC".into(),
                    json!(dir.user_when_changed(u)),
                );
                m.insert("mailbox".into(), json!(u.mailbox));
                m.insert(
                    "hiddenFromAddressLists".into(),
                    json!(u.hidden_from_address_lists),
                );
                m.insert("restEnabled".into(), json!(u.rest_enabled));
                m.insert("manager".into(), json!(u.manager_id));
                m.insert(
                    "photoSha256".into(),
                    json!(u.photo.as_ref().map(|p| sha256_hex(p))),
                );
                Value::Object(m)
            })
            .collect())
    }

    pub fn group_ids(&self, tenant: &str) -> Result<Vec<(String, String)>, SimError> {
        let t = self.tenant(tenant)?;
        Ok(t.dir
            .read()
            .groups
            .values()
            .map(|g| (g.value.id.clone(), g.value.display_name.clone()))
            .collect())
    }

    // ---- mail contacts ------------------------------------------------------------------------------------

    /// Every mail contact of a tenant: all fields (CustomAttribute1..15, hidden flag, contact attributes, UserMade).
    pub fn mail_contacts(&self, tenant: &str) -> Result<Vec<Value>, SimError> {
        let t = self.tenant(tenant)?;
        let dir = t.dir.read();
        Ok(dir
            .contacts
            .values()
            .map(|c| Value::Object(c.value.render_all(&t.initial_domain)))
            .collect())
    }

    /// Creates a mail contact galbridge did not make (no anchor), visible at once. Returns its ExternalDirectoryObjectId.
    pub fn create_user_made_mail_contact(
        &self,
        tenant: &str,
        name: &str,
        email: &str,
    ) -> Result<String, SimError> {
        let t = self.tenant(tenant)?;
        let mut dir = t.dir.write();
        if dir.contact_by_name(name).is_some() {
            return Err(SimError::Refused(format!("name {name} is used")));
        }
        if dir.address_owner(email).is_some() {
            return Err(SimError::Refused(format!("address {email} is used")));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let stamp = self
            .state
            .clock
            .now()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let alias: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
        dir.insert_contact(
            MailContact {
                external_directory_object_id: id.clone(),
                guid: uuid::Uuid::new_v4().to_string(),
                name: name.into(),
                alias,
                display_name: name.into(),
                external_email_address: format!("SMTP:{email}"),
                email_addresses: vec![format!("SMTP:{email}")],
                when_created_utc: stamp.clone(),
                when_changed_utc: stamp,
                user_made: true,
                ..MailContact::default()
            },
            0,
            0,
        );
        Ok(id)
    }

    // ---- mailboxes ----------------------------------------------------------------------------------------

    /// A mailbox's contact folders as (id, displayName, parentFolderId).
    pub fn contact_folders(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<(String, String, String)>, SimError> {
        let t = self.tenant(tenant)?;
        let mb = t
            .mailbox(user_id)
            .ok_or_else(|| SimError::NotFound(format!("mailbox {user_id} (never opened)")))?;
        let mb = mb.read();
        Ok(mb
            .folders
            .values()
            .map(|f| {
                (
                    f.id.clone(),
                    f.display_name.clone(),
                    f.parent_folder_id.clone(),
                )
            })
            .collect())
    }

    /// Every personal contact of a mailbox, in all folders (empty when the mailbox was never used).
    pub fn mailbox_contacts(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<MailboxContactView>, SimError> {
        let t = self.tenant(tenant)?;
        let Some(mb) = t.mailbox(user_id) else {
            return Ok(Vec::new());
        };
        let mb = mb.read();
        Ok(mb
            .contacts
            .values()
            .map(|tr| {
                let c = &tr.value;
                MailboxContactView {
                    id: c.id.clone(),
                    folder_id: c.parent_folder_id.clone(),
                    folder_name: mb
                        .folders
                        .get(&c.parent_folder_id)
                        .map(|f| f.display_name.clone())
                        .unwrap_or_default(),
                    fields: Value::Object(c.render()),
                    extended_properties: c.extended.clone(),
                    photo_sha256: c.photo.as_ref().map(|p| sha256_hex(p)),
                    photo_bytes: c.photo.as_ref().map(|p| p.len()),
                    user_made: c.user_made,
                }
            })
            .collect())
    }

    pub fn contact_photo(
        &self,
        tenant: &str,
        user_id: &str,
        contact_id: &str,
    ) -> Result<Option<Vec<u8>>, SimError> {
        let t = self.tenant(tenant)?;
        let mb = t
            .mailbox(user_id)
            .ok_or_else(|| SimError::NotFound(format!("mailbox {user_id}")))?;
        let mb = mb.read();
        let c = mb
            .contacts
            .get(contact_id)
            .ok_or_else(|| SimError::NotFound(format!("contact {contact_id}")))?;
        Ok(c.value.photo.as_ref().map(|p| p.as_ref().clone()))
    }

    /// Creates a contact the mailbox owner made by hand, in `folder_id` (None: the default Contacts folder).
    pub fn create_user_made_contact(
        &self,
        tenant: &str,
        user_id: &str,
        folder_id: Option<&str>,
        fields: Value,
    ) -> Result<String, SimError> {
        let t = self.tenant(tenant)?;
        let Value::Object(fields) = fields else {
            return Err(SimError::Refused(
                "contact fields must be a JSON object".into(),
            ));
        };
        let mb = t.ensure_mailbox(user_id);
        let mut mb = mb.write();
        let folder = folder_id.map_or_else(|| mb.default_folder_id.clone(), str::to_string);
        if !mb.folders.contains_key(&folder) {
            return Err(SimError::NotFound(format!("folder {folder}")));
        }
        let stamp = self
            .state
            .clock
            .now()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        contacts_insert(&mut mb, &folder, fields, &stamp, 0, true)
            .map(|contact| contact.id.clone())
            .map_err(SimError::Refused)
    }

    // ---- observation --------------------------------------------------------------------------------------

    pub fn counters(&self) -> Vec<CounterRow> {
        self.state.counters.rows()
    }

    /// Sum of counters for a service whose endpoint contains `endpoint_contains`, optionally with one status.
    pub fn count(&self, service: Service, endpoint_contains: &str, status: Option<u16>) -> u64 {
        self.counters()
            .iter()
            .filter(|r| {
                r.service == service
                    && r.endpoint.contains(endpoint_contains)
                    && status.is_none_or(|s| s == r.status)
            })
            .map(|r| r.count)
            .sum()
    }

    /// 429s sent, all services.
    pub fn throttled_count(&self) -> u64 {
        self.counters()
            .iter()
            .filter(|r| r.status == 429)
            .map(|r| r.count)
            .sum()
    }

    /// Peak concurrency and throttles observed per (app, mailbox).
    pub fn mailbox_loads(&self) -> Vec<MailboxLoad> {
        self.state.limits.mailbox_loads()
    }

    /// Graph requests per app as the simulator counted them (knob `graph_app_requests_per_10_s`): totals, 429s of
    /// the per-app limit, the most within any 10 s and per fixed 10 s window.
    pub fn app_loads(&self) -> Vec<crate::graph::app_budget::AppLoad> {
        self.state.app_budget.loads()
    }

    pub fn reset_counters(&self) {
        self.state.app_budget.reset();
        self.state.counters.reset();
        self.state.limits.reset();
    }

    // ---- knobs --------------------------------------------------------------------------------------------

    /// Invalidates every outstanding delta token of a tenant (directory and its mailboxes): next use gets 410.
    pub fn expire_delta_tokens(&self, tenant: &str) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        t.dir.write().delta_generation += 1;
        for mb in t.mailboxes.read().values() {
            mb.write().delta_generation += 1;
        }
        Ok(())
    }

    pub fn advance_clock(&self, by: Duration) {
        self.state.clock.advance(by);
    }

    pub fn knobs(&self) -> Knobs {
        self.state.knobs()
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        *self.state.knobs.write() = knobs;
    }

    /// Changes knobs in place: `control.update_knobs(|k| k.replication_delay_ms = 500)`.
    pub fn update_knobs(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut self.state.knobs.write());
    }

    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        self.state.faults.set(rules);
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.state.faults.add(rule);
    }

    pub fn faults(&self) -> Vec<FaultRule> {
        self.state.faults.list()
    }

    /// Replaces the app's application permissions in a tenant (e.g. revoke `Contacts.ReadWrite`).
    pub fn set_permissions(&self, tenant: &str, permissions: &[&str]) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        *t.app.permissions.write() = permissions.iter().map(|p| (*p).to_string()).collect();
        Ok(())
    }

    /// Removes the federated credential that lets the managed identity sign in as the tenant's app.
    pub fn set_federation_trusted(&self, tenant: &str, trusted: bool) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let issuer = format!(
            "{}{}/v2.0",
            self.state.base_url, self.state.identity.home_tenant_id
        );
        let mut feds = t.app.federations.write();
        feds.retain(|(i, s)| !(i == &issuer && s == &self.state.identity.principal_id));
        if trusted {
            feds.push((issuer, self.state.identity.principal_id.clone()));
        }
        Ok(())
    }

    /// The tenant's app certificate (PEM cert + key), as Key Vault serves it.
    pub async fn app_certificate_pem(&self, tenant: &str) -> Result<String, SimError> {
        let t = self.tenant(tenant)?;
        Ok(app_certificate(&t).await?.pem_with_key.clone())
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Seeds hand-made contacts in the default folder of every mailbox (the owner's own contacts).
pub(crate) fn seed_user_made_contacts(tenant: &Tenant, per_mailbox: usize) {
    let users: Vec<String> = tenant
        .dir
        .read()
        .users_with_mailbox()
        .filter(|u| u.rest_enabled)
        .map(|u| u.id.clone())
        .collect();
    for (i, uid) in users.iter().enumerate() {
        let mb = tenant.ensure_mailbox(uid);
        let mut mb = mb.write();
        let folder = mb.default_folder_id.clone();
        for n in 0..per_mailbox {
            let mut fields = Map::new();
            fields.insert("givenName".into(), json!(format!("Friend{n}")));
            fields.insert("surname".into(), json!(format!("Of{i}")));
            fields.insert("displayName".into(), json!(format!("Friend{n} Of{i}")));
            fields.insert("emailAddresses".into(), json!([{"name": format!("Friend{n}"), "address": format!("friend{n}.{i}@personal.example")}]));
            fields.insert(
                "mobilePhone".into(),
                json!(format!("+44 7700 9{:05}", (i * 31 + n) % 100_000)),
            );
            let _ = contacts_insert(&mut mb, &folder, fields, "2024-01-01T00:00:00Z", 0, true);
        }
    }
}
