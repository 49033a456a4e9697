//! `POST /v1.0/invitations`: B2B guests (docs/microsoft-facts.md §5). Invitation rate per tenant (150 / 5 s), counted as
//! a directory write; an address already owned by a mail contact makes a guest without mail/proxyAddresses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::caller;
use super::users::directory_write_budget;
use crate::model::user::{MailboxKind, User};
use crate::respond::{graph_error, json_response, throttled};
use crate::state::SimState;
use crate::tenant::AddressOwner;

pub(crate) async fn invite(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(&["User.Invite.All"]) {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload.",
        );
    };
    let Some(address) = body
        .get("invitedUserEmailAddress")
        .and_then(Value::as_str)
        .filter(|a| a.contains('@'))
        .map(str::to_string)
    else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The invitedUserEmailAddress is required and must be an email address.",
        );
    };
    let Some(redirect) = body
        .get("inviteRedirectUrl")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The inviteRedirectUrl is required.",
        );
    };
    let limit = state.knobs.read().invitations_per_5_s;
    if let Err(t) = state.limits.admit(
        "invitations",
        &caller.tenant.id,
        state.clock.now_ms(),
        5_000,
        limit,
    ) {
        return throttled(t.retry_after_secs, "Tenant");
    }
    if let Err(r) = directory_write_budget(&state, &caller) {
        return r;
    }
    let display = body
        .get("invitedUserDisplayName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| address.clone());
    let send = body
        .get("sendInvitationMessage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tenant = &caller.tenant;
    let now = state.clock.now();
    let mut dir = tenant.dir.write();
    let existing_guest = dir
        .users
        .values()
        .map(|t| &t.value)
        .find(|u| {
            u.user_type == "Guest"
                && u.other_mails
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&address))
        })
        .map(|u| u.id.clone());
    let user_id = match existing_guest {
        Some(id) => id,
        None => {
            let contact_owns = matches!(
                dir.address_owner(&address),
                Some(AddressOwner::MailContact(_))
            );
            let user_owns = matches!(dir.address_owner(&address), Some(AddressOwner::User(_)));
            if user_owns {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The invited user already exists in the directory as a member.",
                );
            }
            let id = uuid::Uuid::new_v4().to_string();
            let alias: String = address
                .replace('@', "_")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect();
            // Quirk: an address already used by a mail contact yields a guest without mail or proxyAddresses (docs/microsoft-facts.md §5).
            let (mail, proxies) = if contact_owns {
                (None, Vec::new())
            } else {
                (Some(address.clone()), vec![format!("SMTP:{address}")])
            };
            let user = User {
                id: id.clone(),
                user_principal_name: format!("{alias}#EXT#@{}", tenant.initial_domain),
                display_name: display.clone(),
                mail,
                mail_nickname: alias,
                other_mails: vec![address.clone()],
                proxy_addresses: proxies,
                user_type: "Guest".into(),
                account_enabled: true,
                created_date_time: now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                external_user_state: Some("PendingAcceptance".into()),
                mailbox: MailboxKind::None,
                hidden_from_address_lists: true,
                rest_enabled: true,
                // Exchange learns about the guest (as a mail user) only after replication.
                mail_user_from_ms: now.timestamp_millis()
                    + i64::try_from(state.knobs.read().guest_mail_user_delay_ms).unwrap_or(0),
                ..User::default()
            };
            let visible = now.timestamp_millis()
                + i64::try_from(state.knobs.read().consistency_delay_ms).unwrap_or(0);
            dir.insert_user(user, visible);
            id
        }
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "@odata.context": state.url("/v1.0/$metadata#invitations/$entity"),
            "id": uuid::Uuid::new_v4().to_string(),
            "inviteRedeemUrl": format!("https://login.microsoftonline.com/redeem?rd={}", user_id),
            "invitedUserDisplayName": display,
            "invitedUserEmailAddress": address,
            "invitedUserType": "Guest",
            "sendInvitationMessage": send,
            "inviteRedirectUrl": redirect,
            "status": "PendingAcceptance",
            "invitedUser": {"id": user_id},
        }),
    )
}
