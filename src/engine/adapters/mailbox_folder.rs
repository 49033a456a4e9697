//! [`MailboxFolderSource`]: the source port over one mailbox's contact folder (`[links.source] kind =
//! "mailbox_folder"`), for an export mailbox another organisation fills with its address book. The folder (and, with
//! `include_subfolders`, every folder under it) is read through Graph's per-folder contacts delta with immutable ids
//! (docs/microsoft-facts.md §12), so a contact moved between subfolders keeps its identity; each contact becomes a
//! [`SourceObject`] whose attributes carry the names the mapping uses for users (`mail`, `businessPhones`, `city`…),
//! so filters, mapping and templates apply unchanged. Its id is `mailbox:{immutable id}`: anchors are
//! `galbridge:{tenant id}:mailbox:{immutable id}` (lowercased, like every anchor).
//!
//! The checkpoint is one string holding each folder's delta link. An incremental read costs one delta request per
//! folder (plus one listing per folder to notice subfolders appearing or going, with `include_subfolders`); a folder
//! that went away, or a changed set of subfolders, makes it a full read. Who is hidden does not apply (empty answers);
//! group members cannot be asked (configuration refuses group scoping for this kind).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{MailboxFolderSource as FolderConfig, StateSettings};
use crate::engine::entry::{RemovedReason, SourceKind, SourceObject};
use crate::engine::ports::{PortError, SourceDirectory, SourceRead};
use crate::m365::TokenProvider;
use crate::m365::delegated::{FileTokenStore, RefreshTokenStore};
use crate::m365::vault_token_store::KeyVaultTokenStore;
use crate::m365::{DeltaStart, GraphClient, GraphError};

/// Prefix of the object id of a contact read from a mailbox folder (anchors: `galbridge:{tenant}:mailbox:{id}`).
pub const MAILBOX_ID_PREFIX: &str = "mailbox:";

/// Contact properties read (their user-attribute names are given by [`contact_as_source`]).
const CONTACT_SELECT: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "emailAddresses",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
    "businessPhones",
    "mobilePhone",
    "businessAddress",
];

/// What galbridge asks the tenant's administrator for when the mailbox refuses the app.
pub const MAILBOX_ACCESS_HINT: &str = "grant the app the Contacts.Read application permission and limit it to this \
     mailbox with RBAC for Applications (a management scope holding only the mailbox and New-ManagementRoleAssignment \
     -App … -Role \"Application Contacts.Read\" -CustomResourceScope …), or set sign_in = \"delegated\" and run \
     `galbridge login`: docs/app-registrations.md, \"A mailbox folder as a source\"";

/// Where the refresh token of a delegated sign-in (`sign_in = "delegated"`) is kept, chosen by where the state is:
/// with `[state] kind = "file"` a file in the state folder ([`FileTokenStore`]); with `kind = "table"` (a Functions
/// deployment, which has no lasting local folder) a secret in the configured `[key_vault]` ([`KeyVaultTokenStore`],
/// written with the platform identity). `vault` is the token provider when a `[key_vault]` is configured, `None`
/// otherwise; table state without one is refused with what to add. `galbridge login` and the runs both call this, so
/// they use the same store.
pub fn refresh_token_store(
    state: &StateSettings,
    vault: Option<&TokenProvider>,
    tenant: &str,
    mailbox: &str,
) -> Result<Arc<dyn RefreshTokenStore>, String> {
    match (state, vault) {
        (StateSettings::File(file), _) => Ok(Arc::new(FileTokenStore::in_state_folder(
            &file.path, tenant, mailbox,
        ))),
        (StateSettings::Table(_), Some(tokens)) => Ok(Arc::new(
            KeyVaultTokenStore::in_configured_vault(tokens.clone(), tenant, mailbox),
        )),
        (StateSettings::Table(_), None) => Err(format!(
            "sign_in = \"delegated\" (mailbox {mailbox} of tenant {tenant:?}) with [state] kind = \"table\" keeps its \
             refresh token in Key Vault, but there is no [key_vault] section (add one with its url, or set \
             GALBRIDGE_KEY_VAULT_URL), or use sign_in = \"app\" (RBAC for Applications)"
        )),
    }
}

