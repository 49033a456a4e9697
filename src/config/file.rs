//! The shape of `galbridge.toml` at the top level: `[service]`, `[state]`, `[key_vault]`, `[tenants.*]`, and the
//! lists of links and meshes (their types live in [`super::link`]). These types mirror the file exactly
//! (`deny_unknown_fields`, a doc comment on every field: they become the JSON Schema's descriptions).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::link::{LinkConfig, MeshConfig};
use super::values::{Duration, EndpointUrl, Guid, TenantId};

/// A galbridge configuration file: tenants, the links between them, and where state is kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "galbridge configuration")]
pub struct ConfigFile {
    /// Settings of the service as a whole (schedules, concurrency, trust).
    #[serde(default)]
    pub service: ServiceSettings,
    /// Where galbridge keeps its sync state (checkpoints, leases, run records). Default: a local file store.
    #[serde(default)]
    pub state: StateSettings,
    /// The Azure Key Vault holding tenant credentials; required when any credential names a Key Vault item.
    #[serde(default)]
    pub key_vault: Option<KeyVaultSettings>,
    /// The Microsoft 365 tenants galbridge reads from or writes to, by a short name of your choice.
    #[serde(default)]
    pub tenants: BTreeMap<String, Tenant>,
    /// One-way links: a source scope in one tenant synced to a target in a tenant.
    #[serde(default)]
    pub links: Vec<LinkConfig>,
    /// Groups of tenants synced with each other: every tenant to every other (N tenants give N×(N−1) links).
    #[serde(default)]
    pub meshes: Vec<MeshConfig>,
}

/// `[service]`: settings of the service as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// How often a link is due when it sets neither `interval` nor `schedule` (the timer runs what is due).
    pub default_interval: Duration,
    /// How often a link re-reads its whole source and repairs drift in the target, instead of reading changes only.
    pub full_reconcile_every: Duration,
    /// The most Exchange commands a mail-contact run has in flight at once.
    pub max_concurrency: u32,
    /// How many mailboxes a phones (`personal_contacts`) run writes at once. Each has at most 4 requests in flight
    /// (Outlook's limit per mailbox), so with Graph's real latencies (100–300 ms) it takes hundreds to approach
    /// Graph's 130,000 requests per 10 s per app, which galbridge never exceeds however high this is. A mailbox in
    /// flight holds one batch and its list of pending people (well under 1 MB for 2,000 people).
    pub mailboxes_in_flight: u32,
    /// The longest a run (or a timer invocation running several due links) keeps working, throttled retries and
    /// `Retry-After` waits included. Throttling never makes galbridge give up before this; at the budget a run keeps
    /// what it finished, ends `partially_failed`, and the next run carries on. Keep it well inside the Functions
    /// timeout (host.json `functionTimeout`, 30 minutes). Default "20m"; at least "1m".
    pub run_budget: Duration,
    /// A PEM file of extra certificate authorities to trust (a proxy, local test doubles). Relative paths are
    /// resolved from the configuration file's folder. The environment variable GALBRIDGE_EXTRA_CA_FILE overrides it.
    pub extra_ca_file: Option<PathBuf>,
    /// Client id of the user-assigned managed identity to use for Key Vault, Table Storage and federated
    /// credentials; absent = the system-assigned identity. The environment variable
    /// GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID overrides it.
    pub managed_identity_client_id: Option<Guid>,
    /// Near-real-time sync from Graph change notifications (the `Notify` function); absent = off, the timer alone.
    pub notifications: Option<super::notifications::NotificationSettings>,
    /// The Graph requests per 10 seconds galbridge keeps to per app registration, summed over every process that
    /// shares the state store (all Functions instances of a deployment, every CLI run on one state folder): Graph
    /// allows 130,000 per app across all tenants (the default). Set less when other software uses the same app
    /// registration. At least 20 (one `$batch`), at most 130,000.
    pub graph_requests_per_10s: u32,
    /// The Azure Storage queue that spreads a phones (`personal_contacts`) run's shards over Functions instances (the
    /// queue-triggered `PhonesShard` function); absent = shards run in this process. In the Functions deployment the
    /// identity-based connection settings GALBRIDGE_QUEUE__queueServiceUri (+ GALBRIDGE_QUEUE__credential,
    /// GALBRIDGE_QUEUE__clientId) configure it when this section is absent; a connection string in GALBRIDGE_QUEUE
    /// does too (local use, Azurite).
    pub shard_queue: Option<ShardQueueSettings>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(15 * 60),
            full_reconcile_every: Duration::from_secs(24 * 3_600),
            max_concurrency: 8,
            mailboxes_in_flight: 256,
            run_budget: Duration::from_secs(20 * 60),
            extra_ca_file: None,
            managed_identity_client_id: None,
            notifications: None,
            graph_requests_per_10s: 130_000,
            shard_queue: None,
        }
    }
}

/// `[state]`: where sync state lives, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateSettings {
    /// A folder on this machine (the default; for the CLI and single-machine use).
    File(FileStateSettings),
    /// Azure Table Storage (for the Functions deployment): one partition per link.
    Table(TableStateSettings),
}

impl Default for StateSettings {
    fn default() -> Self {
        Self::File(FileStateSettings::default())
    }
}

/// `[state] kind = "file"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileStateSettings {
    /// The folder that holds the state; relative paths are resolved from the configuration file's folder.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

