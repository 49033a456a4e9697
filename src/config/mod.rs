//! The configuration: one TOML file (`--config`, else `GALBRIDGE_CONFIG`, else `./galbridge.toml`).
//!
//! - [`ConfigFile`] and its parts mirror the file (serde with `deny_unknown_fields`, JSON Schema from doc comments).
//! - [`ConfigFile::validate`] is the pure cross-check; errors carry the key path and a reason.
//! - [`Config`] is a loaded, validated configuration with environment overrides applied and paths resolved; it
//!   hands the engine [`ResolvedLink`]s (meshes expanded, defaults filled) and each [`Tenant::endpoints`].
//!
//! Environment overrides (for deployments that keep one file across environments): `GALBRIDGE_EXTRA_CA_FILE`,
//! `GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID`, `GALBRIDGE_KEY_VAULT_URL`, `GALBRIDGE_STATE_TABLE_ENDPOINT`,
//! `GALBRIDGE_STATE_TABLE_NAME`; for the shard queue, the Functions identity-based connection settings
//! `GALBRIDGE_QUEUE__queueServiceUri`, `GALBRIDGE_QUEUE__credential`, `GALBRIDGE_QUEUE__clientId`, or a connection
//! string in `GALBRIDGE_QUEUE` (see [`ShardQueueSettings`]).

mod file;
mod guest;
mod link;
mod mailbox_source;
mod names;
mod notifications;
mod resolve;
mod secret;
mod template;
mod validate;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use file::{
    Cloud, ConfigFile, Credential, DEFAULT_SHARD_QUEUE_NAME, EndpointOverrides, FileStateSettings,
    KeyVaultSettings, ServiceSettings, ShardQueueSettings, StateSettings, TableAuth,
    TableStateSettings, Tenant,
};
pub use guest::{GuestOnDelete, GuestUserOptions, GuestUserTargetConfig, GuestUserType};
pub use link::{
    FieldPolicy, FilterRule, GROUP_FILTER_ATTRIBUTES, HiddenSource, LinkConfig,
    MailContactTargetConfig, MailboxSelection, MappingConfig, MeshConfig, OnDelete, OnMailboxLeave,
    OverrideConfig, PersonalContactsTargetConfig, SafetyConfig, SourceConfig, TargetConfig,
};
pub use mailbox_source::{MailboxFolderSource, MailboxSignIn, SourceKindConfig, folder_path};
pub use names::did_you_mean;
pub use notifications::{NotificationSettings, USERS_MAX_LIFETIME_SECS};
pub use resolve::{
    AttributeFilter, Cadence, FilterTest, MailContactOptions, Mailboxes, Mapping, NamedTenant,
    ObjectOverride, PersonalContactsOptions, ResolvedLink, Safety, SourceScope, TargetOptions,
    TenantEndpoints, equals_ignoring_case, mesh_link_name, starts_with_ignoring_case,
};
pub use secret::Secret;
pub use template::{EntryField, SOURCE_ATTRIBUTES, SOURCE_TENANT_VARIABLE, Template, TemplatePart};
pub use validate::ConfigIssue;
pub use values::{CronSchedule, Duration, EndpointUrl, Guid, Pattern, TenantId};

/// The environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "GALBRIDGE_CONFIG";
/// The file used when neither `--config` nor `GALBRIDGE_CONFIG` is given.
pub const DEFAULT_CONFIG_FILE: &str = "galbridge.toml";

/// Why a configuration could not be loaded. The message always starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML at all.
    #[error("{file}: line {line}, column {column}: {reason}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        reason: String,
    },
    /// TOML, but not a valid galbridge configuration (each issue on its own line).
    #[error("{}", display_issues(file, issues))]
    Invalid {
        file: String,
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// The problems with their key paths (empty for read and syntax errors).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            Self::Invalid { issues, .. } => issues,
            Self::Read { .. } | Self::Syntax { .. } => &[],
        }
    }
}

