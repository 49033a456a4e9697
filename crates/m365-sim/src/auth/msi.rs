//! The App Service managed identity endpoint (`GET /msi/token?resource=…&api-version=2019-08-01` with header
//! `X-IDENTITY-HEADER`), on the plain-HTTP listener. Tokens for Key Vault, Storage and `api://AzureADTokenExchange`
//! (the assertion the login endpoint accepts for apps that federate with this identity).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::audience_of_scope;
use super::tokens::Claims;
use crate::respond::json_response;
use crate::state::SimState;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/msi/token", get(token))
}

fn msi_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"statusCode": status.as_u16(), "message": message, "correlationId": uuid::Uuid::new_v4().to_string()}),
    )
}

async fn token(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let header = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if header != state.identity.header_secret {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return msi_error(StatusCode::BAD_REQUEST, "api-version must be 2019-08-01.");
    }
    for key in ["client_id", "principal_id"] {
        if let Some(v) = q.get(key) {
            let expected = if key == "client_id" {
                &state.identity.client_id
            } else {
                &state.identity.principal_id
            };
            if v != expected {
                return msi_error(
                    StatusCode::BAD_REQUEST,
                    "Unable to load the requested managed identity.",
                );
            }
        }
    }
    let resource = q.get("resource").map(String::as_str).unwrap_or_default();
    let Some(audience) = audience_of_scope(resource) else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant."
            ),
        );
    };
    let now = state.clock.now_secs();
    let lifetime = 86_399;
    let claims = Claims {
        aud: audience.to_string(),
        iss: format!("{}{}/v2.0", state.base_url, state.identity.home_tenant_id),
        tid: state.identity.home_tenant_id.clone(),
        appid: state.identity.client_id.clone(),
        oid: state.identity.principal_id.clone(),
        sub: state.identity.principal_id.clone(),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        idtyp: "app".into(),
        roles: Vec::new(),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": state.signer.issue(&claims),
            "expires_on": (now + lifetime).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": state.identity.client_id,
        }),
    )
}
