//! Contact photos: `PUT`/`GET /users/{id}/contacts/{cid}/photo/$value` (JPEG, at most 4 MB).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::contacts::{item_not_found, open};
use crate::respond::{graph_error, no_content};
use crate::state::SimState;

const MAX_PHOTO_BYTES: usize = 4 * 1024 * 1024;

pub(crate) async fn put_photo(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, cid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mb = match open(&state, &headers, &user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("image/") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The photo must be sent with an image Content-Type (image/jpeg).",
        );
    }
    if body.len() > MAX_PHOTO_BYTES {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ErrorRequestEntityTooLarge",
            "The photo is larger than 4 MB.",
        );
    }
    if body.len() < 4 || body[..2] != [0xFF, 0xD8] {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidImage",
            "The image data is not a valid JPEG.",
        );
    }
    let mut mb = mb.write();
    let version = mb.seq + 1;
    let Some(t) = mb.contacts.get_mut(&cid) else {
        return item_not_found();
    };
    t.value.photo = Some(Arc::new(body.to_vec()));
    t.value.change_key += 1;
    t.version = version;
    mb.seq = version;
    no_content()
}

pub(crate) async fn get_photo(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((user, cid)): Path<(String, String)>,
) -> Response {
    let mb = match open(&state, &headers, &user) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mb = mb.read();
    // An immutable id names the contact too when the request asks for immutable ids (docs/microsoft-facts.md §12).
    let immutable = super::prefer_value(&headers, "IdType")
        .is_some_and(|v| v.eq_ignore_ascii_case("ImmutableId"));
    let found = mb.contacts.get(&cid).or_else(|| {
        immutable
            .then(|| mb.contacts.values().find(|t| t.value.immutable_id() == cid))
            .flatten()
    });
    let Some(t) = found else {
        return item_not_found();
    };
    match &t.value.photo {
        Some(p) => {
            let mut r = Response::new(Body::from(p.as_ref().clone()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            r
        }
        None => graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The photo wasn't found.",
        ),
    }
}
