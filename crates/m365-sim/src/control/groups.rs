//! Control of groups: add a group (mail-enabled or not, hidden or not), change it with a Graph-style patch (plus
//! Exchange's `hiddenFromAddressLists` and `members`), delete it, list every group with its sim fields. Powers
//! `Control::{add_group, update_group, delete_group, groups}` and `/_control/tenants/{t}/groups…`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::Control;
use super::http::{ctl, done, parse};
use crate::SimError;
use crate::model::Group;
use crate::state::SimState;

impl Control {
    /// Adds a group. `fields` uses Graph's names (`displayName` required; `mail`, `mailEnabled`, `securityEnabled`,
    /// `mailNickname`, `groupTypes`) plus `hiddenFromAddressLists` and `members`. A group with a `mail` is
    /// mail-enabled unless `mailEnabled` says otherwise. Returns the new id.
    pub fn add_group(&self, tenant: &str, fields: Value) -> Result<String, SimError> {
        let t = self.tenant(tenant)?;
        let Value::Object(mut fields) = fields else {
            return Err(SimError::Refused(
                "group fields must be a JSON object".into(),
            ));
        };
        if !fields.get("displayName").is_some_and(Value::is_string) {
            return Err(SimError::Refused("displayName is required".into()));
        }
        let id = match fields.remove("id") {
            Some(Value::String(id)) => id,
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let mut group = Group {
            id: id.clone(),
            created_date_time: self.state.clock.stamp(),
            ..Group::default()
        };
        if fields.get("mail").is_some_and(Value::is_string) && !fields.contains_key("mailEnabled") {
            fields.insert("mailEnabled".into(), Value::Bool(true));
        }
        group.apply_patch(&fields).map_err(SimError::Refused)?;
        if group.mail_nickname.is_none() {
            group.mail_nickname = group
                .mail
                .as_deref()
                .and_then(|m| m.split('@').next())
                .map(str::to_string);
        }
        let mut dir = t.dir.write();
        if dir.groups.contains_key(&id) {
            return Err(SimError::Refused(format!("group {id} exists")));
        }
        let visible = self.state.clock.now_ms()
            + i64::try_from(self.state.knobs.read().consistency_delay_ms).unwrap_or(0);
        dir.insert_group(group, visible);
        Ok(id)
    }

    /// Changes a group. `hiddenFromAddressLists` is Exchange's flag: it moves the recipient's WhenChangedUTC and
    /// is no groups/delta change; `members` is not tracked by groups/delta either.
    pub fn update_group(&self, tenant: &str, id: &str, patch: Value) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        let Value::Object(patch) = patch else {
            return Err(SimError::Refused("patch must be a JSON object".into()));
        };
        let stamp = self.state.clock.stamp();
        let mut dir = t.dir.write();
        if !dir.groups.contains_key(id) {
            return Err(SimError::NotFound(format!("group {id}")));
        }
        dir.patch_group(id, &patch, &stamp)
            .map_err(SimError::Refused)
    }

    /// Deletes a group: `soft` keeps it restorable (delta says `changed`), else `deleted`.
    pub fn delete_group(&self, tenant: &str, id: &str, soft: bool) -> Result<(), SimError> {
        let t = self.tenant(tenant)?;
        if t.dir.write().delete_group(id, soft) {
            Ok(())
        } else {
            Err(SimError::NotFound(format!("group {id}")))
        }
    }

    /// Every group with every field (the Graph properties plus `members` and `hiddenFromAddressLists`).
    pub fn groups(&self, tenant: &str) -> Result<Vec<Value>, SimError> {
        let t = self.tenant(tenant)?;
        let dir = t.dir.read();
        Ok(dir
            .groups
            .values()
            .map(|g| serde_json::to_value(&g.value).unwrap_or(Value::Null))
            .collect())
    }
}

pub(super) async fn list(State(s): State<Arc<SimState>>, Path(t): Path<String>) -> Response {
    done(ctl(&s).groups(&t))
}

pub(super) async fn add(
    State(s): State<Arc<SimState>>,
    Path(t): Path<String>,
    body: Bytes,
) -> Response {
    match parse::<Value>(&body) {
        Ok(v) => done(ctl(&s).add_group(&t, v).map(|id| json!({"id": id}))),
        Err(r) => r,
    }
}

pub(super) async fn update(
    State(s): State<Arc<SimState>>,
    Path((t, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match parse::<Value>(&body) {
        Ok(v) => done(ctl(&s).update_group(&t, &id, v)),
        Err(r) => r,
    }
}

pub(super) async fn delete(
    State(s): State<Arc<SimState>>,
    Path((t, id)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let soft = q.get("soft").is_some_and(|v| v == "true");
    done(ctl(&s).delete_group(&t, &id, soft))
}
