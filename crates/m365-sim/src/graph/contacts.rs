//! Personal contacts in mailboxes: contacts CRUD with categories and single-value extended properties
//! (`$expand=singleValueExtendedProperties($filter=id eq '…')`, `Any()` filters), and what every mailbox request
//! shares (`open`). Folders and per-folder delta: contact_folders.rs; photos: contact_photos.rs. Every request takes
//! an Outlook slot for (app, mailbox): 4 concurrent, 10,000 per 10 minutes (docs/microsoft-facts.md §4). Mailboxes that are
//! not REST-enabled answer `MailboxNotEnabledForRESTAPI`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use parking_lot::RwLock;
use serde_json::{Map, Value, json};

use super::contact_folders::resolve_folder;
use super::odata::{Expr, parse_filter, query_options};
use super::{Caller, bad_request, caller, collection, page_size, page_with_items};
use crate::model::mailbox::{Mailbox, PersonalContact};
use crate::model::user::MailboxKind;
use crate::model::{Tombstone, Tracked};
use crate::respond::{graph_error, json_bytes_response, no_content, throttled};
use crate::state::SimState;

pub(super) fn item_not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// Takes an Outlook concurrency slot for (app, mailbox) or answers 429 with Retry-After. The slot is held by the
/// request pipeline until the response is ready (modelled service time included), as a real request occupies it.
pub(crate) fn outlook_permit(
    state: &SimState,
    caller: &Caller,
    mailbox_id: &str,
) -> Result<(), Response> {
    let k = state.knobs.read();
    let (max, per10, retry) = (
        k.outlook_concurrency_per_mailbox,
        k.outlook_requests_per_10_min,
        k.retry_after_secs,
    );
    drop(k);
    state
        .limits
        .acquire_mailbox(
            &caller.app_id,
            mailbox_id,
            state.clock.now_ms(),
            max,
            per10,
            retry,
        )
        .map(crate::server::hold_permit)
        .map_err(|t| throttled(t.retry_after_secs, "Mailbox"))
}

/// Authenticates, checks Contacts.ReadWrite, resolves the mailbox and takes its Outlook slot.
pub(super) fn open(
    state: &SimState,
    headers: &HeaderMap,
    user_key: &str,
) -> Result<Arc<RwLock<Mailbox>>, Response> {
    let caller = caller(state, headers)?;
    caller.require(&["Contacts.ReadWrite", "Contacts.Read"])?;
    let (user_id, kind, rest) = {
        let dir = caller.tenant.dir.read();
        let u = super::users::find_user(&dir, user_key).ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                &format!("The requested user '{user_key}' is invalid."),
            )
        })?;
        (u.id.clone(), u.mailbox, u.rest_enabled)
    };
    if kind == MailboxKind::None {
        return Err(graph_error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ));
    }
    if !rest {
        // Quirk: some mailboxes answer MailboxNotEnabledForRESTAPI; galbridge must skip and report them (docs/microsoft-facts.md §3).
        return Err(graph_error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "REST API is not yet supported for this mailbox.",
        ));
    }
    // RBAC for Applications: an app scoped to some mailboxes is refused the others (docs/microsoft-facts.md §12).
    super::mailbox_scope::check(&caller, &user_id)?;
    outlook_permit(state, &caller, &user_id)?;
    Ok(caller.tenant.ensure_mailbox(&user_id))
}

pub(super) fn body_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "Cannot read the request body: it must be a JSON object.",
        )),
    }
}

/// Inserts a contact into a folder (shared by Graph and the control API); returns it as stored.
pub(crate) fn insert_contact<'m>(
    mb: &'m mut Mailbox,
    folder_id: &str,
    body: Map<String, Value>,
    now: &str,
    visible_from_ms: i64,
    user_made: bool,
) -> Result<&'m PersonalContact, String> {
    let id = mb.new_id("AAMk");
    let mut c = PersonalContact {
        id: id.clone(),
        parent_folder_id: folder_id.to_string(),
        created: now.into(),
        modified: now.into(),
        user_made,
        change_key: 1,
        ..PersonalContact::default()
    };
    c.apply(body)?;
    let version = mb.bump();
    let tracked = Tracked {
        value: c,
        version,
        created_version: version,
        prop_versions: Default::default(),
        visible_from_ms,
    };
    let stored = match mb.contacts.entry(id) {
        std::collections::btree_map::Entry::Vacant(v) => v.insert(tracked),
        std::collections::btree_map::Entry::Occupied(mut o) => {
            o.insert(tracked);
            o.into_mut()
        }
    };
    Ok(&stored.value)
}