/// One mailbox folder of one tenant, read as a source.
pub struct MailboxFolderReader {
    pub graph: GraphClient,
    /// The tenant's directory id (GUID), used in anchors.
    pub tenant_id: String,
    /// Configuration name of the tenant (errors).
    pub tenant_name: String,
    pub folder: FolderConfig,
    /// Immutable ids as read (case-sensitive), by the lowercase object id anchors carry: photos are read by them.
    pub read_ids: std::sync::Mutex<BTreeMap<String, String>>,
}

/// What the checkpoint's delta "link" holds: each folder's delta link, by folder id.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FolderCheckpoint {
    v: u8,
    /// The mailbox and folder path the links were read from: a link pointed elsewhere reads in full.
    #[serde(default)]
    source: String,
    folders: BTreeMap<String, String>,
}

impl MailboxFolderReader {
    fn failure(&self, what: &str, error: GraphError) -> PortError {
        if matches!(error, GraphError::DeltaExpired { .. }) {
            return PortError::DeltaExpired;
        }
        let mailbox = &self.folder.mailbox;
        let message = match error.status() {
            Some(401 | 403) => format!(
                "tenant {:?}: reading mailbox {mailbox} was refused ({error}): {MAILBOX_ACCESS_HINT}",
                self.tenant_name
            ),
            _ => format!(
                "tenant {:?}, mailbox {mailbox}: {what}: {error}",
                self.tenant_name
            ),
        };
        PortError::Failed {
            service: "graph".into(),
            message,
        }
    }

    /// The configured folder's id, found by path from the top-level folders.
    async fn resolve_folder(&self) -> Result<String, PortError> {
        let mailbox = &self.folder.mailbox;
        let mut candidates = self
            .graph
            .contact_folders(mailbox)
            .await
            .map_err(|e| self.failure("listing contact folders", e))?;
        let mut found = None;
        for (depth, name) in self.folder.folder.iter().enumerate() {
            if depth > 0 {
                let parent: &String = found.as_ref().ok_or_else(|| self.missing())?;
                candidates = self
                    .graph
                    .child_folders(mailbox, parent)
                    .await
                    .map_err(|e| self.failure("listing contact folders", e))?;
            }
            found = candidates
                .iter()
                .find(|folder| {
                    folder["displayName"]
                        .as_str()
                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
                })
                .and_then(|folder| folder["id"].as_str())
                .map(str::to_owned);
            if found.is_none() {
                return Err(self.missing());
            }
        }
        found.ok_or_else(|| self.missing())
    }

    /// `{mailbox}/{folder path}` (lowercase), kept in the checkpoint.
    fn source_key(&self) -> String {
        format!(
            "{}/{}{}",
            self.folder.mailbox,
            self.folder.folder_display(),
            if self.folder.include_subfolders {
                "/**"
            } else {
                ""
            }
        )
        .to_lowercase()
    }

    fn missing(&self) -> PortError {
        PortError::Failed {
            service: "graph".into(),
            message: format!(
                "tenant {:?}: mailbox {} has no contact folder {:?}",
                self.tenant_name,
                self.folder.mailbox,
                self.folder.folder_display()
            ),
        }
    }

    /// `root` and, with `include_subfolders`, every folder under it.
    async fn folder_tree(&self, root: &str) -> Result<Vec<String>, PortError> {
        let mut all = vec![root.to_owned()];
        if !self.folder.include_subfolders {
            return Ok(all);
        }
        let mut next = 0;
        while next < all.len() {
            let children = self
                .graph
                .child_folders(&self.folder.mailbox, &all[next])
                .await
                .map_err(|e| self.failure("listing subfolders", e))?;
            all.extend(
                children
                    .iter()
                    .filter_map(|folder| folder["id"].as_str().map(str::to_owned)),
            );
            next += 1;
        }
        Ok(all)
    }

    /// One folder's delta round from `start`: its entries and the delta link that ends it.
    async fn folder_delta(
        &self,
        folder_id: &str,
        start: &DeltaStart,
    ) -> Result<(Vec<Value>, String), PortError> {
        let mut stream = self
            .graph
            .folder_contacts_delta_immutable(&self.folder.mailbox, folder_id, CONTACT_SELECT, start)
            .map_err(|e| self.failure("reading the folder", e))?;
        let mut items = Vec::new();
        loop {
            let page = match stream.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                // A folder that went away since the last read: read everything again (a full read finds out).
                Err(error) if error.is_not_found() && *start != DeltaStart::Full => {
                    return Err(PortError::DeltaExpired);
                }
                Err(error) => return Err(self.failure("reading the folder", error)),
            };
            items.extend(page.items);
            if let Some(link) = page.delta_link {
                return Ok((items, link));
            }
        }
        Err(PortError::Failed {
            service: "graph".into(),
            message: format!(
                "mailbox {}: the folder's contacts delta ended without an @odata.deltaLink",
                self.folder.mailbox
            ),
        })
    }
}

