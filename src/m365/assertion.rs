//! Certificate client assertions, signed by us with ring (the SDK's `ClientCertificateCredential` needs openssl).
//!
//! Entra's documented assertion format (learn.microsoft.com/entra/identity-platform/certificate-credentials): a JWT
//! signed RS256, header `{"alg":"RS256","typ":"JWT","x5t#S256":<base64url SHA-256 of the certificate DER>}`, claims
//! `aud` = the token endpoint, `iss` = `sub` = the client id, a unique `jti`, `nbf`/`iat` = now, `exp` = now + 10 min.
//! The PEM (as Key Vault stores a certificate-backed secret) holds the certificate and an RSA key, PKCS#8 or PKCS#1.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use sha2::{Digest, Sha256};
use x509_parser::pem::Pem;

use azure_core::credentials::TokenCredential;
use azure_identity::ClientAssertion;
use url::Url;

use super::secret::Secret;

/// Lifetime of one assertion; Entra accepts short-lived assertions, the SDK asks for a new one per token request.
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// Why a certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("the certificate PEM cannot be read: {0}")]
    Pem(String),
    #[error("the certificate PEM holds no CERTIFICATE block")]
    NoCertificate,
    #[error("the certificate PEM holds no private key (expected PRIVATE KEY or RSA PRIVATE KEY)")]
    NoPrivateKey,
    #[error(
        "the private key is encrypted; store it unencrypted in Key Vault (Key Vault encrypts it at rest)"
    )]
    EncryptedKey,
    #[error("the private key is not a usable RSA key: {0}")]
    BadKey(String),
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("the certificate and the private key do not belong together")]
    KeyMismatch,
    #[error("signing the client assertion failed")]
    Signing,
}

/// A certificate and its RSA key, ready to sign client assertions. Debug shows the thumbprint only.
pub struct CertificateSigner {
    key_pair: RsaKeyPair,
    x5t_s256: String,
    rng: SystemRandom,
}

impl fmt::Debug for CertificateSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateSigner")
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl CertificateSigner {
    /// Reads the first certificate and the private key of a PEM bundle.
    pub fn from_pem(pem: &Secret) -> Result<Self, AssertionError> {
        let mut certificate_der: Option<Vec<u8>> = None;
        let mut key: Option<RsaKeyPair> = None;
        for block in Pem::iter_from_buffer(pem.expose().as_bytes()) {
            let block = block.map_err(|error| AssertionError::Pem(error.to_string()))?;
            match block.label.as_str() {
                "CERTIFICATE" if certificate_der.is_none() => {
                    certificate_der = Some(block.contents)
                }
                "PRIVATE KEY" if key.is_none() => {
                    key = Some(
                        RsaKeyPair::from_pkcs8(&block.contents)
                            .map_err(|error| AssertionError::BadKey(error.to_string()))?,
                    );
                }
                "RSA PRIVATE KEY" if key.is_none() => {
                    key = Some(
                        RsaKeyPair::from_der(&block.contents)
                            .map_err(|error| AssertionError::BadKey(error.to_string()))?,
                    );
                }
                "ENCRYPTED PRIVATE KEY" => return Err(AssertionError::EncryptedKey),
                _ => {}
            }
        }
        let certificate_der = certificate_der.ok_or(AssertionError::NoCertificate)?;
        let key_pair = key.ok_or(AssertionError::NoPrivateKey)?;

        let (_, certificate) = x509_parser::parse_x509_certificate(&certificate_der)
            .map_err(|error| AssertionError::BadCertificate(error.to_string()))?;
        // The certificate's SubjectPublicKeyInfo bit string is the DER RSAPublicKey, as is ring's public key.
        let certificate_key: &[u8] = &certificate.public_key().subject_public_key.data;
        if certificate_key != key_pair.public().as_ref() {
            return Err(AssertionError::KeyMismatch);
        }
        Ok(Self {
            key_pair,
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&certificate_der)),
            rng: SystemRandom::new(),
        })
    }

    /// The certificate's SHA-256 thumbprint, base64url (the `x5t#S256` header).
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// A signed client assertion for `client_id` at `token_endpoint`, valid from `now_unix` for ten minutes.
    pub fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now_unix: i64,
    ) -> Result<Secret, AssertionError> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t#S256": self.x5t_s256});
        let claims = serde_json::json!({
            "aud": token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now_unix,
            "iat": now_unix,
            "exp": now_unix + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AssertionError::Signing)?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// The SDK hook: `ClientAssertionCredential` asks this for a fresh assertion before each token request.
#[derive(Debug, Clone)]
pub struct CertificateAssertion {
    pub signer: Arc<CertificateSigner>,
    pub client_id: String,
    /// The tenant's token endpoint, `{login}/{tenant}/oauth2/v2.0/token` (the assertion's audience).
    pub token_endpoint: String,
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(
        &self,
        _options: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        let now = chrono::Utc::now().timestamp();
        self.signer
            .assertion(&self.client_id, &self.token_endpoint, now)
            .map(|assertion| assertion.expose().to_owned())
            .map_err(|error| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    error.to_string(),
                )
            })
    }
}