fn display_issues(file: &str, issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|issue| format!("{file}: {}: {}", issue.path, issue.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loaded and validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    origin: PathBuf,
    file: ConfigFile,
    links: Vec<ResolvedLink>,
}

impl Config {
    /// Which file to read: `explicit` (`--config`), else `GALBRIDGE_CONFIG`, else `./galbridge.toml`.
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE))
    }

    /// Reads, parses and validates a file, applying the process environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let config = Self::from_toml_str_with_env(&text, path, |name| std::env::var(name).ok())?;
        config.check_files()?;
        Ok(config)
    }

    /// Files the configuration names must be readable now: `galbridge serve` builds the engine (which reads them)
    /// only on the first invocation, and a typo found then is found late. Only [`Config::load`] checks this; the
    /// text-only constructors stay free of I/O.
    fn check_files(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.file.service.extra_ca_file else {
            return Ok(());
        };
        match std::fs::File::open(path) {
            Ok(_) if path.is_file() => Ok(()),
            Ok(_) => Err(format!("{:?} is not a file", path.display().to_string())),
            Err(error) => Err(format!(
                "cannot read {:?}: {error}",
                path.display().to_string()
            )),
        }
        .map_err(|reason| {
            invalid(
                &self.origin,
                vec![ConfigIssue {
                    path: "service.extra_ca_file".to_owned(),
                    reason,
                }],
            )
        })
    }

    /// Parses and validates TOML text (no environment overrides). `origin` names the file in errors and anchors
    /// relative paths.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_str_with_env(text, origin, |_| None)
    }

    /// Parses and validates TOML text with environment overrides looked up through `env`.
    pub fn from_toml_str_with_env(
        text: &str,
        origin: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut file = parse_toml(text, origin)?;
        apply_env_overrides(&mut file, &env).map_err(|issues| invalid(origin, issues))?;
        Self::from_file(file, origin)
    }

    /// Validates an already parsed file.
    pub fn from_file(mut file: ConfigFile, origin: &Path) -> Result<Self, ConfigError> {
        file.validate().map_err(|issues| invalid(origin, issues))?;
        resolve_paths(&mut file, origin);
        let links = resolve::resolve_links(&file);
        Ok(Self {
            origin: origin.to_path_buf(),
            file,
            links,
        })
    }

    /// The file this came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The file's contents after environment overrides, with relative paths resolved.
    pub fn file(&self) -> &ConfigFile {
        &self.file
    }

    /// Every link, mesh links included, in file order.
    pub fn links(&self) -> &[ResolvedLink] {
        &self.links
    }

    pub fn link(&self, name: &str) -> Option<&ResolvedLink> {
        self.links.iter().find(|link| link.name == name)
    }

    /// The closest link name to a misspelt one.
    pub fn suggest_link(&self, name: &str) -> Option<&str> {
        did_you_mean(name, self.links.iter().map(|link| link.name.as_str()))
    }

    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.file.tenants.get(name)
    }

    pub fn service(&self) -> &ServiceSettings {
        &self.file.service
    }

    pub fn state(&self) -> &StateSettings {
        &self.file.state
    }

    pub fn key_vault(&self) -> Option<&KeyVaultSettings> {
        self.file.key_vault.as_ref()
    }
}

fn invalid(origin: &Path, issues: Vec<ConfigIssue>) -> ConfigError {
    ConfigError::Invalid {
        file: origin.display().to_string(),
        issues,
    }
}

/// TOML → [`ConfigFile`], with the key path of the first problem (serde stops at the first).
pub fn parse_toml(text: &str, origin: &Path) -> Result<ConfigFile, ConfigError> {
    let file = origin.display().to_string();
    let deserializer =
        toml::Deserializer::parse(text).map_err(|error| syntax_error(&file, text, &error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error
            .path()
            .iter()
            .filter(|segment| !matches!(segment, serde_path_to_error::Segment::Unknown))
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(".")
            .replace(".[", "[");
        let inner = error.into_inner();
        if path.is_empty() {
            // A problem at the top level (e.g. an unknown top-level key): locate it by line instead.
            if let Some(span) = inner.span() {
                let (line, column) = line_and_column(text, span.start);
                return ConfigError::Syntax {
                    file,
                    line,
                    column,
                    reason: inner.message().to_owned(),
                };
            }
        }
        let path = if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path
        };
        ConfigError::Invalid {
            file,
            issues: vec![ConfigIssue {
                path,
                reason: inner.message().to_owned(),
            }],
        }
    })
}

fn syntax_error(file: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error
        .span()
        .map(|span| line_and_column(text, span.start))
        .unwrap_or((1, 1));
    ConfigError::Syntax {
        file: file.to_owned(),
        line,
        column,
        reason: error.message().trim().to_owned(),
    }
}

/// 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |rest| rest.chars().count())
        + 1;
    (line, column)
}