impl Default for FileStateSettings {
    fn default() -> Self {
        Self {
            path: default_state_path(),
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from(".galbridge/state")
}

/// `[state] kind = "table"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableStateSettings {
    /// The Table service endpoint, e.g. https://stgalbridge.table.core.windows.net (Azurite:
    /// http://127.0.0.1:10002/devstoreaccount1). Required with managed-identity auth. The environment variable
    /// GALBRIDGE_STATE_TABLE_ENDPOINT overrides it.
    #[serde(default)]
    pub endpoint: Option<EndpointUrl>,
    /// The table name (3–63 letters and digits, starting with a letter). The environment variable
    /// GALBRIDGE_STATE_TABLE_NAME overrides it.
    #[serde(default = "default_table_name")]
    pub table: String,
    /// How to authenticate to Table Storage.
    #[serde(default)]
    pub auth: TableAuth,
}

fn default_table_name() -> String {
    "galbridge".to_owned()
}

/// How galbridge authenticates to Table Storage (and Queue Storage).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TableAuth {
    /// The function app's managed identity (role Storage Table Data Contributor).
    #[default]
    ManagedIdentity,
    /// A storage connection string read from the named environment variable (local use, Azurite).
    ConnectionStringEnv(String),
}

/// `[service.shard_queue]`: where a phones run's shards are queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardQueueSettings {
    /// The Queue service endpoint, e.g. https://stgalbridge.queue.core.windows.net (Azurite:
    /// http://127.0.0.1:10001/devstoreaccount1). Required with managed-identity auth; with a connection string it
    /// defaults to the string's queue endpoint. The environment variable GALBRIDGE_QUEUE__queueServiceUri overrides it.
    #[serde(default)]
    pub endpoint: Option<EndpointUrl>,
    /// The queue name: 3–56 lowercase letters, digits and single hyphens, starting and ending with a letter or digit
    /// (56 so that the poison queue `{name}-poison` stays within the service's 63). Must match the `queueName` of
    /// `functions/PhonesShard/function.json`, which is the default.
    #[serde(default = "default_shard_queue_name")]
    pub name: String,
    /// How to authenticate to Queue Storage (the same choices as `[state]` Table Storage).
    #[serde(default)]
    pub auth: TableAuth,
    /// Client id of the user-assigned managed identity for the queue; absent = `service.managed_identity_client_id`.
    /// The environment variable GALBRIDGE_QUEUE__clientId overrides it.
    #[serde(default)]
    pub managed_identity_client_id: Option<Guid>,
}

/// The queue `functions/PhonesShard/function.json` listens to.
pub const DEFAULT_SHARD_QUEUE_NAME: &str = "galbridge-phones-shards";

fn default_shard_queue_name() -> String {
    DEFAULT_SHARD_QUEUE_NAME.to_owned()
}

impl Default for ShardQueueSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            name: default_shard_queue_name(),
            auth: TableAuth::default(),
            managed_identity_client_id: None,
        }
    }
}

/// `[key_vault]`: the vault holding tenant credentials, read with the managed identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyVaultSettings {
    /// The vault URL, e.g. https://kv-galbridge.vault.azure.net/. The environment variable GALBRIDGE_KEY_VAULT_URL
    /// overrides it.
    pub url: EndpointUrl,
}

/// `[tenants.NAME]`: one Microsoft 365 tenant and galbridge's app registration in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// The tenant's directory id (GUID) or its initial domain (contoso.onmicrosoft.com).
    pub tenant_id: TenantId,
    /// The tenant's initial domain (contoso.onmicrosoft.com), which Exchange needs for routing
    /// (`X-AnchorMailbox`). Optional: taken from `tenant_id` when that is a domain, else looked up.
    #[serde(default)]
    pub initial_domain: Option<String>,
    /// The Microsoft cloud the tenant lives in; decides the login, Graph and Exchange hosts.
    #[serde(default)]
    pub cloud: Cloud,
    /// The application (client) id of galbridge's app registration in this tenant.
    pub client_id: Guid,
    /// Where the app's credential comes from. Secrets never sit in this file: it only names where to find them.
    pub credential: Credential,
    /// Explicit endpoints, each optional, overriding the cloud's (for proxies and local test doubles).
    #[serde(default)]
    pub endpoints: EndpointOverrides,
}

/// A Microsoft cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    /// The global cloud (also GCC).
    #[default]
    Global,
    /// US Government GCC High.
    Usgov,
    /// US Government DoD.
    Usgovdod,
    /// Azure China, operated by 21Vianet.
    China,
}

/// Where a tenant's app credential comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// A client secret stored as a Key Vault secret of this name.
    KeyVaultSecret(String),
    /// A certificate and its private key (PEM) stored as a Key Vault secret of this name.
    KeyVaultCertificate(String),
    /// A client secret read from this environment variable (local use).
    Env(String),
    /// No secret: the function app's managed identity is a federated credential of a multi-tenant app.
    FederatedManagedIdentity,
}

impl Credential {
    /// The Key Vault item this credential needs, if any.
    pub fn key_vault_item(&self) -> Option<&str> {
        match self {
            Self::KeyVaultSecret(name) | Self::KeyVaultCertificate(name) => Some(name),
            Self::Env(_) | Self::FederatedManagedIdentity => None,
        }
    }
}

/// Explicit endpoints of a tenant; each one given replaces the cloud's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointOverrides {
    /// The login authority (token endpoint base), instead of e.g. https://login.microsoftonline.com/.
    #[serde(default)]
    pub login: Option<EndpointUrl>,
    /// The Microsoft Graph base, instead of e.g. https://graph.microsoft.com/.
    #[serde(default)]
    pub graph: Option<EndpointUrl>,
    /// The Exchange Online admin base, instead of e.g. https://outlook.office365.com/.
    #[serde(default)]
    pub exchange: Option<EndpointUrl>,
}
