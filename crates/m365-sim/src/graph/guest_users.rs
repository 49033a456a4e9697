//! `DELETE /v1.0/users/{id}`: a user goes to the deleted items (soft delete, restorable for 30 days), as Graph
//! does for guests galbridge removes (docs/microsoft-facts.md §5). Needs `User.ReadWrite.All`; a directory write.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::users::directory_write_budget;
use super::{caller, not_found};
use crate::respond::no_content;
use crate::state::SimState;

pub(crate) async fn delete(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["User.ReadWrite.All"]) {
        return r;
    }
    if let Err(r) = directory_write_budget(&state, &caller) {
        return r;
    }
    if caller.tenant.dir.write().delete_user(&id, true) {
        no_content()
    } else {
        not_found(&id)
    }
}
