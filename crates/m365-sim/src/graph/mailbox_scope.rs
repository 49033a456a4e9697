//! Exchange's RBAC for Applications as the mailbox routes see it: an app whose Contacts permission is granted through
//! a management role assignment with a scope reaches only the mailboxes in that scope; every other mailbox answers
//! 403 `ErrorAccessDenied` (docs/microsoft-facts.md §12). `Control::set_app_mailbox_scope` sets the scope.

use axum::http::StatusCode;
use axum::response::Response;

use super::Caller;
use crate::respond::graph_error;

/// 403 unless the caller may reach mailbox `user_id`: an app, always without a scope; a signed-in user (delegated
/// token), only their own mailbox (no mailbox delegation is modelled).
pub(crate) fn check(caller: &Caller, user_id: &str) -> Result<(), Response> {
    if let Some(user) = &caller.user {
        return if user == user_id {
            Ok(())
        } else {
            Err(graph_error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ))
        };
    }
    let scope = caller.tenant.app.mailbox_scope.read();
    match scope.as_ref() {
        Some(allowed) if !allowed.contains(user_id) => Err(graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )),
        _ => Ok(()),
    }
}