/// `{login origin}/{tenant}/oauth2/v2.0/token`: where the SDK sends token requests, and a certificate assertion's `aud`.
pub fn token_endpoint(login_base: &Url, tenant_id: &str) -> String {
    format!(
        "{}/{tenant_id}/oauth2/v2.0/token",
        login_base.origin().ascii_serialization()
    )
}

/// The audience of the managed-identity token used as a federated assertion. Entra documents one audience per cloud
/// family: `api://AzureADTokenExchange` (global), `…USGov` (US Government), `…China` (21Vianet). The simulator and any
/// other login override use the global one. [unverified for DoD: assumed to share the US Government audience]
pub fn federation_scope(login_base: &Url) -> String {
    let host = login_base
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let audience = if host.ends_with("microsoftonline.us") {
        "api://AzureADTokenExchangeUSGov"
    } else if host.ends_with("chinacloudapi.cn") {
        "api://AzureADTokenExchangeChina"
    } else {
        "api://AzureADTokenExchange"
    };
    format!("{audience}/.default")
}

/// The platform managed-identity token, used as the client assertion of a federated credential.
#[derive(Debug)]
pub(crate) struct FederatedAssertion {
    pub(crate) platform: Arc<dyn TokenCredential>,
    pub(crate) audience_scope: String,
}

#[async_trait::async_trait]
impl ClientAssertion for FederatedAssertion {
    async fn secret(
        &self,
        _options: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        let token = self
            .platform
            .get_token(&[self.audience_scope.as_str()], None)
            .await?;
        Ok(token.token.secret().to_owned())
    }
}

/// One `ClientAssertionCredential` type for both assertion kinds (certificate, federation).
#[derive(Debug)]
pub(crate) struct BoxedAssertion(pub(crate) Box<dyn ClientAssertion>);

#[async_trait::async_trait]
impl ClientAssertion for BoxedAssertion {
    async fn secret(
        &self,
        options: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        self.0.secret(options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_incomplete_pems_are_refused_with_a_reason() {
        assert!(matches!(
            CertificateSigner::from_pem(&Secret::new("not a pem")),
            Err(AssertionError::NoCertificate)
        ));
        let only_key =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            CertificateSigner::from_pem(&Secret::new(only_key)),
            Err(AssertionError::EncryptedKey)
        ));
    }

    /// A certificate generated for the test (never a key file in the repository): the PEM with its PKCS#8 key, the
    /// same with the key as PKCS#1, and the certificate's `x5t#S256` as the simulator computes it.
    fn fixture(seed: u64) -> (String, String, String) {
        let generated = m365_sim::auth::certs::generate(seed, "galbridge assertion test")
            .expect("certificate generated");
        let certificate = generated
            .pem_with_key
            .split("-----BEGIN PRIVATE KEY-----")
            .next()
            .expect("a certificate before the key")
            .to_owned();
        let pkcs1 = format!("{certificate}{}", generated.pkcs1_key_pem);
        (generated.pem_with_key, pkcs1, generated.x5t_s256)
    }

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn assertion_has_entra_header_and_claims_and_a_valid_rs256_signature() {
        let (pkcs8, pkcs1, x5t_s256) = fixture(7);
        assert!(pkcs1.contains("-----BEGIN RSA PRIVATE KEY-----"));
        for pem in [pkcs8, pkcs1] {
            let signer = CertificateSigner::from_pem(&Secret::new(pem)).unwrap();
            assert_eq!(signer.x5t_s256(), x5t_s256);

            let endpoint = "https://login.microsoftonline.com/tenant-guid/oauth2/v2.0/token";
            let jwt = signer
                .assertion("client-guid", endpoint, 1_800_000_000)
                .unwrap();
            let parts: Vec<&str> = jwt.expose().split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = decode_part(parts[0]);
            assert_eq!(header["alg"], "RS256");
            assert_eq!(header["x5t#S256"], x5t_s256.as_str());
            let claims = decode_part(parts[1]);
            assert_eq!(claims["aud"], endpoint);
            assert_eq!(claims["iss"], "client-guid");
            assert_eq!(claims["sub"], "client-guid");
            assert_eq!(claims["exp"], 1_800_000_600);
            assert!(claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()));

            let public = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                signer.key_pair.public().as_ref().to_vec(),
            );
            let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            let signed = format!("{}.{}", parts[0], parts[1]);
            public.verify(signed.as_bytes(), &signature).unwrap();
        }
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let (pkcs8, _, _) = fixture(7);
        let (other, _, _) = fixture(8);
        let certificate_only = pkcs8.split("-----BEGIN PRIVATE KEY-----").next().unwrap();
        let other_key = other.split("-----END CERTIFICATE-----\n").nth(1).unwrap();
        let mixed = format!("{certificate_only}{other_key}");
        assert!(matches!(
            CertificateSigner::from_pem(&Secret::new(mixed)),
            Err(AssertionError::KeyMismatch)
        ));
    }
}
