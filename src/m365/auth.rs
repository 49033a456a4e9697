//! Access tokens per (tenant, audience), from the official `azure_identity` credentials, cached until shortly before
//! they expire.
//!
//! Each tenant's app registration authenticates with one credential source (config `credential`):
//! - a client secret from Key Vault or from an environment variable → `ClientSecretCredential`;
//! - a certificate (PEM with key) from Key Vault → `ClientAssertionCredential` with our RS256 signer (`assertion.rs`);
//! - secretless federation (docs/microsoft-facts.md §8) → `ClientAssertionCredential` whose assertion is a platform
//!   managed-identity token for `api://AzureADTokenExchange`.
//!
//! The platform identity (Key Vault reads, federation) is `ManagedIdentityCredential` when App Service's
//! `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` are set (user-assigned via `AZURE_CLIENT_ID`), else `DeveloperToolsCredential`
//! (Azure CLI / azd) for local use. Every credential uses our reqwest client as transport and the tenant's login
//! endpoint as authority host, so sovereign clouds and the simulator work alike.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    ClientAssertionCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, DeveloperToolsCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use url::Url;

use super::assertion::{
    AssertionError, BoxedAssertion, CertificateAssertion, CertificateSigner, FederatedAssertion,
    federation_scope, token_endpoint,
};
use super::counters::{RequestCounters, Service};
use super::keyvault::{KeyVaultError, KeyVaultSecrets};
use super::sdk::{client_options, login_client_options};
use super::secret::Secret;

/// Where bearer tokens come from (the HTTP executor, `m365::http`, asks it for each request). Implemented by the
/// token cache here; tests plug in fixed tokens.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A valid access token (cached until shortly before expiry).
    async fn bearer(&self) -> Result<Secret, AuthError>;
    /// Forgets the cached token (the service answered 401: the token was revoked or the clock skewed).
    fn invalidate(&self);
}

/// The Graph SDKs' habit, and the identity SDK's own: a token within five minutes of expiry is refreshed.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where a tenant's app credential comes from (`tenants.*.credential` in galbridge.schema.json; docs/app-registrations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A client secret stored in Key Vault under this secret name.
    KeyVaultSecret(String),
    /// A certificate with its private key (PEM) stored in Key Vault as a secret under this name.
    KeyVaultCertificate(String),
    /// A client secret in this environment variable (local use).
    Env(String),
    /// A client secret handed over in process (the demo and tests, which start the simulator themselves); never read
    /// from the configuration file, which only names where secrets live.
    ClientSecret(Secret),
    /// No secret: the platform managed identity is a federated credential of the app (docs/microsoft-facts.md §8).
    FederatedManagedIdentity,
}

/// What authentication needs to know about one tenant.
#[derive(Debug, Clone)]
pub struct TenantAuth {
    /// The tenant's name in the configuration (for messages and as the cache key).
    pub name: String,
    /// Directory id (GUID) or initial domain.
    pub tenant_id: String,
    /// The app registration's client id in that tenant.
    pub client_id: String,
    /// The login endpoint (cloud authority or override); only its origin is used.
    pub login_base: Url,
    pub credential: CredentialSource,
}

/// How the platform identity (for Key Vault and federation) is obtained.
#[derive(Clone, Default)]
pub enum PlatformIdentity {
    /// Managed identity when `IDENTITY_ENDPOINT` is set, else developer tools (Azure CLI, azd).
    #[default]
    FromEnvironment,
    /// A credential supplied by the caller (tests, other hosts).
    Custom(Arc<dyn TokenCredential>),
}

