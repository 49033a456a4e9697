//! Access tokens: JWT-shaped (so clients that peek at `exp` work), signed with an HMAC key the simulator keeps.
//! The signature is checked on every request; the claims carry tenant, app, audience and expiry.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Claims {
    pub(crate) aud: String,
    pub(crate) iss: String,
    pub(crate) tid: String,
    /// The app (client id) for app tokens; the identity's client id for managed identity tokens.
    pub(crate) appid: String,
    pub(crate) oid: String,
    pub(crate) sub: String,
    pub(crate) iat: i64,
    pub(crate) nbf: i64,
    pub(crate) exp: i64,
    pub(crate) idtyp: String,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
}

pub(crate) struct TokenSigner {
    key: ring::hmac::Key,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum TokenError {
    #[error("Access token is empty.")]
    Missing,
    #[error("IDX14100: JWT is not well formed.")]
    Malformed,
    #[error("Access token validation failure. Invalid signature.")]
    BadSignature,
    #[error("Lifetime validation failed, the token is expired.")]
    Expired,
    #[error("Access token validation failure. Invalid audience.")]
    WrongAudience,
}

impl TokenSigner {
    pub(crate) fn new(seed: u64) -> Self {
        let material = ring::digest::digest(
            &ring::digest::SHA256,
            format!("m365-sim token key {seed} {}", uuid::Uuid::new_v4()).as_bytes(),
        );
        TokenSigner {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, material.as_ref()),
        }
    }

    pub(crate) fn issue(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256","kid":"m365-sim"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let tag = ring::hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies signature, lifetime (against the sim clock) and audience.
    pub(crate) fn verify(
        &self,
        token: &str,
        audience: &str,
        now_secs: i64,
    ) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (_, body) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        ring::hmac::verify(&self.key, signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        if !claims.aud.eq_ignore_ascii_case(audience) {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }
}

/// The bearer token of an `Authorization` header, if any.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
