//! Contact folders in mailboxes: list, child folders, get (the well-known name `contacts` is the default folder),
//! create, delete (with their contacts), and per-folder contacts delta. Every request takes an Outlook slot for
//! (app, mailbox) through `contacts::open`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::contacts::{body_object, item_not_found, open, remove_contact};
use super::delta::{
    DeltaCursor, DeltaEntry, Start, delta_body, expired, page, round_end, start_of,
};
use super::odata::query_options;
use super::{bad_request, collection, page_with_items};
use crate::model::Tracked;
use crate::model::mailbox::{ContactFolder, Mailbox, PersonalContact};
use crate::respond::{graph_error, json_bytes_response, json_response, no_content};
use crate::state::SimState;

pub(crate) async fn list_folders(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    let mb = match open(&state, &headers, &user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mb = mb.read();
    let items = mb
        .folders
        .values()
        .filter(|f| f.parent_folder_id == mb.root_folder_id)
        .map(|f| Value::Object(f.render()))
        .collect();
    json_response(
        StatusCode::OK,
        &collection(&state, "users('x')/contactFolders", items, None),
    )
}

pub(crate) async fn list_child_folders(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, fid)): Path<(String, String)>,
) -> Response {
    let mb = match open(&state, &headers, &user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mb = mb.read();
    if !mb.folders.contains_key(&fid) {
        return item_not_found();
    }
    let items = mb
        .folders
        .values()
        .filter(|f| f.parent_folder_id == fid)
        .map(|f| Value::Object(f.render()))
        .collect();
    json_response(
        StatusCode::OK,
        &collection(
            &state,
            "users('x')/contactFolders('x')/childFolders",
            items,
            None,
        ),
    )
}

pub(crate) async fn get_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, fid)): Path<(String, String)>,
) -> Response {
    let mb = match open(&state, &headers, &user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mb = mb.read();
    match resolve_folder(&mb, &fid).and_then(|id| mb.folders.get(&id)) {
        Some(f) => json_response(StatusCode::OK, &Value::Object(f.render())),
        None => item_not_found(),
    }
}

pub(super) fn resolve_folder(mb: &Mailbox, fid: &str) -> Option<String> {
    // Quirk: the well-known name "contacts" addresses the default folder.
    if fid.eq_ignore_ascii_case("contacts") {
        return Some(mb.default_folder_id.clone());
    }
    mb.folders.contains_key(fid).then(|| fid.to_string())
}

fn make_folder(
    state: &SimState,
    headers: &HeaderMap,
    user: &str,
    parent: Option<&str>,
    body: &Bytes,
) -> Response {
    let mb = match open(state, headers, user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = match body_object(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(name) = body
        .get("displayName")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
    else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The folder displayName is required.",
        );
    };
    let mut mb = mb.write();
    let parent_id = match parent {
        None => mb.root_folder_id.clone(),
        Some(p) => match resolve_folder(&mb, p) {
            Some(id) => id,
            None => return item_not_found(),
        },
    };
    if mb
        .folders
        .values()
        .any(|f| f.parent_folder_id == parent_id && f.display_name.eq_ignore_ascii_case(name))
    {
        return graph_error(
            StatusCode::CONFLICT,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        );
    }
    let id = mb.new_id("AQMk");
    let folder = ContactFolder {
        id: id.clone(),
        display_name: name.to_string(),
        parent_folder_id: parent_id,
    };
    let rendered = folder.render();
    mb.folders.insert(id, folder);
    json_response(StatusCode::CREATED, &Value::Object(rendered))
}

pub(crate) async fn create_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Response {
    make_folder(&state, &headers, &user, None, &body)
}

pub(crate) async fn create_child_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, fid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    make_folder(&state, &headers, &user, Some(&fid), &body)
}