#[async_trait]
impl SourceDirectory for MailboxFolderReader {
    async fn tenant_id(&self) -> Result<String, PortError> {
        Ok(self.tenant_id.clone())
    }

    async fn read_users(
        &self,
        delta_link: Option<&str>,
        _select: &[String],
    ) -> Result<SourceRead, PortError> {
        let previous = match delta_link {
            Some(text) => Some(
                serde_json::from_str::<FolderCheckpoint>(text)
                    .ok()
                    .filter(|previous| previous.source == self.source_key())
                    .ok_or(PortError::DeltaExpired)?,
            ),
            None => None,
        };
        // Incremental without subfolders: the stored folder id is enough (one request). Otherwise the folder tree
        // is listed; a changed set of folders is a full read (contacts of a removed subfolder are not in any delta).
        let folders: Vec<String> = match &previous {
            Some(previous) if !self.folder.include_subfolders && previous.folders.len() == 1 => {
                previous.folders.keys().cloned().collect()
            }
            _ => {
                let root = self.resolve_folder().await?;
                let tree = self.folder_tree(&root).await?;
                if let Some(previous) = &previous {
                    let known: BTreeSet<&String> = previous.folders.keys().collect();
                    if known != tree.iter().collect() {
                        return Err(PortError::DeltaExpired);
                    }
                }
                tree
            }
        };
        let mut live: BTreeMap<String, SourceObject> = BTreeMap::new();
        let mut removed: BTreeSet<String> = BTreeSet::new();
        let mut checkpoint = FolderCheckpoint {
            v: 1,
            source: self.source_key(),
            folders: BTreeMap::new(),
        };
        for folder in folders {
            let start = match previous.as_ref().and_then(|p| p.folders.get(&folder)) {
                Some(link) => DeltaStart::Resume(link.clone()),
                None => DeltaStart::Full,
            };
            let (items, link) = self.folder_delta(&folder, &start).await?;
            for item in &items {
                let Some(object) = contact_as_source(item) else {
                    continue;
                };
                if object.removed.is_some() {
                    removed.insert(object.id);
                } else {
                    if let Some(id) = item["id"].as_str() {
                        self.read_ids
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .insert(object.id.to_ascii_lowercase(), id.to_owned());
                    }
                    live.insert(object.id.clone(), object);
                }
            }
            checkpoint.folders.insert(folder, link);
        }
        // A contact moved between two folders read here is removed from one and added to the other under the same
        // immutable id: present anywhere wins.
        let mut objects: Vec<SourceObject> = live.into_values().collect();
        for id in removed {
            if !objects.iter().any(|object| object.id == id) {
                objects.push(SourceObject {
                    id,
                    attributes: Map::new(),
                    removed: Some(RemovedReason::Deleted),
                    kind: SourceKind::User,
                });
            }
        }
        Ok(SourceRead {
            objects,
            delta_link: serde_json::to_string(&checkpoint).unwrap_or_default(),
        })
    }

    async fn read_org_contacts(&self) -> Result<Vec<SourceObject>, PortError> {
        Ok(Vec::new())
    }

    async fn group_members(&self, _group_id: &str) -> Result<Vec<String>, PortError> {
        Err(PortError::Failed {
            service: "graph".into(),
            message: "a mailbox folder has no group members (group scoping is refused for this source kind)".into(),
        })
    }

    async fn read_user(
        &self,
        _id: &str,
        _select: &[String],
    ) -> Result<Option<SourceObject>, PortError> {
        Ok(None)
    }

    async fn hidden_ids(&self) -> Result<BTreeSet<String>, PortError> {
        Ok(BTreeSet::new())
    }

    fn keeps_photos(&self) -> bool {
        true
    }

