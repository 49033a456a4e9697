//! How the table client proves who it is: Shared Key Lite (account key, for Azurite and connection strings) or an
//! Entra bearer token from an `azure_core` `TokenCredential` (the function app's managed identity in Azure).
//!
//! Shared Key Lite for the Table service signs `x-ms-date + "\n" + "/" + account + URL path` with HMAC-SHA256
//! (https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key#shared-key-lite-and-table-service-format-for-2009-09-19-and-later).
//! Quirk: with a path-style endpoint (Azurite, `http://127.0.0.1:10002/devstoreaccount1`) the account name appears
//! twice in the signed resource (`/devstoreaccount1/devstoreaccount1/table`): the rule is the same, the path simply
//! starts with the account. Bearer tokens need `x-ms-version` 2019-02-02 or later, which is what we send.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Mutex;
use url::Url;

use crate::state::StateError;

/// The OAuth scope of Azure Storage.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// Azurite's well-known development account (public, documented; not a secret).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_TABLE_ENDPOINT: &str = "http://127.0.0.1:10002/devstoreaccount1";
const DEV_QUEUE_ENDPOINT: &str = "http://127.0.0.1:10001/devstoreaccount1";

/// Credentials for the table endpoint.
#[derive(Clone)]
pub enum TableAuth {
    /// Storage account name and key (Shared Key Lite).
    SharedKey { account: String, key: AccountKey },
    /// An Entra token for `https://storage.azure.com/.default` (managed identity, developer credentials).
    Token(Arc<dyn TokenCredential>),
}

impl fmt::Debug for TableAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedKey { account, .. } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .finish_non_exhaustive(),
            Self::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// A decoded storage account key; never printed.
#[derive(Clone)]
pub struct AccountKey(Vec<u8>);

impl AccountKey {
    /// Decodes the base64 key of a connection string or the portal.
    pub fn from_base64(encoded: &str) -> Result<Self, StateError> {
        BASE64
            .decode(encoded.trim())
            .map(Self)
            .map_err(|_| StateError::Io("the storage account key is not valid base64".to_owned()))
    }

    /// `Base64(HMAC-SHA256(key, text))`: the signature of every Shared Key scheme (the Queue client uses it with its
    /// own string to sign).
    pub(crate) fn sign(&self, text: &str) -> Result<String, StateError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).map_err(|_| {
            StateError::Io("the storage account key cannot be used for HMAC".to_owned())
        })?;
        mac.update(text.as_bytes());
        Ok(BASE64.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKey(<redacted>)")
    }
}

/// What a storage connection string says: the table and queue endpoints and the shared key.
#[derive(Debug, Clone)]
pub struct ConnectionString {
    pub table_endpoint: Url,
    /// `QueueEndpoint`, else derived like the table's (`{protocol}://{account}.queue.{suffix}`; Azurite: port 10001).
    pub queue_endpoint: Url,
    pub auth: TableAuth,
}

impl ConnectionString {
    /// Parses `UseDevelopmentStorage=true` (Azurite's defaults) or
    /// `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…[;TableEndpoint=…][;EndpointSuffix=…]`.
    /// Errors name the missing or bad setting, never the key.
    pub fn parse(text: &str) -> Result<Self, StateError> {
        let bad =
            |reason: &str| StateError::Io(format!("invalid storage connection string: {reason}"));
        let mut settings = std::collections::HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad("a setting has no '='"))?;
            settings.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        if settings
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            let endpoint = settings
                .get("tableendpoint")
                .map_or(DEV_TABLE_ENDPOINT, String::as_str);
            let queue_endpoint = settings
                .get("queueendpoint")
                .map_or(DEV_QUEUE_ENDPOINT, String::as_str);
            return Ok(Self {
                table_endpoint: Url::parse(endpoint)
                    .map_err(|_| bad("TableEndpoint is not a URL"))?,
                queue_endpoint: Url::parse(queue_endpoint)
                    .map_err(|_| bad("QueueEndpoint is not a URL"))?,
                auth: TableAuth::SharedKey {
                    account: DEV_ACCOUNT.to_owned(),
                    key: AccountKey::from_base64(DEV_ACCOUNT_KEY)?,
                },
            });
        }
        if settings.contains_key("sharedaccesssignature") {
            return Err(bad(
                "SAS connection strings are not supported; use an account key or managed identity",
            ));
        }
        let account = settings
            .get("accountname")
            .ok_or_else(|| bad("AccountName is missing"))?
            .clone();
        let key = AccountKey::from_base64(
            settings
                .get("accountkey")
                .ok_or_else(|| bad("AccountKey is missing"))?,
        )?;
        let endpoint_of = |setting: &str, service: &str| match settings.get(setting) {
            Some(endpoint) => endpoint.clone(),
            None => {
                let protocol = settings
                    .get("defaultendpointsprotocol")
                    .map_or("https", String::as_str);
                let suffix = settings
                    .get("endpointsuffix")
                    .map_or("core.windows.net", String::as_str);
                format!("{protocol}://{account}.{service}.{suffix}")
            }
        };
        let table_endpoint = Url::parse(&endpoint_of("tableendpoint", "table"))
            .map_err(|_| bad("TableEndpoint is not a URL"))?;
        let queue_endpoint = Url::parse(&endpoint_of("queueendpoint", "queue"))
            .map_err(|_| bad("QueueEndpoint is not a URL"))?;
        Ok(Self {
            table_endpoint,
            queue_endpoint,
            auth: TableAuth::SharedKey { account, key },
        })
    }
}