/// The sim clock's time as Graph writes contact timestamps (`2024-01-01T00:00:00Z`).
pub(crate) fn contact_timestamp(now: chrono::DateTime<chrono::Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn remove_contact(mb: &mut Mailbox, id: &str) -> bool {
    let Some(t) = mb.contacts.remove(id) else {
        return false;
    };
    let version = mb.bump();
    if let Some(immutable) = t.value.immutable_id.clone() {
        mb.tombstone_immutable_ids.insert(id.to_string(), immutable);
    }
    mb.tombstones.insert(
        id.to_string(),
        (
            t.value.parent_folder_id,
            Tombstone {
                version,
                reason: "deleted",
            },
        ),
    );
    true
}

fn create(
    state: &SimState,
    headers: &HeaderMap,
    user: &str,
    folder: Option<&str>,
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
    let now = state.clock.now();
    let visible = now.timestamp_millis()
        + i64::try_from(state.knobs.read().consistency_delay_ms).unwrap_or(0);
    let mut mb = mb.write();
    let folder_id = match folder {
        None => mb.default_folder_id.clone(),
        Some(f) => match resolve_folder(&mb, f) {
            Some(id) => id,
            None => return item_not_found(),
        },
    };
    match insert_contact(
        &mut mb,
        &folder_id,
        body,
        &contact_timestamp(now),
        visible,
        false,
    ) {
        Ok(contact) => json_bytes_response(StatusCode::CREATED, contact.render_json()),
        Err(msg) => graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidProperty", &msg),
    }
}

pub(crate) async fn create_default(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Response {
    create(&state, &headers, &user, None, &body)
}

pub(crate) async fn create_in_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, fid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    create(&state, &headers, &user, Some(&fid), &body)
}

/// `$expand=singleValueExtendedProperties($filter=id eq '…')` → the id asked for (or all when no filter).
fn expand_filter(
    opts: &std::collections::HashMap<String, String>,
) -> Result<Option<Option<Expr>>, Response> {
    let Some(expand) = opts.get("expand") else {
        return Ok(None);
    };
    let lower = expand.to_ascii_lowercase();
    if !lower.starts_with("singlevalueextendedproperties") {
        return Err(bad_request(&format!("Unsupported $expand: {expand}")));
    }
    let inner = expand
        .find('(')
        .map(|i| &expand[i + 1..expand.len().saturating_sub(1)]);
    match inner {
        None => Ok(Some(None)),
        Some(inner) => {
            let f = inner
                .trim()
                .strip_prefix("$filter=")
                .or_else(|| inner.trim().strip_prefix("$Filter="))
                .ok_or_else(|| bad_request("Unsupported $expand options"))?;
            parse_filter(f)
                .map(|e| Some(Some(e)))
                .map_err(|e| bad_request(&format!("Invalid $expand filter: {e}")))
        }
    }
}

/// A contact's JSON, with the extended properties an `$expand` asked for.
fn render_with_expand(c: &PersonalContact, expand: &Option<Option<Expr>>) -> Vec<u8> {
    let Some(filter) = expand else {
        return c.render_json();
    };
    let items: Vec<Value> = c
        .extended
        .iter()
        .map(|(id, value)| json!({"id": id, "value": value}))
        .filter(|ep| filter.as_ref().is_none_or(|f| f.eval(ep)))
        .collect();
    // Quirk: Graph omits the property entirely when no extended property matches.
    if items.is_empty() {
        return c.render_json();
    }
    let json = serde_json::to_vec(&Value::Array(items)).unwrap_or_default();
    c.render_json_with(Some(("singleValueExtendedProperties", &json)))
}

fn list(
    state: &SimState,
    headers: &HeaderMap,
    user: &str,
    folder: Option<&str>,
    raw: Option<&str>,
) -> Response {
    let mb = match open(state, headers, user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let opts = query_options(raw);
    let top = match page_size(state, &opts, headers, 1000) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let expand = match expand_filter(&opts) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let filter = match opts.get("filter").map(|f| parse_filter(f)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQueryFilter",
                &format!("The filter expression is invalid: {e}"),
            );
        }
    };
    let skip: usize = opts.get("skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let now = state.clock.now_ms();
    let mb = mb.read();
    let folder_id = match folder {
        None => None,
        Some(f) => match resolve_folder(&mb, f) {
            Some(id) => Some(id),
            None => return item_not_found(),
        },
    };
    let mut matched = mb
        .contacts
        .values()
        .filter(|t| t.visible_from_ms <= now)
        .filter(|t| {
            folder_id
                .as_ref()
                .is_none_or(|f| t.value.parent_folder_id == *f)
        })
        .filter(|t| {
            filter
                .as_ref()
                .is_none_or(|f| f.eval(&Value::Object(t.value.render_for_filter())))
        });
    let items: Vec<Vec<u8>> = matched
        .by_ref()
        .skip(skip)
        .take(top)
        .map(|t| render_with_expand(&t.value, &expand))
        .collect();
    let more = matched.next().is_some();
    let next = more.then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &opts {
            if k != "skip" && k != "top" {
                q.append_pair(&format!("${k}"), v);
            }
        }
        q.append_pair("$top", &top.to_string());
        q.append_pair("$skip", &(skip + top).to_string());
        let path = match folder {
            Some(f) => format!("/v1.0/users/{user}/contactFolders/{f}/contacts"),
            None => format!("/v1.0/users/{user}/contacts"),
        };
        state.url(&format!("{path}?{}", q.finish()))
    });
    json_bytes_response(
        StatusCode::OK,
        page_with_items(
            collection(state, "users('x')/contacts", Vec::new(), next),
            &items,
        ),
    )
}

