//! The Entra token endpoint, `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant (client secret,
//! certificate client assertion, or a managed identity token as federated assertion, docs/microsoft-facts.md §8), and
//! the delegated device-code and refresh-token grants of `device_code.rs`.
//! Errors come in Entra's shape (`error`, `error_description` starting with `AADSTSnnnn:`, `error_codes`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde_json::json;

use super::certs::{decode_jwt, verify_assertion};
use super::tokens::Claims;
use super::{AUDIENCE_TOKEN_EXCHANGE, audience_of_scope};
use crate::respond::json_response;
use crate::state::SimState;
use crate::tenant::Tenant;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(super::device_code::device_code),
        )
}

pub(crate) fn entra_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> Response {
    let trace = uuid::Uuid::new_v4();
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("{description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ")),
            "error_codes": [code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": trace.to_string(),
            "correlation_id": trace.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

async fn token(
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
            &format!(
                "AADSTS90002: Tenant '{tenant_key}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    };
    if let Some(response) = super::device_code::token_grant(&state, &tenant, &form) {
        return response;
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id != tenant.app.client_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{}'.",
                tenant.name
            ),
        );
    }
    let scope = form.get("scope").map(String::as_str).unwrap_or_default();
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    // Quirk: client credentials only accept a single `{resource}/.default` scope.
    let audience = match scopes.as_slice() {
        [one] if one.ends_with("/.default") => audience_of_scope(one),
        _ => None,
    };
    let Some(audience) = audience else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    if let Err(resp) = check_credential(&state, &tenant, &tenant_key, &client_id, &form).await {
        return resp;
    }
    let now = state.clock.now_secs();
    let lifetime = i64::try_from(state.knobs.read().token_lifetime_secs).unwrap_or(3599);
    let claims = Claims {
        aud: audience.to_string(),
        iss: format!("{}{}/v2.0", state.base_url, tenant.id),
        tid: tenant.id.clone(),
        appid: client_id.clone(),
        oid: service_principal_id(&tenant),
        sub: service_principal_id(&tenant),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        idtyp: "app".into(),
        // Permissions are checked live against the app's consent (see README), so tokens stay small.
        roles: Vec::new(),
    };
    json_response(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": state.signer.issue(&claims)}),
    )
}

/// The app's service principal object id in its tenant (stable, derived from the client id).
pub(crate) fn service_principal_id(tenant: &Tenant) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("sp {}", tenant.app.client_id).as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

async fn check_credential(
    state: &SimState,
    tenant: &Arc<Tenant>,
    tenant_key: &str,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<(), Response> {
    if let Some(secret) = form.get("client_secret") {
        let expected = tenant.app.client_secret.as_bytes();
        let same = secret.len() == expected.len()
            && secret
                .bytes()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                &format!(
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            ));
        }
        return Ok(());
    }
    let (Some(kind), Some(assertion)) = (
        form.get("client_assertion_type"),
        form.get("client_assertion"),
    ) else {
        return Err(entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    if kind != JWT_BEARER {
        return Err(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "AADSTS50027: client_assertion_type is not supported.",
        ));
    }
    let now = state.clock.now_secs();
    let header: serde_json::Value =
        match decode_jwt::<serde_json::Value, serde_json::Value>(assertion) {
            Ok((h, _)) => h,
            Err(e) => {
                return Err(entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    e.code(),
                    &e.to_string(),
                ));
            }
        };
    if header.get("x5t").is_some() || header.get("x5t#S256").is_some() {
        let cert = crate::control::app_certificate(tenant).await.map_err(|e| {
            entra_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90000,
                &format!("AADSTS90000: certificate unavailable: {e}"),
            )
        })?;
        let base = state.base_url.as_str();
        let mut audiences = Vec::new();
        for key in [
            tenant_key,
            tenant.id.as_str(),
            tenant.initial_domain.as_str(),
            tenant.name.as_str(),
        ] {
            audiences.push(format!("{base}{key}/oauth2/v2.0/token"));
            audiences.push(format!("{base}{key}/v2.0"));
            audiences.push(format!(
                "https://login.microsoftonline.com/{key}/oauth2/v2.0/token"
            ));
        }
        return verify_assertion(assertion, &cert, client_id, &audiences, now).map_err(|e| {
            entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                e.code(),
                &e.to_string(),
            )
        });
    }
    // A federated assertion: a managed identity token for api://AzureADTokenExchange.
    let mi_claims = state
        .signer
        .verify(assertion, AUDIENCE_TOKEN_EXCHANGE, now)
        .map_err(|e| {
            entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700024,
                &format!("AADSTS700024: Client assertion is not valid: {e}"),
            )
        })?;
    let trusted = tenant
        .app
        .federations
        .read()
        .iter()
        .any(|(iss, sub)| *iss == mi_claims.iss && *sub == mi_claims.sub);
    if !trusted {
        return Err(entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70021,
            &format!(
                "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'.",
                mi_claims.iss, mi_claims.sub
            ),
        ));
    }
    Ok(())
}