    /// The contact's photo (`GET /users/{mailbox}/contacts/{immutable id}/photo/$value`), for contacts read by this
    /// port (photos are read for the contacts a run read: changed ones, or all on a full read).
    async fn photo(&self, id: &str) -> Result<Option<Vec<u8>>, PortError> {
        let known = self
            .read_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id.to_ascii_lowercase())
            .cloned();
        let Some(immutable_id) = known else {
            return Ok(None);
        };
        self.graph
            .contact_photo(&self.folder.mailbox, &immutable_id, true)
            .await
            .map_err(|e| self.failure("reading a contact's photo", e))
    }

    async fn hidden_flags(
        &self,
        _changed_since: Option<chrono::DateTime<chrono::Utc>>,
        _ids: &[String],
    ) -> Result<BTreeMap<String, bool>, PortError> {
        Ok(BTreeMap::new())
    }
}

/// A personal contact (Graph `contact`, read with immutable ids) as a source object with the attribute names of a
/// user: `emailAddresses` → `mail` (the first) and `otherMails`; `businessAddress` → `streetAddress`, `city`,
/// `state`, `postalCode`, `country`; the rest by the same name. `None` for an entry without an id.
pub fn contact_as_source(contact: &Value) -> Option<SourceObject> {
    let immutable_id = contact["id"].as_str().filter(|id| !id.is_empty())?;
    let id = format!("{MAILBOX_ID_PREFIX}{immutable_id}");
    if contact.get("@removed").is_some() {
        return Some(SourceObject {
            id,
            attributes: Map::new(),
            removed: Some(RemovedReason::Deleted),
            kind: SourceKind::User,
        });
    }
    let mut attributes = Map::new();
    attributes.insert("id".into(), json!(id));
    for name in [
        "displayName",
        "givenName",
        "surname",
        "jobTitle",
        "department",
        "companyName",
        "officeLocation",
        "mobilePhone",
    ] {
        if let Some(value) = contact[name].as_str().filter(|v| !v.is_empty()) {
            attributes.insert(name.into(), json!(value));
        }
    }
    let phones: Vec<Value> = contact["businessPhones"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|phone| phone.as_str().is_some_and(|p| !p.is_empty()))
        .cloned()
        .collect();
    if !phones.is_empty() {
        attributes.insert("businessPhones".into(), Value::Array(phones));
    }
    let addresses: Vec<&str> = contact["emailAddresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|email| email["address"].as_str())
        .filter(|address| !address.is_empty())
        .collect();
    if let Some((first, others)) = addresses.split_first() {
        attributes.insert("mail".into(), json!(first));
        if !others.is_empty() {
            attributes.insert("otherMails".into(), json!(others));
        }
    }
    for (from, to) in [
        ("street", "streetAddress"),
        ("city", "city"),
        ("state", "state"),
        ("postalCode", "postalCode"),
        ("countryOrRegion", "country"),
    ] {
        if let Some(value) = contact["businessAddress"][from]
            .as_str()
            .filter(|v| !v.is_empty())
        {
            attributes.insert(to.into(), json!(value));
        }
    }
    Some(SourceObject {
        id,
        attributes,
        removed: None,
        kind: SourceKind::User,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_reads_as_a_user_with_the_mapping_s_attribute_names() {
        let contact = json!({
            "id": "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0Aq",
            "displayName": "Ada Lovelace", "givenName": "Ada", "surname": "",
            "emailAddresses": [{"name": "Ada", "address": "ada@acme.example"}, {"address": "a.l@acme.example"}],
            "businessPhones": ["+44 20 7946 0000", ""], "mobilePhone": null,
            "businessAddress": {"street": "1 Main St", "city": "London", "countryOrRegion": "UK"},
            "categories": ["acme-export"]
        });
        let object = contact_as_source(&contact).expect("a contact");
        assert_eq!(object.id, "mailbox:AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0Aq");
        assert_eq!(object.text("mail").as_deref(), Some("ada@acme.example"));
        assert_eq!(
            object.text("otherMails").as_deref(),
            Some("a.l@acme.example")
        );
        assert_eq!(
            object.text("businessPhones").as_deref(),
            Some("+44 20 7946 0000")
        );
        assert_eq!(object.text("city").as_deref(), Some("London"));
        assert_eq!(object.text("country").as_deref(), Some("UK"));
        assert_eq!(object.text("surname"), None, "empty is absent");
        assert_eq!(object.text("mobilePhone"), None);
        assert!(object.removed.is_none());
        assert!(!object.carries_anchor());

        let removed = contact_as_source(&json!({"id": "X", "@removed": {"reason": "deleted"}}))
            .expect("a removal");
        assert_eq!(removed.removed, Some(RemovedReason::Deleted));
        assert_eq!(removed.id, "mailbox:X");
    }
}