impl fmt::Debug for PlatformIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformIdentity::FromEnvironment => f.write_str("FromEnvironment"),
            PlatformIdentity::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Why a token could not be obtained. Never carries a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no tenant named {0:?} is known to the token provider")]
    UnknownTenant(String),
    #[error(
        "tenant {tenant:?}: login endpoint {url} must be a bare https origin (no path), as the identity SDK joins its own path"
    )]
    BadLoginEndpoint { tenant: String, url: String },
    #[error(
        "tenant {tenant:?}: environment variable {var} with the client secret is not set or empty"
    )]
    MissingEnv { tenant: String, var: String },
    #[error(
        "tenant {tenant:?}: its credential is in Key Vault but no [key_vault] url is configured"
    )]
    NoKeyVault { tenant: String },
    #[error("tenant {tenant:?}: {source}")]
    KeyVault {
        tenant: String,
        #[source]
        source: KeyVaultError,
    },
    #[error("tenant {tenant:?}: certificate {name:?} is not usable: {source}")]
    Certificate {
        tenant: String,
        name: String,
        #[source]
        source: AssertionError,
    },
    #[error("cannot set up the platform identity (managed identity / developer tools): {0}")]
    PlatformIdentity(String),
    #[error("tenant {tenant:?}: cannot build its credential: {message}")]
    Credential { tenant: String, message: String },
    #[error("tenant {tenant:?}: token request for {scope} failed: {message}")]
    Token {
        tenant: String,
        scope: String,
        message: String,
    },
    #[error("cannot get a managed identity token for {scope}: {message}")]
    PlatformToken { scope: String, message: String },
    /// A delegated sign-in (`sign_in = "delegated"`) must be done again (docs/microsoft-facts.md §12).
    #[error(
        "tenant {tenant:?}: the sign-in of mailbox {mailbox} {reason}; run `galbridge login --tenant {tenant} --mailbox {mailbox}` again"
    )]
    SignInNeeded {
        tenant: String,
        mailbox: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: Secret,
    expires_at_unix: i64,
}

type TokenKey = (String, String);

