//! App certificates and client assertions. Entra client assertions are RS256 JWTs whose header names the
//! certificate by `x5t` (SHA-1 thumbprint) or `x5t#S256`; the simulator verifies signature, thumbprint, `aud`,
//! `iss` = `sub` = client id, and lifetime. ring cannot generate RSA keys, so the `rsa` crate does (built with
//! opt-level 3 in dev, generated once per tenant in the background from the deterministic seed).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand_chacha_03::rand_core::SeedableRng;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde::Deserialize;

use crate::SimError;

/// An app registration's certificate with its private key (what Key Vault hands out as a PEM secret).
pub struct AppCertificate {
    /// Certificate and PKCS#8 private key, concatenated, as Key Vault returns a PEM certificate secret.
    pub pem_with_key: String,
    /// The same private key as PKCS#1 (`BEGIN RSA PRIVATE KEY`), as `openssl` writes older key files.
    pub pkcs1_key_pem: String,
    pub public_key_pkcs1: Vec<u8>,
    /// base64url SHA-1 of the certificate DER (`x5t`).
    pub x5t: String,
    /// base64url SHA-256 of the certificate DER (`x5t#S256`).
    pub x5t_s256: String,
}

impl std::fmt::Debug for AppCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCertificate")
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

/// A self-signed RSA-2048 certificate with its key, deterministic for a seed (tests that need an app certificate of
/// their own use it too, instead of key files committed to the repository).
pub fn generate(seed: u64, subject: &str) -> Result<AppCertificate, SimError> {
    let mut rng = rand_chacha_03::ChaCha8Rng::seed_from_u64(seed);
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048)
        .map_err(|e| SimError::Tls(format!("RSA key: {e}")))?;
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SimError::Tls(format!("RSA key PEM: {e}")))?;
    let pkcs1_key_pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| SimError::Tls(format!("RSA key PEM: {e}")))?
        .to_string();
    let public_key_pkcs1 = key
        .to_public_key()
        .to_pkcs1_der()
        .map_err(|e| SimError::Tls(format!("RSA public key: {e}")))?
        .as_bytes()
        .to_vec();
    let signing = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| SimError::Tls(format!("RSA key for rcgen: {e}")))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| SimError::Tls(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, subject);
    let cert = params
        .self_signed(&signing)
        .map_err(|e| SimError::Tls(format!("app certificate: {e}")))?;
    let cert_der = cert.der().to_vec();
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der);
    let sha256 = ring::digest::digest(&ring::digest::SHA256, &cert_der);
    Ok(AppCertificate {
        pem_with_key: format!("{}{}", cert.pem(), key_pem.as_str()),
        pkcs1_key_pem,
        public_key_pkcs1,
        x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
    })
}

/// Why a client assertion was refused, with Entra's AADSTS code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssertionError {
    #[error("AADSTS50027: JWT token is invalid or malformed. {0}")]
    Malformed(String),
    #[error(
        "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."
    )]
    UnknownCertificate,
    #[error("AADSTS700027: Client assertion failed signature validation.")]
    BadSignature,
    #[error("AADSTS700024: Client assertion is not within its valid time range.")]
    Expired,
    #[error(
        "AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter."
    )]
    WrongSubject,
    #[error("AADSTS700016: Invalid audience in the client assertion: {0}")]
    WrongAudience(String),
}

impl AssertionError {
    pub(crate) fn code(&self) -> u32 {
        match self {
            AssertionError::Malformed(_) => 50027,
            AssertionError::UnknownCertificate | AssertionError::BadSignature => 700027,
            AssertionError::Expired => 700024,
            AssertionError::WrongSubject => 700021,
            AssertionError::WrongAudience(_) => 700016,
        }
    }
}

#[derive(Deserialize)]
struct AssertionHeader {
    alg: String,
    #[serde(default)]
    x5t: Option<String>,
    #[serde(rename = "x5t#S256", default)]
    x5t_s256: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct AssertionClaims {
    pub(crate) aud: serde_json::Value,
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) exp: i64,
    #[serde(default)]
    pub(crate) nbf: Option<i64>,
}

/// Splits a JWT and decodes its header and claims without verifying anything.
pub(crate) fn decode_jwt<H: serde::de::DeserializeOwned, C: serde::de::DeserializeOwned>(
    jwt: &str,
) -> Result<(H, C), AssertionError> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed("expected three segments".into()));
    };
    let header = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AssertionError::Malformed("header is not base64url".into()))?;
    let claims = URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| AssertionError::Malformed("claims are not base64url".into()))?;
    Ok((
        serde_json::from_slice(&header)
            .map_err(|e| AssertionError::Malformed(format!("header: {e}")))?,
        serde_json::from_slice(&claims)
            .map_err(|e| AssertionError::Malformed(format!("claims: {e}")))?,
    ))
}

/// Verifies a certificate client assertion for `client_id` against the accepted token endpoint audiences.
pub(crate) fn verify_assertion(
    jwt: &str,
    cert: &AppCertificate,
    client_id: &str,
    accepted_audiences: &[String],
    now_secs: i64,
) -> Result<(), AssertionError> {
    let (header, claims): (AssertionHeader, AssertionClaims) = decode_jwt(jwt)?;
    let thumbprint_ok = match (&header.x5t_s256, &header.x5t) {
        (Some(s256), _) => *s256 == cert.x5t_s256,
        (None, Some(sha1)) => *sha1 == cert.x5t || sha1_hex_matches(sha1, cert),
        (None, None) => false,
    };
    if !thumbprint_ok {
        return Err(AssertionError::UnknownCertificate);
    }
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match header.alg.as_str() {
        "RS256" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        "PS256" => &ring::signature::RSA_PSS_2048_8192_SHA256,
        other => {
            return Err(AssertionError::Malformed(format!(
                "unsupported alg {other}"
            )));
        }
    };
    let (signing_input, signature) = jwt.rsplit_once('.').ok_or(AssertionError::BadSignature)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| AssertionError::BadSignature)?;
    ring::signature::UnparsedPublicKey::new(algorithm, &cert.public_key_pkcs1)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| AssertionError::BadSignature)?;
    if claims.iss != client_id || claims.sub != client_id {
        return Err(AssertionError::WrongSubject);
    }
    check_audience(&claims.aud, accepted_audiences)?;
    // Entra allows a few minutes of clock skew; the sim allows none past exp (the stricter reading).
    if claims.exp <= now_secs || claims.nbf.is_some_and(|nbf| nbf > now_secs + 300) {
        return Err(AssertionError::Expired);
    }
    Ok(())
}

pub(crate) fn check_audience(
    aud: &serde_json::Value,
    accepted: &[String],
) -> Result<(), AssertionError> {
    let matches = |a: &str| {
        accepted.iter().any(|x| {
            x.trim_end_matches('/')
                .eq_ignore_ascii_case(a.trim_end_matches('/'))
        })
    };
    let ok = match aud {
        serde_json::Value::String(a) => matches(a),
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(serde_json::Value::as_str)
            .any(matches),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AssertionError::WrongAudience(aud.to_string()))
    }
}

/// Some clients put the hex thumbprint in base64 (`x5t` = base64(hex bytes)); accept the standard form only.
fn sha1_hex_matches(x5t: &str, cert: &AppCertificate) -> bool {
    STANDARD
        .decode(x5t)
        .is_ok_and(|raw| URL_SAFE_NO_PAD.encode(raw) == cert.x5t)
}
