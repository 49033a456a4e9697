//! Microsoft Graph v1.0: routing, caller authentication (token audience graph.microsoft.com, bound to the tenant's
//! galbridge app), permission checks, and the response helpers the resource modules share.

pub(crate) mod app_budget;
pub(crate) mod batch;
pub(crate) mod budget;
mod contact_folders;
mod contact_photos;
pub(crate) mod contacts;
mod delta;
mod groups;
mod guest_users;
mod invitations;
mod mailbox_scope;
pub(crate) mod odata;
mod org;
pub(crate) mod subscriptions;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::auth::AUDIENCE_GRAPH;
use crate::auth::tokens::bearer;
use crate::respond::graph_error;
use crate::state::SimState;
use crate::tenant::Tenant;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1.0/users", get(users::list))
        .route("/v1.0/users/delta", get(delta::users_delta))
        .route(
            "/v1.0/users/{id}",
            get(users::get_one)
                .patch(users::patch)
                .delete(guest_users::delete),
        )
        .route("/v1.0/users/{id}/manager", get(users::manager))
        .route("/v1.0/users/{id}/photo/$value", get(users::photo))
        .route(
            "/v1.0/users/{id}/contactFolders",
            get(contact_folders::list_folders).post(contact_folders::create_folder),
        )
        .route(
            "/v1.0/users/{id}/contactFolders/{fid}",
            get(contact_folders::get_folder).delete(contact_folders::delete_folder),
        )
        .route(
            "/v1.0/users/{id}/contactFolders/{fid}/childFolders",
            get(contact_folders::list_child_folders).post(contact_folders::create_child_folder),
        )
        .route(
            "/v1.0/users/{id}/contactFolders/{fid}/contacts",
            get(contacts::list_in_folder).post(contacts::create_in_folder),
        )
        .route(
            "/v1.0/users/{id}/contactFolders/{fid}/contacts/delta",
            get(contact_folders::folder_delta),
        )
        .route(
            "/v1.0/users/{id}/contacts",
            get(contacts::list_default).post(contacts::create_default),
        )
        .route(
            "/v1.0/users/{id}/contacts/{cid}",
            get(contacts::get_contact)
                .patch(contacts::patch_contact)
                .delete(contacts::delete_contact),
        )
        .route(
            "/v1.0/users/{id}/contacts/{cid}/photo/$value",
            get(contact_photos::get_photo).put(contact_photos::put_photo),
        )
        .route(
            "/v1.0/users/{id}/contactFolders/{fid}/contacts/{cid}",
            get(contacts::get_contact_in_folder)
                .patch(contacts::patch_contact_in_folder)
                .delete(contacts::delete_contact_in_folder),
        )
        .route("/v1.0/contacts", get(org::list).post(org::write_refused))
        .route("/v1.0/contacts/delta", get(delta::contacts_delta))
        .route(
            "/v1.0/contacts/{id}",
            get(org::get_one)
                .patch(org::write_refused_id)
                .delete(org::write_refused_id),
        )
        .route("/v1.0/groups/delta", get(groups::groups_delta))
        .route("/v1.0/groups/{id}", get(groups::get_one))
        .route(
            "/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user",
            get(org::transitive_users),
        )
        .route(
            "/v1.0/groups/{id}/transitiveMembers",
            get(org::transitive_users),
        )
        .route("/v1.0/invitations", post(invitations::invite))
        .route("/v1.0/$batch", post(batch::batch))
        .route(
            "/v1.0/subscriptions",
            post(subscriptions::create).get(subscriptions::list),
        )
        .route(
            "/v1.0/subscriptions/{id}",
            get(subscriptions::get_one)
                .patch(subscriptions::renew)
                .delete(subscriptions::delete),
        )
}

/// An authenticated Graph caller: the tenant its token is for and the app it is.
pub(crate) struct Caller {
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) app_id: String,
    /// The signed-in user of a delegated token (reaches that user's own mailbox only).
    pub(crate) user: Option<String>,
}

/// Checks the bearer token (signature, expiry, audience) and that it is the tenant's galbridge app.
pub(crate) fn caller(state: &SimState, headers: &HeaderMap) -> Result<Caller, Response> {
    let unauthorized = |msg: &str| {
        let mut r = graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", msg);
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\""),
        );
        r
    };
    let token = bearer(headers).ok_or_else(|| unauthorized("Access token is empty."))?;
    let claims = state
        .signer
        .verify(token, AUDIENCE_GRAPH, state.clock.now_secs())
        .map_err(|e| unauthorized(&e.to_string()))?;
    let tenant = state
        .tenant(&claims.tid)
        .cloned()
        .ok_or_else(|| unauthorized("Access token validation failure. Invalid tenant."))?;
    if claims.appid != tenant.app.client_id {
        return Err(graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ));
    }
    Ok(Caller {
        tenant,
        app_id: claims.appid.clone(),
        user: (claims.idtyp == "user").then(|| claims.oid.clone()),
    })
}