struct ProviderInner {
    http: reqwest::Client,
    counters: Arc<RequestCounters>,
    tenants: HashMap<String, TenantAuth>,
    key_vault_url: Option<Url>,
    platform: PlatformIdentity,
    refresh_margin: Duration,
    platform_credential: tokio::sync::OnceCell<Arc<dyn TokenCredential>>,
    key_vault: tokio::sync::OnceCell<KeyVaultSecrets>,
    credentials: tokio::sync::Mutex<HashMap<String, Arc<dyn TokenCredential>>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    refresh_locks: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// Hands out access tokens per (tenant, scope), caching them. Cheap to clone.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<ProviderInner>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("tenants", &self.inner.tenants.keys().collect::<Vec<_>>())
            .field("key_vault_url", &self.inner.key_vault_url)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider for `tenants`, reading Key Vault at `key_vault_url` when a credential lives there.
    /// `counters` receives the `login`, `key_vault` and `managed_identity` requests.
    pub fn new(
        http: reqwest::Client,
        tenants: Vec<TenantAuth>,
        key_vault_url: Option<Url>,
        platform: PlatformIdentity,
        counters: Arc<RequestCounters>,
    ) -> Result<Self, AuthError> {
        let mut by_name = HashMap::new();
        for tenant in tenants {
            let login = &tenant.login_base;
            if login.scheme() != "https" || !(login.path() == "/" || login.path().is_empty()) {
                return Err(AuthError::BadLoginEndpoint {
                    tenant: tenant.name.clone(),
                    url: login.to_string(),
                });
            }
            let needs_vault = matches!(
                tenant.credential,
                CredentialSource::KeyVaultSecret(_) | CredentialSource::KeyVaultCertificate(_)
            );
            if needs_vault && key_vault_url.is_none() {
                return Err(AuthError::NoKeyVault {
                    tenant: tenant.name,
                });
            }
            by_name.insert(tenant.name.clone(), tenant);
        }
        Ok(Self {
            inner: Arc::new(ProviderInner {
                http,
                counters,
                tenants: by_name,
                key_vault_url,
                platform,
                refresh_margin: DEFAULT_REFRESH_MARGIN,
                platform_credential: tokio::sync::OnceCell::new(),
                key_vault: tokio::sync::OnceCell::new(),
                credentials: tokio::sync::Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                refresh_locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The counters receiving this provider's requests.
    pub fn counters(&self) -> &Arc<RequestCounters> {
        &self.inner.counters
    }

    /// An access token for `scope` (e.g. `https://graph.microsoft.com/.default`) in tenant `tenant` (config name).
    /// Served from the cache while it has more than the refresh margin (5 min) to live.
    pub async fn token(&self, tenant: &str, scope: &str) -> Result<Secret, AuthError> {
        let key: TokenKey = (tenant.to_owned(), scope.to_owned());
        if let Some(token) = self.cached(&key) {
            return Ok(token);
        }
        // One refresh per key at a time: concurrent callers wait for it instead of stampeding the token endpoint.
        let lock = {
            let mut locks = self
                .inner
                .refresh_locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let _refreshing = lock.lock().await;
        if let Some(token) = self.cached(&key) {
            return Ok(token);
        }
        let credential = self.credential(tenant).await?;
        let access = credential
            .get_token(&[scope], None)
            .await
            .map_err(|error| AuthError::Token {
                tenant: tenant.to_owned(),
                scope: scope.to_owned(),
                message: error.to_string(),
            })?;
        let cached = CachedToken {
            token: Secret::new(access.token.secret()),
            expires_at_unix: access.expires_on.unix_timestamp(),
        };
        let token = cached.token.clone();
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, cached);
        Ok(token)
    }

    /// Forgets the cached token of (tenant, scope).
    pub fn invalidate(&self, tenant: &str, scope: &str) {
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(tenant.to_owned(), scope.to_owned()));
    }

    /// A [`TokenSource`] bound to (tenant, scope), for an `ApiClient`.
    pub fn source(&self, tenant: &str, scope: &str) -> Arc<dyn TokenSource> {
        Arc::new(BoundTokenSource {
            provider: self.clone(),
            tenant: tenant.to_owned(),
            scope: scope.to_owned(),
        })
    }

    /// Reads a secret from the configured Key Vault with the platform identity.
    pub async fn key_vault_secret(&self, tenant: &str, name: &str) -> Result<Secret, AuthError> {
        let vault = self.key_vault(tenant).await?;
        vault.get(name).await.map_err(|source| AuthError::KeyVault {
            tenant: tenant.to_owned(),
            source,
        })
    }

    /// The configured Key Vault, read and written with the platform identity (`tenant` names whom errors are about).
    pub async fn key_vault_client(&self, tenant: &str) -> Result<KeyVaultSecrets, AuthError> {
        self.key_vault(tenant).await.cloned()
    }

    fn cached(&self, key: &TokenKey) -> Option<Secret> {
        let tokens = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let cached = tokens.get(key)?;
        let margin = i64::try_from(self.inner.refresh_margin.as_secs()).unwrap_or(i64::MAX);
        let now = chrono::Utc::now().timestamp();
        (cached.expires_at_unix - margin > now).then(|| cached.token.clone())
    }

    async fn platform_credential(&self) -> Result<Arc<dyn TokenCredential>, AuthError> {
        self.inner
            .platform_credential
            .get_or_try_init(|| async {
                match &self.inner.platform {
                    PlatformIdentity::Custom(credential) => Ok(credential.clone()),
                    PlatformIdentity::FromEnvironment => {
                        if std::env::var_os("IDENTITY_ENDPOINT").is_some() {
                            let user_assigned_id = std::env::var("AZURE_CLIENT_ID")
                                .ok()
                                .filter(|id| !id.trim().is_empty())
                                .map(UserAssignedId::ClientId);
                            let options = ManagedIdentityCredentialOptions {
                                user_assigned_id,
                                client_options: client_options(
                                    &self.inner.http,
                                    &self.inner.counters,
                                    Service::ManagedIdentity,
                                ),
                            };
                            let credential: Arc<dyn TokenCredential> =
                                ManagedIdentityCredential::new(Some(options)).map_err(|error| {
                                    AuthError::PlatformIdentity(error.to_string())
                                })?;
                            Ok(credential)
                        } else {
                            let credential: Arc<dyn TokenCredential> =
                                DeveloperToolsCredential::new(None).map_err(|error| {
                                    AuthError::PlatformIdentity(error.to_string())
                                })?;
                            Ok(credential)
                        }
                    }
                }
            })
            .await
            .cloned()
    }

    async fn key_vault(&self, tenant: &str) -> Result<&KeyVaultSecrets, AuthError> {
        let url = self
            .inner
            .key_vault_url
            .as_ref()
            .ok_or_else(|| AuthError::NoKeyVault {
                tenant: tenant.to_owned(),
            })?;
        self.inner
            .key_vault
            .get_or_try_init(|| async {
                let credential = self.platform_credential().await?;
                KeyVaultSecrets::new(url, credential, &self.inner.http, &self.inner.counters)
                    .map_err(|source| AuthError::KeyVault {
                        tenant: tenant.to_owned(),
                        source,
                    })
            })
            .await
    }

    async fn credential(&self, tenant_name: &str) -> Result<Arc<dyn TokenCredential>, AuthError> {
        let mut credentials = self.inner.credentials.lock().await;
        if let Some(credential) = credentials.get(tenant_name) {
            return Ok(credential.clone());
        }
        let tenant = self
            .inner
            .tenants
            .get(tenant_name)
            .ok_or_else(|| AuthError::UnknownTenant(tenant_name.to_owned()))?;
        let credential = self.build_credential(tenant).await?;
        credentials.insert(tenant_name.to_owned(), credential.clone());
        Ok(credential)
    }

    async fn build_credential(
        &self,
        tenant: &TenantAuth,
    ) -> Result<Arc<dyn TokenCredential>, AuthError> {
        let http = &self.inner.http;
        let counters = &self.inner.counters;
        let sdk_error = |error: azure_core::Error| AuthError::Credential {
            tenant: tenant.name.clone(),
            message: error.to_string(),
        };
        let client_secret = |secret: Secret| -> Result<Arc<dyn TokenCredential>, AuthError> {
            let options = ClientSecretCredentialOptions {
                client_options: login_client_options(http, counters, &tenant.login_base),
            };
            let credential = ClientSecretCredential::new(
                &tenant.tenant_id,
                tenant.client_id.clone(),
                azure_core::credentials::Secret::new(secret.expose().to_owned()),
                Some(options),
            )
            .map_err(sdk_error)?;
            Ok(credential)
        };
        let with_assertion =
            |assertion: Box<dyn azure_identity::ClientAssertion>| -> Result<Arc<dyn TokenCredential>, AuthError> {
                let options = ClientAssertionCredentialOptions {
                    client_options: login_client_options(http, counters, &tenant.login_base),
                };
                let credential = ClientAssertionCredential::new(
                    tenant.tenant_id.clone(),
                    tenant.client_id.clone(),
                    BoxedAssertion(assertion),
                    Some(options),
                )
                .map_err(sdk_error)?;
                Ok(credential)
            };
        match &tenant.credential {
            CredentialSource::Env(var) => {
                let value = std::env::var(var).unwrap_or_default();
                if value.trim().is_empty() {
                    return Err(AuthError::MissingEnv {
                        tenant: tenant.name.clone(),
                        var: var.clone(),
                    });
                }
                client_secret(Secret::new(value))
            }
            CredentialSource::ClientSecret(secret) => client_secret(secret.clone()),
            CredentialSource::KeyVaultSecret(name) => {
                let secret = self.key_vault_secret(&tenant.name, name).await?;
                client_secret(secret)
            }
            CredentialSource::KeyVaultCertificate(name) => {
                let pem = self.key_vault_secret(&tenant.name, name).await?;
                let signer =
                    CertificateSigner::from_pem(&pem).map_err(|source| AuthError::Certificate {
                        tenant: tenant.name.clone(),
                        name: name.clone(),
                        source,
                    })?;
                with_assertion(Box::new(CertificateAssertion {
                    signer: Arc::new(signer),
                    client_id: tenant.client_id.clone(),
                    token_endpoint: token_endpoint(&tenant.login_base, &tenant.tenant_id),
                }))
            }
            CredentialSource::FederatedManagedIdentity => {
                let platform = self.platform_credential().await?;
                with_assertion(Box::new(FederatedAssertion {
                    platform,
                    audience_scope: federation_scope(&tenant.login_base),
                }))
            }
        }
    }
}

/// The `.default` scope of a resource: `https://graph.microsoft.com` → `https://graph.microsoft.com/.default`.
/// Audiences follow the tenant's cloud (docs/microsoft-facts.md §6), not endpoint overrides: a proxy or the simulator in
/// front of Graph still wants a Graph token.
pub fn default_scope(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

/// A [`TokenSource`] for one (tenant, scope).
#[derive(Debug)]
struct BoundTokenSource {
    provider: TokenProvider,
    tenant: String,
    scope: String,
}

#[async_trait::async_trait]
impl TokenSource for BoundTokenSource {
    async fn bearer(&self) -> Result<Secret, AuthError> {
        self.provider.token(&self.tenant, &self.scope).await
    }

    fn invalidate(&self) {
        self.provider.invalidate(&self.tenant, &self.scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_audience_follows_the_cloud_of_the_login_endpoint() {
        let scope = |url: &str| federation_scope(&Url::parse(url).unwrap());
        assert_eq!(
            scope("https://login.microsoftonline.com/"),
            "api://AzureADTokenExchange/.default"
        );
        assert_eq!(
            scope("https://login.microsoftonline.us/"),
            "api://AzureADTokenExchangeUSGov/.default"
        );
        assert_eq!(
            scope("https://login.chinacloudapi.cn/"),
            "api://AzureADTokenExchangeChina/.default"
        );
        assert_eq!(
            scope("https://127.0.0.1:8443/"),
            "api://AzureADTokenExchange/.default"
        );
    }

    #[test]
    fn token_endpoint_and_default_scope_shapes() {
        let login = Url::parse("https://login.microsoftonline.us/").unwrap();
        assert_eq!(
            token_endpoint(&login, "contoso.onmicrosoft.com"),
            "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            default_scope("https://graph.microsoft.com/"),
            "https://graph.microsoft.com/.default"
        );
    }

    fn tenant(credential: CredentialSource, login: &str) -> TenantAuth {
        TenantAuth {
            name: "acme".into(),
            tenant_id: "acme.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            login_base: Url::parse(login).unwrap(),
            credential,
        }
    }

    #[test]
    fn misconfigurations_are_refused_up_front() {
        let http =
            crate::m365::http::build_http_client(&crate::m365::http::HttpSettings::default())
                .unwrap();
        let kv = TokenProvider::new(
            http.clone(),
            vec![tenant(
                CredentialSource::KeyVaultSecret("s".into()),
                "https://login.microsoftonline.com/",
            )],
            None,
            PlatformIdentity::FromEnvironment,
            RequestCounters::shared(),
        );
        assert!(matches!(kv, Err(AuthError::NoKeyVault { .. })));
        let path = TokenProvider::new(
            http,
            vec![tenant(
                CredentialSource::Env("X".into()),
                "https://proxy.example/login/",
            )],
            None,
            PlatformIdentity::FromEnvironment,
            RequestCounters::shared(),
        );
        assert!(matches!(path, Err(AuthError::BadLoginEndpoint { .. })));
    }

    #[tokio::test]
    async fn a_missing_environment_secret_names_the_variable_not_a_value() {
        let provider = TokenProvider::new(
            crate::m365::http::build_http_client(&crate::m365::http::HttpSettings::default())
                .unwrap(),
            vec![tenant(
                CredentialSource::Env("GALBRIDGE_TEST_SURELY_UNSET_SECRET".into()),
                "https://login.microsoftonline.com/",
            )],
            None,
            PlatformIdentity::FromEnvironment,
            RequestCounters::shared(),
        )
        .unwrap();
        let error = provider
            .token("acme", "https://graph.microsoft.com/.default")
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("GALBRIDGE_TEST_SURELY_UNSET_SECRET"),
            "{error}"
        );
        assert_eq!(
            provider.counters().get(Service::Login),
            0,
            "nothing was sent"
        );
    }
}