fn apply_env_overrides(
    file: &mut ConfigFile,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut bad = |variable: &str, reason: String| {
        issues.push(ConfigIssue {
            path: format!("env {variable}"),
            reason,
        });
    };
    if let Some(path) = env("GALBRIDGE_EXTRA_CA_FILE").filter(|value| !value.is_empty()) {
        file.service.extra_ca_file = Some(PathBuf::from(path));
    }
    if let Some(value) =
        env("GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID").filter(|value| !value.is_empty())
    {
        match value.parse::<Guid>() {
            Ok(guid) => file.service.managed_identity_client_id = Some(guid),
            Err(reason) => bad("GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID", reason),
        }
    }
    if let Some(value) = env("GALBRIDGE_KEY_VAULT_URL").filter(|value| !value.is_empty()) {
        match value.parse::<EndpointUrl>() {
            Ok(url) => file.key_vault = Some(KeyVaultSettings { url }),
            Err(reason) => bad("GALBRIDGE_KEY_VAULT_URL", reason),
        }
    }
    if let StateSettings::Table(table) = &mut file.state {
        if let Some(value) = env("GALBRIDGE_STATE_TABLE_ENDPOINT").filter(|value| !value.is_empty())
        {
            match value.parse::<EndpointUrl>() {
                Ok(url) => table.endpoint = Some(url),
                Err(reason) => bad("GALBRIDGE_STATE_TABLE_ENDPOINT", reason),
            }
        }
        if let Some(value) = env("GALBRIDGE_STATE_TABLE_NAME").filter(|value| !value.is_empty()) {
            table.table = value;
        }
    }
    apply_queue_env(file, env, &mut bad);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

/// The shard queue from the Functions connection settings named `GALBRIDGE_QUEUE` (the queue trigger's `connection`):
/// identity-based (`GALBRIDGE_QUEUE__queueServiceUri`, `__credential`, `__clientId`) or a connection string
/// (`GALBRIDGE_QUEUE`). They fill in, or override the endpoint of, `[service.shard_queue]`
/// (docs/microsoft-facts.md §13).
fn apply_queue_env(
    file: &mut ConfigFile,
    env: &impl Fn(&str) -> Option<String>,
    bad: &mut impl FnMut(&str, String),
) {
    let setting = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    const URI: &str = "GALBRIDGE_QUEUE__queueServiceUri";
    const CREDENTIAL: &str = "GALBRIDGE_QUEUE__credential";
    const CLIENT_ID: &str = "GALBRIDGE_QUEUE__clientId";
    const CONNECTION: &str = "GALBRIDGE_QUEUE";
    if let Some(uri) = setting(URI) {
        match uri.parse::<EndpointUrl>() {
            Ok(url) => {
                file.service
                    .shard_queue
                    .get_or_insert_with(ShardQueueSettings::default)
                    .endpoint = Some(url);
            }
            Err(reason) => bad(URI, reason),
        }
        if let Some(credential) = setting(CREDENTIAL)
            && !credential.eq_ignore_ascii_case("managedidentity")
        {
            bad(
                CREDENTIAL,
                format!("{credential:?}: only \"managedidentity\" is supported"),
            );
        }
        if let Some(client_id) = setting(CLIENT_ID) {
            match client_id.parse::<Guid>() {
                Ok(guid) => {
                    if let Some(queue) = &mut file.service.shard_queue {
                        queue.managed_identity_client_id = Some(guid);
                    }
                }
                Err(reason) => bad(CLIENT_ID, reason),
            }
        }
    } else if setting(CONNECTION).is_some() && file.service.shard_queue.is_none() {
        file.service.shard_queue = Some(ShardQueueSettings {
            auth: TableAuth::ConnectionStringEnv(CONNECTION.to_owned()),
            ..ShardQueueSettings::default()
        });
    }
}

/// Relative paths in the file are relative to the file's folder, not to the working directory.
fn resolve_paths(file: &mut ConfigFile, origin: &Path) {
    let base = origin.parent().unwrap_or(Path::new(""));
    let absolute = |path: &mut PathBuf| {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    };
    if let Some(path) = &mut file.service.extra_ca_file {
        absolute(path);
    }
    if let StateSettings::File(settings) = &mut file.state {
        absolute(&mut settings.path);
    }
}

/// The JSON Schema of the configuration file (`galbridge config schema`, committed as `galbridge.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ConfigFile);
    let mut text = serde_json::to_string_pretty(&schema).expect("a JSON Schema always serializes");
    text.push('\n');
    text
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}
