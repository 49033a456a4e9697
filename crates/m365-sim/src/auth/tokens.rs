//! Access tokens: JWT-shaped (so clients that peek at `exp` work), signed with an HMAC key the simulator keeps.
//! The signature is checked once per token: a token that verified is remembered (its full text → its claims), and
//! later requests with it only have lifetime and audience checked, which is what a verification would decide again
//! (the signing key never changes in a simulator's life). The claims carry tenant, app, audience and expiry.

use std::collections::HashMap;
use std::sync::Arc;

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) roles: Vec<String>,
}

pub(crate) struct TokenSigner {
    key: ring::hmac::Key,
    /// Tokens whose signature checked out, with their claims. Keyed by the whole token text (not a hash: a
    /// collision must not let a forged token in); emptied when it reaches `VERIFIED_CACHE_MAX` entries.
    verified: parking_lot::Mutex<HashMap<Box<str>, Arc<Claims>>>,
}

/// Enough for every app and identity of a long simulator run (tokens live an hour); bounds memory regardless.
const VERIFIED_CACHE_MAX: usize = 4096;

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
            verified: parking_lot::Mutex::new(HashMap::new()),
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
    ) -> Result<Arc<Claims>, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let known = self.verified.lock().get(token).cloned();
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.check_signature(token)?);
                let mut verified = self.verified.lock();
                if verified.len() >= VERIFIED_CACHE_MAX {
                    verified.clear();
                }
                verified.insert(token.into(), Arc::clone(&claims));
                claims
            }
        };
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        if !claims.aud.eq_ignore_ascii_case(audience) {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }

    /// The claims of a well-formed token signed with this signer's key.
    fn check_signature(&self, token: &str) -> Result<Claims, TokenError> {
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
        serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: "https://graph.microsoft.com".into(),
            iss: "https://sts.windows.net/t/".into(),
            tid: "t".into(),
            appid: "app".into(),
            oid: "o".into(),
            sub: "o".into(),
            iat: 0,
            nbf: 0,
            exp,
            idtyp: "app".into(),
            roles: vec!["Contacts.ReadWrite".into()],
        }
    }

    #[test]
    fn a_remembered_token_still_expires_and_keeps_its_audience() {
        let signer = TokenSigner::new(1);
        let token = signer.issue(&claims(1_000));
        let graph = "https://graph.microsoft.com";
        assert_eq!(*signer.verify(&token, graph, 900).unwrap(), claims(1_000));
        assert_eq!(*signer.verify(&token, graph, 999).unwrap(), claims(1_000));
        assert_eq!(
            signer.verify(&token, "https://outlook.office365.com", 900),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            signer.verify(&token, graph, 1_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tampered_and_foreign_tokens_fail_even_after_the_genuine_one_was_remembered() {
        let signer = TokenSigner::new(1);
        let graph = "https://graph.microsoft.com";
        let token = signer.issue(&claims(1_000));
        assert!(signer.verify(&token, graph, 0).is_ok());
        // Same header and signature, other claims (a later expiry): the signature no longer matches.
        let (_, signature) = token.rsplit_once('.').unwrap();
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(9_999)).unwrap());
        let header = token.split('.').next().unwrap();
        let forged = format!("{header}.{forged_body}.{signature}");
        assert_eq!(
            signer.verify(&forged, graph, 0),
            Err(TokenError::BadSignature)
        );
        let other = TokenSigner::new(1).issue(&claims(1_000));
        assert_eq!(
            signer.verify(&other, graph, 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(signer.verify("", graph, 0), Err(TokenError::Missing));
        assert_eq!(
            signer.verify("not-a-jwt", graph, 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let signer = TokenSigner::new(1);
        for exp in 0..(VERIFIED_CACHE_MAX as i64 + 10) {
            let token = signer.issue(&claims(10_000 + exp));
            assert!(
                signer
                    .verify(&token, "https://graph.microsoft.com", 0)
                    .is_ok()
            );
        }
        assert!(signer.verified.lock().len() <= VERIFIED_CACHE_MAX);
    }
}
