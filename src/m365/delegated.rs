//! Delegated sign-in for a mailbox read as a source (`[links.source] sign_in = "delegated"`, docs/microsoft-facts.md
//! §12): the device code flow that `galbridge login` runs once, and the refresh-token credential every run uses. Each
//! redemption returns a new refresh token, which is written back to its [`RefreshTokenStore`] before the access token
//! is used, so a crash never leaves an old token behind. A refresh token that is revoked, expired or missing is an
//! [`AuthError::SignInNeeded`] naming the command to run again. Tokens never reach a log or a message.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::auth::AuthError;
use super::auth::TokenSource;
use super::counters::{RequestCounters, Service};
use super::secret::Secret;

/// Where a mailbox's refresh token is kept between runs.
#[async_trait]
pub trait RefreshTokenStore: Send + Sync + fmt::Debug {
    /// The stored refresh token, if any.
    async fn load(&self) -> Result<Option<Secret>, AuthError>;
    /// Replaces the stored refresh token.
    async fn save(&self, token: &Secret) -> Result<(), AuthError>;
    /// Where it is (for messages; never the token).
    fn describe(&self) -> String;
}

/// A refresh token in a local file (CLI use), readable by its owner only.
#[derive(Debug, Clone)]
pub struct FileTokenStore {
    pub path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    refresh_token: String,
}

impl FileTokenStore {
    /// `{state folder}/refresh-tokens/{tenant}-{mailbox}.json` (the mailbox's `@` and dots kept, other characters `_`).
    pub fn in_state_folder(state: &std::path::Path, tenant: &str, mailbox: &str) -> Self {
        let safe: String = format!("{tenant}-{mailbox}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_') {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        FileTokenStore {
            path: state.join("refresh-tokens").join(format!("{safe}.json")),
        }
    }

    fn io_error(&self, what: &str, error: std::io::Error) -> AuthError {
        AuthError::Credential {
            tenant: String::new(),
            message: format!("{what} {}: {error}", self.path.display()),
        }
    }
}

#[async_trait]
impl RefreshTokenStore for FileTokenStore {
    async fn load(&self) -> Result<Option<Secret>, AuthError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => Ok(serde_json::from_slice::<StoredToken>(&bytes)
                .ok()
                .filter(|stored| !stored.refresh_token.is_empty())
                .map(|stored| Secret::new(stored.refresh_token))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(self.io_error("cannot read", error)),
        }
    }

    async fn save(&self, token: &Secret) -> Result<(), AuthError> {
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.io_error("cannot create the folder of", e))?;
        }
        let body = serde_json::to_vec(&StoredToken {
            refresh_token: token.expose().to_owned(),
        })
        .unwrap_or_default();
        // Written beside, then renamed: a crash leaves the old token or the new one, never half of one.
        let temporary = self.path.with_extension("json.tmp");
        write_private(&temporary, &body)
            .await
            .map_err(|e| self.io_error("cannot write", e))?;
        tokio::fs::rename(&temporary, &self.path)
            .await
            .map_err(|e| self.io_error("cannot replace", e))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(unix)]
async fn write_private(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = path.to_owned();
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&body)?;
        file.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(not(unix))]
async fn write_private(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    tokio::fs::write(path, body).await
}

/// One mailbox's delegated sign-in: the tenant's login endpoint, the app (a public client) and the scope.
#[derive(Debug, Clone)]
pub struct DelegatedLogin {
    pub http: reqwest::Client,
    pub counters: Arc<RequestCounters>,
    /// The login endpoint (cloud authority or override); only its origin is used.
    pub login_base: Url,
    /// Directory id or initial domain.
    pub tenant_id: String,
    /// The tenant's name in the configuration (messages, the command to run again).
    pub tenant_name: String,
    pub client_id: String,
    pub mailbox: String,
    /// `{graph audience}/Contacts.Read offline_access`.
    pub scope: String,
}

/// What the device authorization endpoint answers (the device code itself stays inside).
#[derive(Debug, Clone)]
pub struct DeviceCode {
    device_code: Secret,
    /// What to tell the person signing in (URL and user code).
    pub message: String,
    pub interval: Duration,
    pub expires_in: Duration,
}

/// The delegated scope for reading a mailbox's contacts, with a refresh token.
pub fn contacts_read_scope(graph_audience: &str) -> String {
    format!("{graph_audience}/Contacts.Read offline_access")
}

impl DelegatedLogin {
    fn endpoint(&self, leaf: &str) -> Result<Url, AuthError> {
        self.login_base
            .join(&format!("{}/oauth2/v2.0/{leaf}", self.tenant_id))
            .map_err(|e| AuthError::BadLoginEndpoint {
                tenant: self.tenant_name.clone(),
                url: format!("{}: {e}", self.login_base),
            })
    }

    fn sign_in_needed(&self, reason: impl Into<String>) -> AuthError {
        AuthError::SignInNeeded {
            tenant: self.tenant_name.clone(),
            mailbox: self.mailbox.clone(),
            reason: reason.into(),
        }
    }