pub(crate) async fn delete_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, fid)): Path<(String, String)>,
) -> Response {
    let mb = match open(&state, &headers, &user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut mb = mb.write();
    if fid == mb.default_folder_id || !mb.folders.contains_key(&fid) {
        return item_not_found();
    }
    mb.folders.remove(&fid);
    let doomed: Vec<String> = mb
        .contacts
        .iter()
        .filter(|(_, t)| t.value.parent_folder_id == fid)
        .map(|(id, _)| id.clone())
        .collect();
    for id in doomed {
        remove_contact(&mut mb, &id);
    }
    no_content()
}

pub(crate) async fn folder_delta(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, fid)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let mb = match open(&state, &headers, &user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let opts = query_options(raw.as_deref());
    let size = super::prefer_value(&headers, "odata.maxpagesize")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(state.knobs.read().default_page_size)
        .clamp(1, 1000);
    let now = state.clock.now_ms();
    let mb = mb.read();
    let Some(folder_id) = resolve_folder(&mb, &fid) else {
        return item_not_found();
    };
    let path = format!("/v1.0/users/{user}/contactFolders/{fid}/contacts/delta");
    let visible = |_: &str, t: &Tracked<PersonalContact>| t.visible_from_ms <= now;
    let cursor = match start_of(&opts) {
        Start::Invalid => return bad_request("The delta token is not valid."),
        // `$deltaToken=latest`: no contacts, just a delta link from now (Graph's delta query overview).
        Start::Latest => {
            let now_seq = round_end(mb.seq, 0, &mb.contacts, visible);
            DeltaCursor {
                from: now_seq,
                to: now_seq,
                after: None,
                generation: mb.delta_generation,
                issued_ms: now,
                select: None,
                replay: None,
            }
        }
        Start::Fresh => DeltaCursor {
            from: 0,
            to: round_end(mb.seq, 0, &mb.contacts, visible),
            after: None,
            generation: mb.delta_generation,
            issued_ms: now,
            select: None,
            replay: None,
        },
        Start::Continue(c, is_delta) => {
            if c.generation != mb.delta_generation {
                return expired(&state, &path);
            }
            if is_delta {
                DeltaCursor {
                    from: c.to,
                    to: round_end(mb.seq, c.to, &mb.contacts, visible),
                    after: None,
                    issued_ms: now,
                    ..c
                }
            } else {
                c
            }
        }
    };
    let tombs = mb
        .tombstones
        .iter()
        .filter(|(_, (f, _))| *f == folder_id)
        .map(|(id, (_, t))| (id, *t));
    let (entries, last) = page(&mb.contacts, tombs, &cursor, size, |c| {
        c.parent_folder_id == folder_id
    });
    // `Prefer: IdType="ImmutableId"` applies to this request only (docs/microsoft-facts.md §12).
    let immutable = super::prefer_value(&headers, "IdType")
        .is_some_and(|v| v.eq_ignore_ascii_case("ImmutableId"));
    let values: Vec<Vec<u8>> = entries
        .into_iter()
        .map(|e| match e {
            DeltaEntry::Live(t) if immutable && t.value.immutable_id.is_some() => {
                let mut contact = t.value.clone();
                contact.id = t.value.immutable_id().to_owned();
                contact.render_json()
            }
            DeltaEntry::Live(t) => t.value.render_json(),
            DeltaEntry::Removed(id, reason) => {
                let id = match mb.tombstone_immutable_ids.get(id) {
                    Some(immutable_id) if immutable => immutable_id,
                    _ => id,
                };
                serde_json::to_vec(&json!({"id": id, "@removed": {"reason": reason}}))
                    .unwrap_or_default()
            }
        })
        .collect();
    let (next, delta) = match last {
        Some(after) => (
            Some(DeltaCursor {
                after: Some(after),
                ..cursor
            }),
            None,
        ),
        None => (
            None,
            Some(DeltaCursor {
                from: cursor.to,
                after: None,
                ..cursor
            }),
        ),
    };
    json_bytes_response(
        StatusCode::OK,
        page_with_items(
            delta_body(
                &state,
                "Collection(contact)",
                &path,
                Vec::new(),
                next,
                delta,
            ),
            &values,
        ),
    )
}
