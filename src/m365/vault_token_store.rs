//! [`KeyVaultTokenStore`]: a delegated sign-in's refresh token kept as a Key Vault secret, for deployments with no
//! local state folder (`[state] kind = "table"`). Each save is a new version of the secret (Key Vault keeps the older
//! ones; the managed identity needs "secrets set", e.g. Key Vault Secrets Officer, docs/app-registrations.md). The
//! token never appears in a message: only the vault and the secret's name do.

use std::fmt;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::auth::{AuthError, TokenProvider};
use super::delegated::RefreshTokenStore;
use super::keyvault::KeyVaultSecrets;
use super::secret::Secret;

/// Longest Key Vault secret name.
const MAX_NAME: usize = 127;

/// The secret name of the refresh token of `mailbox` in `tenant` (the configuration's tenant name):
/// `galbridge-rt-{tenant}-{mailbox}-{hash}`, lowercased, every character outside `[0-9a-z-]` (the mailbox's `@` and
/// dots) turned into `-`, the readable part cut so the whole fits Key Vault's 127 characters. `{hash}` is the first
/// 16 hex digits of SHA-256 of `{tenant}\n{mailbox}` (lowercased), so two mailboxes that read the same once
/// flattened (`a.b@x` and `a-b@x`) still get two secrets.
pub fn refresh_token_secret_name(tenant: &str, mailbox: &str) -> String {
    let tenant = tenant.to_ascii_lowercase();
    let mailbox = mailbox.to_ascii_lowercase();
    let digest = Sha256::digest(format!("{tenant}\n{mailbox}").as_bytes());
    let hash = hex::encode(&digest[..8]);
    let readable: String = format!("galbridge-rt-{tenant}-{mailbox}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_NAME - hash.len() - 1)
        .collect();
    format!("{readable}-{hash}")
}

/// How the vault is reached: a client made already, or the token provider's configured vault (made on first use).
#[derive(Clone)]
enum Vault {
    Client(KeyVaultSecrets),
    Provider(TokenProvider),
}

/// A refresh token in a Key Vault secret.
#[derive(Clone)]
pub struct KeyVaultTokenStore {
    vault: Vault,
    tenant: String,
    name: String,
}

impl fmt::Debug for KeyVaultTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultTokenStore")
            .field("tenant", &self.tenant)
            .field("secret", &self.name)
            .finish_non_exhaustive()
    }
}

impl KeyVaultTokenStore {
    /// The store of `mailbox` of `tenant` in the vault `client` reaches.
    pub fn new(client: KeyVaultSecrets, tenant: &str, mailbox: &str) -> Self {
        Self::with_vault(Vault::Client(client), tenant, mailbox)
    }

    /// The store of `mailbox` of `tenant` in the `[key_vault]` the token provider reads credentials from.
    pub fn in_configured_vault(tokens: TokenProvider, tenant: &str, mailbox: &str) -> Self {
        Self::with_vault(Vault::Provider(tokens), tenant, mailbox)
    }

    fn with_vault(vault: Vault, tenant: &str, mailbox: &str) -> Self {
        KeyVaultTokenStore {
            vault,
            tenant: tenant.to_owned(),
            name: refresh_token_secret_name(tenant, mailbox),
        }
    }

    /// The secret's name.
    pub fn secret_name(&self) -> &str {
        &self.name
    }

    async fn client(&self) -> Result<KeyVaultSecrets, AuthError> {
        match &self.vault {
            Vault::Client(client) => Ok(client.clone()),
            Vault::Provider(tokens) => tokens.key_vault_client(&self.tenant).await,
        }
    }

    fn failed(&self, source: super::keyvault::KeyVaultError) -> AuthError {
        AuthError::KeyVault {
            tenant: self.tenant.clone(),
            source,
        }
    }
}

#[async_trait]
impl RefreshTokenStore for KeyVaultTokenStore {
    async fn load(&self) -> Result<Option<Secret>, AuthError> {
        let client = self.client().await?;
        client
            .get_optional(&self.name)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn save(&self, token: &Secret) -> Result<(), AuthError> {
        let client = self.client().await?;
        client
            .set(&self.name, token)
            .await
            .map_err(|e| self.failed(e))
    }

    fn describe(&self) -> String {
        format!("Key Vault secret {}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_valid_distinct_and_bounded() {
        let name = refresh_token_secret_name("Contoso", "Export.Box@Partner.example");
        assert!(
            name.starts_with("galbridge-rt-contoso-export-box-partner-example-"),
            "{name}"
        );
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(
            name,
            refresh_token_secret_name("contoso", "export.box@partner.example"),
            "case does not matter"
        );
        assert_ne!(
            name,
            refresh_token_secret_name("contoso", "export-box@partner.example"),
            "flattened look-alikes stay apart"
        );
        let long = refresh_token_secret_name("t", &format!("{}@x.example", "a".repeat(300)));
        assert_eq!(long.len(), MAX_NAME);
    }
}
