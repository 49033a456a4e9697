//! Key Vault secrets: `GET /secrets/{name}[/{version}]` (the Azure SDK sends a trailing slash when it asks for the
//! latest version), `PUT /secrets/{name}` (set: a new version each time, which becomes the latest; a written secret
//! shadows a seeded one of the same name), the 401 challenge handshake (`WWW-Authenticate: Bearer authorization="…", resource=
//! "https://vault.azure.net"`), audience checks. Seeded with each tenant's client secret (`{tenant}-client-secret`)
//! and app certificate with key as PEM (`{tenant}-app-cert`, content type `application/x-pem-file`).
//!
//! Quirk: `azure_security_keyvault_secrets` verifies by default that the request host ends with `.{challenge
//! resource host}` (`*.vault.azure.net`). The simulator answers with the real resource, so a client pointed at
//! 127.0.0.1 must set `SecretClientOptions::verify_challenge_resource = Some(false)`; see README.md.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;

use crate::auth::AUDIENCE_KEYVAULT;
use crate::auth::tokens::bearer;
use crate::respond::json_response;
use crate::state::SimState;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/secrets/{name}", get(latest).put(set))
        .route("/secrets/{name}/", get(latest))
        .route("/secrets/{name}/{version}", get(versioned))
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn challenge(state: &SimState, message: &str) -> Response {
    let mut r = kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    let value = format!(
        "Bearer authorization=\"{}{}\", resource=\"{AUDIENCE_KEYVAULT}\"",
        state.base_url, state.identity.home_tenant_id
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// One written version of a secret.
#[derive(Debug, Clone)]
pub(crate) struct WrittenVersion {
    version: String,
    value: String,
    content_type: Option<String>,
    created: i64,
}

/// Secrets written with `PUT`, every version oldest first, by lowercase name (Key Vault names are case-insensitive).
#[derive(Debug, Default)]
pub(crate) struct WrittenSecrets(Mutex<HashMap<String, Vec<WrittenVersion>>>);

impl WrittenSecrets {
    /// The values written to `name`, oldest first.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.0
            .lock()
            .get(&name.to_ascii_lowercase())
            .map(|versions| versions.iter().map(|w| w.value.clone()).collect())
            .unwrap_or_default()
    }
}

/// The stable version id of a seeded secret.
fn version_of(name: &str) -> String {
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, name.as_bytes()).as_ref()[..16])
}

async fn latest(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    serve(&state, &headers, &name, None, raw.as_deref()).await
}

async fn versioned(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let version = if version.is_empty() {
        None
    } else {
        Some(version)
    };
    serve(&state, &headers, &name, version, raw.as_deref()).await
}

async fn serve(
    state: &SimState,
    headers: &HeaderMap,
    name: &str,
    version: Option<String>,
    raw: Option<&str>,
) -> Response {
    if let Err(refused) = authorize(state, headers, raw) {
        return refused;
    }
    if let Some(versions) = state
        .vault_secrets
        .0
        .lock()
        .get(&name.to_ascii_lowercase())
        .cloned()
    {
        let chosen = match &version {
            None => versions.last(),
            Some(v) => versions.iter().find(|w| w.version == *v),
        };
        return match chosen {
            Some(w) => json_response(StatusCode::OK, &bundle(state, name, w)),
            None => kv_error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!(
                    "A secret with (name/id) {name}/{} was not found in this key vault.",
                    version.unwrap_or_default()
                ),
            ),
        };
    }
    let found = resolve(state, name).await;
    let Some((value, content_type)) = found else {
        return kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("A secret with (name/id) {name} was not found in this key vault."),
        );
    };
    let current = version_of(name);
    if version.as_ref().is_some_and(|v| *v != current) {
        return kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {name}/{} was not found in this key vault.",
                version.unwrap_or_default()
            ),
        );
    }
    let created = state.clock.now_secs() - 86_400;
    let mut body = json!({
        "value": value,
        "id": state.url(&format!("/secrets/{name}/{current}")),
        "attributes": {"enabled": true, "created": created, "updated": created, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
        "tags": {},
    });
    if let Some(ct) = content_type {
        body["contentType"] = json!(ct);
    }
    json_response(StatusCode::OK, &body)
}

async fn resolve(state: &SimState, name: &str) -> Option<(String, Option<&'static str>)> {
    for t in &state.tenants {
        if name.eq_ignore_ascii_case(&crate::secret_name_for(&t.name)) {
            return Some((t.app.client_secret.clone(), None));
        }
        if name.eq_ignore_ascii_case(&crate::certificate_secret_name_for(&t.name)) {
            let cert = crate::control::app_certificate(t).await.ok()?;
            return Some((cert.pem_with_key.clone(), Some("application/x-pem-file")));
        }
    }
    None
}

/// api-version, the bearer token (challenge when missing or for another audience) and the caller's role.
fn authorize(state: &SimState, headers: &HeaderMap, raw: Option<&str>) -> Result<(), Response> {
    let opts = crate::graph::odata::query_options(raw);
    if !opts.contains_key("api-version") {
        return Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request URI must contain an api-version query parameter.",
        ));
    }
    let Some(token) = bearer(headers) else {
        return Err(challenge(
            state,
            "AKV10000: Request is missing a Bearer or PoP token.",
        ));
    };
    let claims = match state
        .signer
        .verify(token, AUDIENCE_KEYVAULT, state.clock.now_secs())
    {
        Ok(c) => c,
        Err(e) => {
            return Err(challenge(
                state,
                &format!("AKV10022: Invalid audience or token: {e}"),
            ));
        }
    };
    // Every simulated principal (the managed identity and each tenant's app) holds Key Vault Secrets Officer (read
    // and set).
    let known = claims.appid == state.identity.client_id
        || state
            .tenants
            .iter()
            .any(|t| t.app.client_id == claims.appid);
    if !known {
        return Err(kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Caller is not authorized to perform action on resource.",
        ));
    }
    Ok(())
}

/// The secret bundle Key Vault answers for a written version (value included, as for a read).
fn bundle(state: &SimState, name: &str, w: &WrittenVersion) -> Value {
    let mut body = json!({
        "value": w.value,
        "id": state.url(&format!("/secrets/{name}/{}", w.version)),
        "attributes": {"enabled": true, "created": w.created, "updated": w.created, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
        "tags": {},
    });
    if let Some(ct) = &w.content_type {
        body["contentType"] = json!(ct);
    }
    body
}

/// `PUT /secrets/{name}`: a new version holding `value` (required), which becomes the latest. Names are 1-127 of
/// `[0-9a-zA-Z-]`. The same principals that read may write (the simulator grants every one Secrets Officer).
async fn set(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(&state, &headers, raw.as_deref()) {
        return refused;
    }
    if name.is_empty()
        || name.len() > 127
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request URI contains an invalid name: secret names may only contain alphanumeric characters and dashes.",
        );
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(value) = parsed["value"].as_str() else {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "Property 'value' is required.",
        );
    };
    let written = WrittenVersion {
        version: uuid::Uuid::new_v4().simple().to_string(),
        value: value.to_owned(),
        content_type: parsed["contentType"].as_str().map(str::to_owned),
        created: state.clock.now_secs(),
    };
    state
        .vault_secrets
        .0
        .lock()
        .entry(name.to_ascii_lowercase())
        .or_default()
        .push(written.clone());
    json_response(StatusCode::OK, &bundle(&state, &name, &written))
}