impl Caller {
    /// 403 unless the app holds one of `any_of` (checked at request time against the tenant's current consent).
    pub(crate) fn require(&self, any_of: &[&str]) -> Result<(), Response> {
        if self.tenant.app.has_permission(any_of) {
            Ok(())
        } else {
            Err(graph_error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ))
        }
    }
}

/// A collection response: `value`, and `@odata.nextLink` when there is more.
pub(crate) fn collection(
    state: &SimState,
    context: &str,
    items: Vec<Value>,
    next_link: Option<String>,
) -> Value {
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(state.url(&format!("/v1.0/$metadata#{context}"))),
    );
    if let Some(next) = next_link {
        m.insert("@odata.nextLink".into(), json!(next));
    }
    m.insert("value".into(), Value::Array(items));
    Value::Object(m)
}

/// A collection or delta page whose items are already serialised JSON objects: `page` is the page built as usual
/// with an empty `value`, the items are spliced in. Same bytes as serialising the page with the items parsed in.
pub(crate) fn page_with_items(page: Value, items: &[Vec<u8>]) -> Vec<u8> {
    let Value::Object(mut head) = page else {
        return serde_json::to_vec(&page).unwrap_or_default();
    };
    head.remove("value");
    // `value` is written last, as a sorted map writes it, only if every other key sorts before it (the `@odata.*`
    // annotations do); otherwise the items are parsed back in.
    if head.keys().any(|k| k.as_str() > "value") {
        let values = items
            .iter()
            .map(|i| serde_json::from_slice(i).unwrap_or(Value::Null))
            .collect();
        head.insert("value".into(), Value::Array(values));
        return serde_json::to_vec(&Value::Object(head)).unwrap_or_default();
    }
    let had_keys = !head.is_empty();
    let mut out = serde_json::to_vec(&Value::Object(head)).unwrap_or_default();
    let items_len: usize = items.iter().map(|i| i.len() + 1).sum();
    out.reserve(items_len + 12);
    out.pop(); // the closing brace
    if had_keys {
        out.push(b',');
    }
    out.extend_from_slice(b"\"value\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out
}

/// `$top` within Graph's bounds for a resource, defaulting to the knob's page size.
pub(crate) fn page_size(
    state: &SimState,
    opts: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    max: usize,
) -> Result<usize, Response> {
    if let Some(top) = opts.get("top") {
        return match top.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &format!(
                    "Invalid page size specified: '{top}'. Must be between 1 and {max} inclusive."
                ),
            )),
        };
    }
    if let Some(n) =
        prefer_value(headers, "odata.maxpagesize").and_then(|v| v.parse::<usize>().ok())
    {
        return Ok(n.clamp(1, max));
    }
    Ok(state.knobs.read().default_page_size.clamp(1, max))
}

/// A `Prefer` header preference's value (`odata.maxpagesize=50`) or presence (`return=minimal`).
pub(crate) fn prefer_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            let p = p.trim();
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"').to_string())
        })
}

/// Opaque page/delta state carried in `$skiptoken` / `$deltatoken`.
pub(crate) fn encode_token<T: serde::Serialize>(value: &T) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(value).unwrap_or_default())
}

pub(crate) fn decode_token<T: serde::de::DeserializeOwned>(token: &str) -> Option<T> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

pub(crate) fn bad_request(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

pub(crate) fn not_found(what: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

pub(crate) use contacts::insert_contact as contacts_insert;
pub(crate) use contacts::remove_contact as contacts_remove;
pub(crate) use users::find_user;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_with_serialised_items_are_the_pages_serialised_whole() {
        let items = [
            json!({"id": "1", "b": [1, 2]}),
            json!({"id": "2\"", "@removed": {"reason": "deleted"}}),
        ];
        let bytes: Vec<Vec<u8>> = items
            .iter()
            .map(|i| serde_json::to_vec(i).unwrap())
            .collect();
        let heads = [
            json!({"@odata.context": "https://x/v1.0/$metadata#c", "@odata.nextLink": "https://x/n?$skip=2"}),
            json!({"@odata.context": "c", "@odata.deltaLink": "d"}),
            json!({}),
            // A key that sorts after `value` takes the slow road and still comes out right.
            json!({"@odata.context": "c", "zzz": 1}),
        ];
        for head in heads {
            for n in [0, 1, 2] {
                let mut whole = head.clone();
                whole["value"] = Value::Array(items[..n].to_vec());
                let mut page = head.clone();
                page["value"] = json!([]);
                assert_eq!(
                    String::from_utf8(page_with_items(page, &bytes[..n])).unwrap(),
                    serde_json::to_string(&whole).unwrap(),
                    "{head} with {n} items"
                );
            }
        }
    }
}
