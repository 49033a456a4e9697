//! Reading credentials from Azure Key Vault with the official `azure_security_keyvault_secrets` client, and writing
//! the one secret galbridge keeps there itself: a delegated sign-in's rotated refresh token (`set`, which needs the
//! "secrets set" permission, e.g. the Key Vault Secrets Officer role; docs/app-registrations.md).
//!
//! The vault is read with the platform identity (the function app's managed identity in Azure, developer tools
//! locally). Certificates are read as their backing secret: Key Vault exposes a certificate with its private key as a
//! secret of the same name (PEM when the certificate was created with content type `application/x-pem-file`).

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::StatusCode;
use azure_security_keyvault_secrets::models::SetSecretParameters;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use url::Url;

use super::counters::{RequestCounters, Service};
use super::sdk::client_options;
use super::secret::Secret;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    #[error("Key Vault URL {url} is not usable: {message}")]
    BadUrl { url: String, message: String },
    #[error("cannot read secret {name:?} from {vault}: {message}")]
    Read {
        vault: String,
        name: String,
        message: String,
    },
    #[error("cannot write secret {name:?} to {vault}: {message}")]
    Write {
        vault: String,
        name: String,
        message: String,
    },
    #[error("secret {name:?} in {vault} is empty")]
    Empty { vault: String, name: String },
}

/// A Key Vault secret reader.
#[derive(Clone)]
pub struct KeyVaultSecrets {
    client: Arc<SecretClient>,
    vault: String,
}

impl fmt::Debug for KeyVaultSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultSecrets")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl KeyVaultSecrets {
    /// A reader of the vault at `url`, authenticating with `credential`, over our HTTP client.
    pub fn new(
        url: &Url,
        credential: Arc<dyn TokenCredential>,
        http: &reqwest::Client,
        counters: &Arc<RequestCounters>,
    ) -> Result<Self, KeyVaultError> {
        let options = SecretClientOptions {
            client_options: client_options(http, counters, Service::KeyVault),
            // Quirk: the SDK checks that the 401 challenge's resource is a parent domain of the vault host
            // (`*.vault.azure.net` under `vault.azure.net`). A loopback vault (the simulator) can never pass that
            // check, so it is only relaxed for loopback hosts; real vaults keep the protection.
            verify_challenge_resource: Some(!is_loopback(url)),
            ..SecretClientOptions::default()
        };
        let client =
            SecretClient::new(url.as_str(), credential, Some(options)).map_err(|error| {
                KeyVaultError::BadUrl {
                    url: url.to_string(),
                    message: error.to_string(),
                }
            })?;
        Ok(Self {
            client: Arc::new(client),
            vault: url.origin().ascii_serialization(),
        })
    }

    /// The current version of secret `name`.
    pub async fn get(&self, name: &str) -> Result<Secret, KeyVaultError> {
        self.get_optional(name)
            .await?
            .ok_or_else(|| KeyVaultError::Read {
                vault: self.vault.clone(),
                name: name.to_owned(),
                message: "SecretNotFound (404)".into(),
            })
    }

    /// The current version of secret `name`, `None` when the vault has no such secret (404).
    pub async fn get_optional(&self, name: &str) -> Result<Option<Secret>, KeyVaultError> {
        let read_error = |message: String| KeyVaultError::Read {
            vault: self.vault.clone(),
            name: name.to_owned(),
            message,
        };
        let response = match self.client.get_secret(name, None).await {
            Ok(response) => response,
            Err(error) if error.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(error) => return Err(read_error(error.to_string())),
        };
        let secret = response
            .into_model()
            .map_err(|error| read_error(error.to_string()))?;
        match secret.value {
            Some(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
            _ => Err(KeyVaultError::Empty {
                vault: self.vault.clone(),
                name: name.to_owned(),
            }),
        }
    }

    /// Sets secret `name` to `value` (Key Vault keeps the old value as an older version). The error never holds the
    /// value.
    pub async fn set(&self, name: &str, value: &Secret) -> Result<(), KeyVaultError> {
        let write_error = |message: String| KeyVaultError::Write {
            vault: self.vault.clone(),
            name: name.to_owned(),
            message,
        };
        let parameters = SetSecretParameters {
            value: Some(value.expose().to_owned()),
            ..SetSecretParameters::default()
        };
        let content = parameters
            .try_into()
            .map_err(|error: azure_core::Error| write_error(error.to_string()))?;
        self.client
            .set_secret(name, content, None)
            .await
            .map_err(|error| write_error(error.to_string()))?;
        Ok(())
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}