/// Computes the `Authorization` header value for Shared Key Lite.
pub(super) fn shared_key_lite(
    account: &str,
    key: &AccountKey,
    date: &str,
    url: &Url,
) -> Result<String, StateError> {
    // Only `comp` of the query would be signed; the table operations we use never carry it.
    let string_to_sign = format!("{date}\n/{account}{}", url.path());
    Ok(format!(
        "SharedKeyLite {account}:{}",
        key.sign(&string_to_sign)?
    ))
}

/// Caches the bearer token until five minutes before it expires.
#[derive(Default)]
pub struct TokenCache {
    cached: Mutex<Option<(String, i64)>>,
}

impl TokenCache {
    pub async fn bearer(&self, credential: &dyn TokenCredential) -> Result<String, StateError> {
        let mut cached = self.cached.lock().await;
        let now = azure_core::time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some((token, expires)) = cached.as_ref()
            && *expires - 300 > now
        {
            return Ok(format!("Bearer {token}"));
        }
        let token = credential
            .get_token(&[STORAGE_SCOPE], None)
            .await
            .map_err(|e| StateError::Io(format!("getting a token for Azure Storage: {e}")))?;
        let secret = token.token.secret().to_owned();
        *cached = Some((secret.clone(), token.expires_on.unix_timestamp()));
        Ok(format!("Bearer {secret}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage_means_azurite_defaults() {
        let parsed = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            parsed.table_endpoint.as_str(),
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert!(
            matches!(parsed.auth, TableAuth::SharedKey { ref account, .. } if account == DEV_ACCOUNT)
        );
    }

    #[test]
    fn full_connection_strings_build_the_endpoint_and_hide_the_key() {
        let text = "DefaultEndpointsProtocol=https;AccountName=stgal;AccountKey=c2VjcmV0LWtleQ==;EndpointSuffix=core.usgovcloudapi.net";
        let parsed = ConnectionString::parse(text).unwrap();
        assert_eq!(
            parsed.table_endpoint.as_str(),
            "https://stgal.table.core.usgovcloudapi.net/"
        );
        assert!(!format!("{parsed:?}").contains("c2VjcmV0"));

        let explicit =
            ConnectionString::parse(&format!("{text};TableEndpoint=http://127.0.0.1:9/acct"))
                .unwrap();
        assert_eq!(explicit.table_endpoint.as_str(), "http://127.0.0.1:9/acct");
    }

    #[test]
    fn bad_connection_strings_say_what_is_wrong_without_the_key() {
        let err = ConnectionString::parse("AccountName=a;AccountKey=not base64!!")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("base64") && !err.contains("not base64!!"),
            "{err}"
        );
        let err = ConnectionString::parse("AccountKey=c2VjcmV0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("AccountName"), "{err}");
    }

    #[test]
    fn shared_key_lite_matches_the_documented_algorithm() {
        // Independent computation of HMAC-SHA256("{date}\n/{account}{path}") with the dev key.
        let key = AccountKey::from_base64(DEV_ACCOUNT_KEY).unwrap();
        let url = Url::parse("http://127.0.0.1:10002/devstoreaccount1/Tables").unwrap();
        let date = "Mon, 23 Nov 2026 09:00:00 GMT";
        let header = shared_key_lite(DEV_ACCOUNT, &key, date, &url).unwrap();
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&BASE64.decode(DEV_ACCOUNT_KEY).unwrap()).unwrap();
        mac.update(b"Mon, 23 Nov 2026 09:00:00 GMT\n/devstoreaccount1/devstoreaccount1/Tables");
        let expected = BASE64.encode(mac.finalize().into_bytes());
        assert_eq!(header, format!("SharedKeyLite devstoreaccount1:{expected}"));
    }
}