    async fn post(&self, leaf: &str, form: &[(&str, &str)]) -> Result<(u16, Value), AuthError> {
        let url = self.endpoint(leaf)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.counters.count(Service::Login);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| AuthError::Token {
                tenant: self.tenant_name.clone(),
                scope: self.scope.clone(),
                message: e.without_url().to_string(),
            })?;
        let status = response.status().as_u16();
        let json = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, json))
    }

    /// Starts a device sign-in (`POST …/devicecode`).
    pub async fn start_device_code(&self) -> Result<DeviceCode, AuthError> {
        let (status, body) = self
            .post(
                "devicecode",
                &[("client_id", &self.client_id), ("scope", &self.scope)],
            )
            .await?;
        let device_code = body["device_code"].as_str().unwrap_or_default();
        if status != 200 || device_code.is_empty() {
            return Err(self.entra_failure(&body));
        }
        Ok(DeviceCode {
            device_code: Secret::new(device_code),
            message: body["message"].as_str().unwrap_or_default().to_owned(),
            interval: Duration::from_secs(body["interval"].as_u64().unwrap_or(5).max(1)),
            expires_in: Duration::from_secs(body["expires_in"].as_u64().unwrap_or(900)),
        })
    }

    /// Polls the token endpoint until the person signed in (or the code expired); returns the refresh token.
    pub async fn finish_device_code(&self, code: &DeviceCode) -> Result<Secret, AuthError> {
        let deadline = tokio::time::Instant::now() + code.expires_in;
        let mut interval = code.interval;
        loop {
            tokio::time::sleep(interval).await;
            let (status, body) = self
                .post(
                    "token",
                    &[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                        ("client_id", &self.client_id),
                        ("device_code", code.device_code.expose()),
                    ],
                )
                .await?;
            if status == 200 {
                return body["refresh_token"]
                    .as_str()
                    .filter(|token| !token.is_empty())
                    .map(Secret::new)
                    .ok_or_else(|| {
                        self.sign_in_needed(
                            "got no refresh token (the app must allow the offline_access permission)",
                        )
                    });
            }
            match body["error"].as_str().unwrap_or_default() {
                "authorization_pending" if tokio::time::Instant::now() < deadline => {}
                "slow_down" => interval += Duration::from_secs(5),
                _ => return Err(self.entra_failure(&body)),
            }
        }
    }

    /// Redeems a refresh token: the access token (with its lifetime in seconds) and the rotated refresh token.
    async fn redeem(&self, refresh: &Secret) -> Result<(Secret, i64, Option<Secret>), AuthError> {
        let (status, body) = self
            .post(
                "token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &self.client_id),
                    ("refresh_token", refresh.expose()),
                    ("scope", &self.scope),
                ],
            )
            .await?;
        let access = body["access_token"].as_str().unwrap_or_default();
        if status != 200 || access.is_empty() {
            if body["error"].as_str() == Some("invalid_grant") {
                return Err(self.sign_in_needed(format!(
                    "was refused: {}",
                    first_line(
                        body["error_description"]
                            .as_str()
                            .unwrap_or("invalid_grant")
                    )
                )));
            }
            return Err(self.entra_failure(&body));
        }
        let rotated = body["refresh_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .map(Secret::new);
        Ok((
            Secret::new(access),
            body["expires_in"].as_i64().unwrap_or(3599),
            rotated,
        ))
    }

    fn entra_failure(&self, body: &Value) -> AuthError {
        AuthError::Token {
            tenant: self.tenant_name.clone(),
            scope: self.scope.clone(),
            message: format!(
                "{}: {}",
                body["error"].as_str().unwrap_or("error"),
                first_line(body["error_description"].as_str().unwrap_or_default())
            ),
        }
    }
}

/// The first sentence of an Entra error description (without its trace and correlation ids).
fn first_line(text: &str) -> &str {
    text.split(" Trace ID:").next().unwrap_or(text).trim()
}

/// Access tokens for one mailbox from its stored refresh token, rotating it on every redemption.
pub struct DelegatedTokenSource {
    login: DelegatedLogin,
    store: Arc<dyn RefreshTokenStore>,
    cached: tokio::sync::Mutex<Option<(Secret, i64)>>,
}

impl fmt::Debug for DelegatedTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelegatedTokenSource")
            .field("tenant", &self.login.tenant_name)
            .field("mailbox", &self.login.mailbox)
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

impl DelegatedTokenSource {
    pub fn new(login: DelegatedLogin, store: Arc<dyn RefreshTokenStore>) -> Self {
        DelegatedTokenSource {
            login,
            store,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl TokenSource for DelegatedTokenSource {
    async fn bearer(&self) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        let now = chrono::Utc::now().timestamp();
        if let Some((token, expires_at)) = cached.as_ref()
            && *expires_at - 300 > now
        {
            return Ok(token.clone());
        }
        let refresh = self.store.load().await?.ok_or_else(|| {
            self.login.sign_in_needed(format!(
                "is missing (nothing stored in {})",
                self.store.describe()
            ))
        })?;
        let (access, lifetime, rotated) = self.login.redeem(&refresh).await?;
        // The rotated token is stored before the access token is used (docs/microsoft-facts.md §12).
        if let Some(rotated) = rotated {
            self.store.save(&rotated).await?;
        }
        *cached = Some((access.clone(), now + lifetime));
        Ok(access)
    }

    fn invalidate(&self) {
        if let Ok(mut cached) = self.cached.try_lock() {
            *cached = None;
        }
    }
}