pub(crate) async fn list_default(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    list(&state, &headers, &user, None, raw.as_deref())
}

pub(crate) async fn list_in_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, fid)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    list(&state, &headers, &user, Some(&fid), raw.as_deref())
}

fn get(
    state: &SimState,
    headers: &HeaderMap,
    user: &str,
    cid: &str,
    raw: Option<&str>,
) -> Response {
    let mb = match open(state, headers, user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let expand = match expand_filter(&query_options(raw)) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let mb = mb.read();
    match mb.contacts.get(cid) {
        Some(t) => json_bytes_response(StatusCode::OK, render_with_expand(&t.value, &expand)),
        None => item_not_found(),
    }
}

pub(crate) async fn get_contact(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, cid)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    get(&state, &headers, &user, &cid, raw.as_deref())
}

pub(crate) async fn get_contact_in_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, _fid, cid)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    get(&state, &headers, &user, &cid, raw.as_deref())
}

fn patch(state: &SimState, headers: &HeaderMap, user: &str, cid: &str, body: &Bytes) -> Response {
    let mb = match open(state, headers, user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = match body_object(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = contact_timestamp(state.clock.now());
    let mut mb = mb.write();
    let version = mb.seq + 1;
    let Some(t) = mb.contacts.get_mut(cid) else {
        return item_not_found();
    };
    let mut updated = t.value.clone();
    if let Err(msg) = updated.apply(body) {
        return graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidProperty", &msg);
    }
    updated.change_key += 1;
    updated.modified = now;
    let rendered = updated.render_json();
    t.value = updated;
    t.version = version;
    mb.seq = version;
    json_bytes_response(StatusCode::OK, rendered)
}

pub(crate) async fn patch_contact(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, cid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    patch(&state, &headers, &user, &cid, &body)
}

pub(crate) async fn patch_contact_in_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, _fid, cid)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    patch(&state, &headers, &user, &cid, &body)
}

fn delete(state: &SimState, headers: &HeaderMap, user: &str, cid: &str) -> Response {
    let mb = match open(state, headers, user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if remove_contact(&mut mb.write(), cid) {
        no_content()
    } else {
        item_not_found()
    }
}

pub(crate) async fn delete_contact(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, cid)): Path<(String, String)>,
) -> Response {
    delete(&state, &headers, &user, &cid)
}

pub(crate) async fn delete_contact_in_folder(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, _fid, cid)): Path<(String, String, String)>,
) -> Response {
    delete(&state, &headers, &user, &cid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn contact_timestamps_have_whole_seconds_and_a_z() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T13:59:07.123456789+00:00")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(super::contact_timestamp(t), "2026-11-23T13:59:07Z");
        assert_eq!(
            super::contact_timestamp(t),
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
    }
}
