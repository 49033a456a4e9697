//! Delegated sign-in, simulated (docs/microsoft-facts.md §12): the device authorization endpoint
//! (`POST /{tenant}/oauth2/v2.0/devicecode`), and the device-code and refresh-token grants of the token endpoint.
//! A device code waits (`authorization_pending`) until `Control::approve_device_code` signs a user in; its tokens are
//! user tokens (`idtyp = "user"`, `oid` = the user) that reach that user's own mailbox only. Every redeemed refresh
//! token is replaced by a new one and stops working (stricter than Entra, which leaves the old one valid: a client
//! that does not store the rotated token fails here); `Control::revoke_sign_ins` revokes a user's refresh tokens.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use parking_lot::Mutex;
use serde_json::json;

use super::login::entra_error;
use super::tokens::Claims;
use super::{AUDIENCE_GRAPH, audience_of_scope};
use crate::respond::json_response;
use crate::state::SimState;
use crate::tenant::Tenant;

pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Seconds a device code stays valid (Entra: 15 minutes).
const DEVICE_CODE_LIFETIME_SECS: i64 = 900;

/// A device code handed out and not yet redeemed.
#[derive(Debug, Clone)]
struct PendingCode {
    user_code: String,
    client_id: String,
    scope: String,
    issued_secs: i64,
    /// The user who signed in, once approved.
    user_id: Option<String>,
}

/// A refresh token's grant.
#[derive(Debug, Clone)]
struct Grant {
    user_id: String,
    client_id: String,
    scope: String,
    revoked: bool,
}

/// A tenant's delegated sign-ins: device codes waiting, refresh tokens issued.
#[derive(Debug, Default)]
pub(crate) struct DelegatedGrants {
    codes: Mutex<HashMap<String, PendingCode>>,
    refresh: Mutex<HashMap<String, Grant>>,
    redeemed: Mutex<u64>,
}

impl DelegatedGrants {
    /// User codes waiting for a sign-in.
    pub(crate) fn pending_user_codes(&self) -> Vec<String> {
        self.codes
            .lock()
            .values()
            .filter(|code| code.user_id.is_none())
            .map(|code| code.user_code.clone())
            .collect()
    }

    /// Signs `user_id` in for the device code showing `user_code`; false when no such code waits.
    pub(crate) fn approve(&self, user_code: &str, user_id: &str) -> bool {
        let mut codes = self.codes.lock();
        match codes.values_mut().find(|code| code.user_code == user_code) {
            Some(code) => {
                code.user_id = Some(user_id.to_owned());
                true
            }
            None => false,
        }
    }

    /// Revokes every refresh token of `user_id` (a password reset, "revoke sessions").
    pub(crate) fn revoke(&self, user_id: &str) -> usize {
        let mut refresh = self.refresh.lock();
        let mut n = 0;
        for grant in refresh
            .values_mut()
            .filter(|g| g.user_id == user_id && !g.revoked)
        {
            grant.revoked = true;
            n += 1;
        }
        n
    }

    /// Refresh tokens redeemed so far.
    pub(crate) fn redeemed(&self) -> u64 {
        *self.redeemed.lock()
    }
}

fn random_text(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `POST /{tenant}/oauth2/v2.0/devicecode` (`client_id`, `scope`).
pub(crate) async fn device_code(
    State(state): State<Arc<SimState>>,
    Path(tenant_key): Path<String>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(tenant) = state.tenant(&tenant_key).cloned() else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("AADSTS90002: Tenant '{tenant_key}' not found."),
        );
    };
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id != tenant.app.client_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
            ),
        );
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    let device_code = random_text("DAQABAAEAAA");
    let user_code: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    let verification_uri = format!("{}devicelogin", state.base_url);
    tenant.delegated.codes.lock().insert(
        device_code.clone(),
        PendingCode {
            user_code: user_code.clone(),
            client_id,
            scope,
            issued_secs: state.clock.now_secs(),
            user_id: None,
        },
    );
    json_response(
        StatusCode::OK,
        &json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "expires_in": DEVICE_CODE_LIFETIME_SECS,
            // Entra says 5; the sim polls faster so tests stay quick (a guess-free simplification).
            "interval": 1,
            "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."),
        }),
    )
}

/// The delegated grants of the token endpoint (`device_code`, `refresh_token`); `None` for any other grant type.
pub(crate) fn token_grant(
    state: &SimState,
    tenant: &Arc<Tenant>,
    form: &HashMap<String, String>,
) -> Option<Response> {
    let grant_type = form.get("grant_type").map(String::as_str)?;
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let now = state.clock.now_secs();
    let (user_id, scope) = match grant_type {
        DEVICE_CODE_GRANT => {
            let code = form.get("device_code").cloned().unwrap_or_default();
            let mut codes = tenant.delegated.codes.lock();
            let Some(pending) = codes.get(&code).cloned() else {
                return Some(entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "AADSTS70000: The provided value for the input parameter 'device_code' is not valid.",
                ));
            };
            if now - pending.issued_secs > DEVICE_CODE_LIFETIME_SECS {
                codes.remove(&code);
                return Some(entra_error(
                    StatusCode::BAD_REQUEST,
                    "expired_token",
                    70020,
                    "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
                ));
            }
            let Some(user_id) = pending.user_id.clone() else {
                return Some(entra_error(
                    StatusCode::BAD_REQUEST,
                    "authorization_pending",
                    70016,
                    "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                ));
            };
            if pending.client_id != client_id {
                return Some(entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "AADSTS70000: The device code was issued to another client.",
                ));
            }
            codes.remove(&code);
            (user_id, pending.scope)
        }
        "refresh_token" => {
            let token = form.get("refresh_token").cloned().unwrap_or_default();
            let mut refresh = tenant.delegated.refresh.lock();
            let grant = match refresh.remove(&token) {
                Some(grant) if !grant.revoked && grant.client_id == client_id => grant,
                Some(grant) if grant.revoked => {
                    return Some(entra_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        50173,
                        "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed.",
                    ));
                }
                _ => {
                    return Some(entra_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        9002313,
                        "AADSTS9002313: Invalid request. Request is malformed or invalid.",
                    ));
                }
            };
            *tenant.delegated.redeemed.lock() += 1;
            (grant.user_id, grant.scope)
        }
        _ => return None,
    };
    // Delegated scopes name permissions of a resource (`https://graph.microsoft.com/Contacts.Read`); the token is for
    // that resource. `offline_access` asks for a refresh token.
    let audience = scope
        .split_whitespace()
        .find_map(|s| {
            s.rsplit_once('/')
                .and_then(|(resource, _)| audience_of_scope(resource))
        })
        .unwrap_or(AUDIENCE_GRAPH);
    let lifetime = i64::try_from(state.knobs.read().token_lifetime_secs).unwrap_or(3599);
    let claims = Claims {
        aud: audience.to_owned(),
        iss: format!("{}{}/v2.0", state.base_url, tenant.id),
        tid: tenant.id.clone(),
        appid: client_id.clone(),
        oid: user_id.clone(),
        sub: user_id.clone(),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        idtyp: "user".into(),
        roles: Vec::new(),
    };
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": state.signer.issue(&claims),
    });
    if scope.split_whitespace().any(|s| s == "offline_access") {
        let refresh_token = random_text("1.AQ");
        tenant.delegated.refresh.lock().insert(
            refresh_token.clone(),
            Grant {
                user_id,
                client_id,
                scope,
                revoked: false,
            },
        );
        body["refresh_token"] = json!(refresh_token);
    }
    Some(json_response(StatusCode::OK, &body))
}
