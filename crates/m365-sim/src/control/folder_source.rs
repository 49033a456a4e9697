//! Control powers for a mailbox folder read as a source: move a contact to another folder (Outlook gives it a new
//! regular id, its immutable id stays), change or delete a contact by hand, and scope the tenant's app to some
//! mailboxes (RBAC for Applications, docs/microsoft-facts.md §12).

use serde_json::Value;

use super::Control;
use crate::SimError;
use crate::graph::contacts_remove;
use crate::model::Tracked;

impl Control {
    /// Moves contact `contact_id` (its regular id) of `user_id`'s mailbox into folder `folder_id`. The contact gets
    /// a new regular id and keeps its immutable id; the old folder's delta reports it removed, the new one's added.
    /// Returns the new regular id.
    pub fn move_contact(
        &self,
        tenant: &str,
        user_id: &str,
        contact_id: &str,
        folder_id: &str,
    ) -> Result<String, SimError> {
        let t = self.tenant(tenant)?;
        let mb = t
            .mailbox(user_id)
            .ok_or_else(|| SimError::NotFound(format!("mailbox {user_id}")))?;
        let mut mb = mb.write();
        if !mb.folders.contains_key(folder_id) {
            return Err(SimError::NotFound(format!("folder {folder_id}")));
        }
        let mut contact = mb
            .contacts
            .get(contact_id)
            .ok_or_else(|| SimError::NotFound(format!("contact {contact_id}")))?
            .value
            .clone();
        let immutable: Box<str> = contact.immutable_id().into();
        contacts_remove(&mut mb, contact_id);
        let new_id = mb.new_id("AAMk");
        contact.id = new_id.clone();
        contact.parent_folder_id = folder_id.to_owned();
        contact.immutable_id = Some(immutable);
        contact.change_key += 1;
        let version = mb.bump();
        mb.contacts.insert(
            new_id.clone(),
            Tracked {
                value: contact,
                version,
                created_version: version,
                prop_versions: Default::default(),
                visible_from_ms: 0,
            },
        );
        Ok(new_id)
    }

    /// Changes fields of a contact as its owner would in Outlook (`null` clears a field).
    pub fn update_mailbox_contact(
        &self,
        tenant: &str,
        user_id: &str,
        contact_id: &str,
        fields: Value,
    ) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let Value::Object(fields) = fields else {
            return Err(SimError::Refused(
                "contact fields must be a JSON object".into(),
            ));
        };
        let mb = t
            .mailbox(user_id)
            .ok_or_else(|| SimError::NotFound(format!("mailbox {user_id}")))?;
        let mut mb = mb.write();
        let version = mb.bump();
        let tracked = mb
            .contacts
            .get_mut(contact_id)
            .ok_or_else(|| SimError::NotFound(format!("contact {contact_id}")))?;
        tracked.value.apply(fields).map_err(SimError::Refused)?;
        tracked.value.change_key += 1;
        tracked.version = version;
        Ok(())
    }

    /// Deletes a contact as its owner would in Outlook.
    pub fn delete_mailbox_contact(
        &self,
        tenant: &str,
        user_id: &str,
        contact_id: &str,
    ) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let mb = t
            .mailbox(user_id)
            .ok_or_else(|| SimError::NotFound(format!("mailbox {user_id}")))?;
        if contacts_remove(&mut mb.write(), contact_id) {
            Ok(())
        } else {
            Err(SimError::NotFound(format!("contact {contact_id}")))
        }
    }

    /// RBAC for Applications: limits the tenant's app to the mailboxes of these users (ids or UPNs); `None` lifts
    /// the limit. Other mailboxes answer 403 `ErrorAccessDenied`.
    pub fn set_app_mailbox_scope(
        &self,
        tenant: &str,
        mailboxes: Option<&[&str]>,
    ) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let scope = match mailboxes {
            None => None,
            Some(keys) => {
                let dir = t.dir.read();
                let mut ids = std::collections::BTreeSet::new();
                for key in keys {
                    let user = crate::graph::find_user(&dir, key)
                        .ok_or_else(|| SimError::NotFound(format!("user {key}")))?;
                    ids.insert(user.id.clone());
                }
                Some(ids)
            }
        };
        *t.app.mailbox_scope.write() = scope;
        Ok(())
    }
}

impl Control {
    /// User codes of device sign-ins waiting in `tenant` (what `galbridge login` shows the operator).
    pub fn pending_device_codes(&self, tenant: &str) -> Result<Vec<String>, SimError> {
        Ok(self.tenant(tenant)?.delegated.pending_user_codes())
    }

    /// Signs `user` (id or UPN) in for the device code showing `user_code`, as the user would in a browser.
    pub fn approve_device_code(
        &self,
        tenant: &str,
        user_code: &str,
        user: &str,
    ) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let user_id = crate::graph::find_user(&t.dir.read(), user)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::NotFound(format!("user {user}")))?;
        if t.delegated.approve(user_code, &user_id) {
            Ok(())
        } else {
            Err(SimError::NotFound(format!("device code {user_code}")))
        }
    }

    /// Revokes every refresh token of `user` (id or UPN), as "revoke sessions" or a password reset does; returns how
    /// many were live.
    pub fn revoke_sign_ins(&self, tenant: &str, user: &str) -> Result<usize, SimError> {
        let t = self.tenant(tenant)?;
        let user_id = crate::graph::find_user(&t.dir.read(), user)
            .map(|u| u.id.clone())
            .ok_or_else(|| SimError::NotFound(format!("user {user}")))?;
        Ok(t.delegated.revoke(&user_id))
    }

    /// Refresh tokens redeemed in `tenant` so far.
    pub fn refresh_tokens_redeemed(&self, tenant: &str) -> Result<u64, SimError> {
        Ok(self.tenant(tenant)?.delegated.redeemed())
    }

    /// Every value written to Key Vault secret `name` with `PUT /secrets/{name}`, oldest first (empty when none).
    pub fn vault_secret_versions(&self, name: &str) -> Vec<String> {
        self.state.vault_secrets.values(name)
    }
}

impl Control {
    /// Creates a contact folder in `user_id`'s mailbox as its owner would, at the top level or under `parent` (a
    /// folder id); returns its id (an existing folder of that name there is returned as is).
    pub fn create_contact_folder(
        &self,
        tenant: &str,
        user_id: &str,
        parent: Option<&str>,
        name: &str,
    ) -> Result<String, SimError> {
        let t = self.tenant(tenant)?;
        let mb = t.ensure_mailbox(user_id);
        let mut mb = mb.write();
        let root = match parent {
            Some(parent) if mb.folders.contains_key(parent) => parent.to_owned(),
            Some(parent) => return Err(SimError::NotFound(format!("folder {parent}"))),
            None => mb.root_folder_id.clone(),
        };
        if let Some(existing) = mb
            .folders
            .values()
            .find(|f| f.parent_folder_id == root && f.display_name.eq_ignore_ascii_case(name))
        {
            return Ok(existing.id.clone());
        }
        let id = mb.new_id("AQMk");
        mb.folders.insert(
            id.clone(),
            crate::model::mailbox::ContactFolder {
                id: id.clone(),
                display_name: name.to_owned(),
                parent_folder_id: root,
            },
        );
        Ok(id)
    }
}
