//! `TableStore`: the sync state in Azure Table Storage (the Functions deployment), through our own small REST
//! client ([`client`]) authenticated by Shared Key Lite (Azurite, connection strings) or an Entra token (the
//! function app's managed identity) ([`auth`]).
//!
//! Layout of the one table (`L` = escaped link name, `S` = escaped scope, see [`keys`]):
//! ```text
//! PartitionKey  RowKey               properties
//! L             lease                holder, until                       ETag compare-and-swap
//! L             checkpoint           json_parts, json_0..                ETag compare-and-swap (see below)
//! L             run|{inverted µs}|R  run_id, started_at, json_parts, ..  newest sorts first; last 50 kept
//! L             scope|S              scope                               index of the scopes with records
//! L|            obj|{anchor}         anchor, target_id, hash, updated_at, data_parts, data_0..   (LINK_SCOPE)
//! L|S           obj|{anchor}         same, one mailbox's map
//! ```
//! Each (link, scope) map is its own partition, so its records go in entity group transactions (≤ 100 per
//! `$batch`) and one mailbox's map reads with one partition query (a few of its anchors: point GETs). The scope
//! index row is written before the records of a scope and removed when its partition becomes empty, so
//! `list_scopes` never misses a scope.
//!
//! Checkpoint concurrency: the store remembers the ETag it loaded (or that the checkpoint was absent) and saves with
//! `If-Match` (or insert-only), so a writer that lost its lease cannot overwrite a newer checkpoint: it gets
//! [`StateError::Conflict`]. A save without a prior load in this process writes unconditionally.

mod auth;
mod batch;
mod client;
mod keys;
mod odata;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use url::Url;

pub use self::auth::{AccountKey, ConnectionString, STORAGE_SCOPE, TableAuth, TokenCache};
use self::batch::{BatchOperation, split_into_change_sets};
pub use self::client::RetryPolicy;
pub(crate) use self::client::encode_unreserved;
use self::client::{StoredEntity, TableClient};
use self::keys::{check_entity_size, escape_key, get_chunked, put_chunked};
use super::{Lease, ObjectRecord, StateError};
use crate::report::RunReport;

const LEASE_ROW: &str = "lease";
const CHECKPOINT_ROW: &str = "checkpoint";
const RUN_PREFIX: &str = "run|";
const SCOPE_PREFIX: &str = "scope|";
const OBJECT_PREFIX: &str = "obj|";

/// Where the table is and how to authenticate.
#[derive(Debug, Clone)]
pub struct TableStoreConfig {
    /// The account's table endpoint: `https://{account}.table.core.windows.net`, or Azurite's
    /// `http://127.0.0.1:10002/devstoreaccount1`.
    pub endpoint: Url,
    /// Table name: 3–63 letters and digits, starting with a letter.
    pub table: String,
    pub auth: TableAuth,
    pub retry: RetryPolicy,
}

impl TableStoreConfig {
    /// From a storage connection string (see [`ConnectionString::parse`]).
    pub fn from_connection_string(
        connection_string: &str,
        table: &str,
    ) -> Result<Self, StateError> {
        let parsed = ConnectionString::parse(connection_string)?;
        Ok(Self {
            endpoint: parsed.table_endpoint,
            table: table.to_owned(),
            auth: parsed.auth,
            retry: RetryPolicy::default(),
        })
    }
}

/// [`StateStore`] over Azure Table Storage. Share it with `Arc`; it is safe for concurrent runs of different links.
pub struct TableStore {
    client: TableClient,
    /// Per link: the checkpoint ETag last loaded or saved (`None` = it did not exist).
    checkpoint_etags: std::sync::Mutex<HashMap<String, Option<String>>>,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableStore").finish_non_exhaustive()
    }
}

fn partition_of_link(link: &str) -> String {
    escape_key(link)
}

fn partition_of_scope(link: &str, scope: &str) -> String {
    format!("{}|{}", escape_key(link), escape_key(scope))
}

fn string_prop<'a>(entity: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    entity.get(name).and_then(Value::as_str)
}

fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> StateError {
    StateError::Corrupt {
        what: what.into(),
        reason: reason.into(),
    }
}

fn parse_time(
    entity: &Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<DateTime<Utc>, StateError> {
    let text =
        string_prop(entity, name).ok_or_else(|| corrupt(what, format!("{name} is missing")))?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(what, format!("{name}: {e}")))
}

fn keys_entity(partition_key: &str, row_key: &str) -> Map<String, Value> {
    let mut entity = Map::new();
    entity.insert("PartitionKey".into(), partition_key.into());
    entity.insert("RowKey".into(), row_key.into());
    entity
}

/// The rows of one partition whose key starts with `prefix` (which ends in `|`): `RowKey ge 'obj|' and
/// RowKey lt 'obj}'` (`}` follows `|` in ASCII). Keys are escaped, so they hold no `'`.
fn prefix_filter(partition_key: &str, prefix: &str) -> String {
    let stem = prefix.strip_suffix('|').unwrap_or(prefix);
    format!("PartitionKey eq '{partition_key}' and RowKey ge '{prefix}' and RowKey lt '{stem}}}'")
}

impl TableStore {
    /// Connects with a default HTTP client and creates the table if missing. The process must have installed a
    /// rustls crypto provider (ring) before this.
    pub async fn open(config: TableStoreConfig) -> Result<Self, StateError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| StateError::Io(format!("building the HTTP client: {e}")))?;
        Self::open_with_client(config, http).await
    }

    /// Like [`TableStore::open`] with the caller's HTTP client (shared pool, extra CA bundle).
    pub async fn open_with_client(
        config: TableStoreConfig,
        http: reqwest::Client,
    ) -> Result<Self, StateError> {
        let valid = config.table.len() >= 3
            && config.table.len() <= 63
            && config.table.starts_with(|c: char| c.is_ascii_alphabetic())
            && config.table.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(StateError::Io(format!(
                "table name {:?} is invalid: 3-63 letters and digits, starting with a letter",
                config.table
            )));
        }
        let client = TableClient::new(
            http,
            &config.endpoint,
            &config.table,
            config.auth,
            config.retry,
        );
        client.create_table_if_missing().await?;
        Ok(Self {
            client,
            checkpoint_etags: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Requests sent so far (for the run report's per-service counts), and how many were retries.
    pub fn request_counts(&self) -> (u64, u64) {
        (
            self.client.requests.load(Ordering::Relaxed),
            self.client.retries.load(Ordering::Relaxed),
        )
    }

    fn remember_checkpoint_etag(&self, link: &str, etag: Option<String>) {
        let mut etags = self
            .checkpoint_etags
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        etags.insert(link.to_owned(), etag);
    }

    fn known_checkpoint_etag(&self, link: &str) -> Option<Option<String>> {
        let etags = self
            .checkpoint_etags
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        etags.get(link).cloned()
    }

    fn lease_from_entity(link: &str, entity: &StoredEntity) -> Result<Lease, StateError> {
        let what = format!("lease of link {link:?}");
        let holder = string_prop(&entity.properties, "holder")
            .ok_or_else(|| corrupt(&what, "holder is missing"))?;
        Ok(Lease {
            link: link.to_owned(),
            holder: holder.to_owned(),
            until: parse_time(&entity.properties, "until", &what)?,
            etag: entity.etag.clone(),
        })
    }

    fn lease_entity(link: &str, holder: &str, until: DateTime<Utc>) -> Map<String, Value> {
        let mut entity = keys_entity(&partition_of_link(link), LEASE_ROW);
        entity.insert("holder".into(), holder.into());
        entity.insert("until".into(), until.to_rfc3339().into());
        entity
    }

    fn object_entity(
        link: &str,
        scope: &str,
        record: &ObjectRecord,
    ) -> Result<Map<String, Value>, StateError> {
        let mut entity = keys_entity(
            &partition_of_scope(link, scope),
            &format!("{OBJECT_PREFIX}{}", escape_key(&record.anchor)),
        );
        entity.insert("anchor".into(), record.anchor.clone().into());
        entity.insert("target_id".into(), record.target_id.clone().into());
        entity.insert("hash".into(), record.hash.clone().into());
        entity.insert("updated_at".into(), record.updated_at.to_rfc3339().into());
        if let Some(data) = &record.data {
            put_chunked(&mut entity, "data", &data.to_string());
        }
        check_entity_size(
            &entity,
            &format!("object record {:?} of link {link:?}", record.anchor),
        )?;
        Ok(entity)
    }

    fn object_from_entity(entity: &Map<String, Value>) -> Result<ObjectRecord, StateError> {
        let row = string_prop(entity, "RowKey").unwrap_or("?");
        let what = format!("object record {row}");
        let text = |name: &str| {
            string_prop(entity, name)
                .map(str::to_owned)
                .ok_or_else(|| corrupt(&what, format!("{name} is missing")))
        };
        let data = match get_chunked(entity, "data", &what)? {
            Some(json) => Some(
                serde_json::from_str(&json).map_err(|e| corrupt(&what, format!("data: {e}")))?,
            ),
            None => None,
        };
        Ok(ObjectRecord {
            anchor: text("anchor")?,
            target_id: text("target_id")?,
            hash: text("hash")?,
            data,
            updated_at: parse_time(entity, "updated_at", &what)?,
        })
    }

    /// Applies operations on one partition in change sets; a set of deletes that fails because an entity is
    /// already gone is retried one entity at a time (missing ones are fine).
    async fn apply_batches(&self, operations: Vec<BatchOperation>) -> Result<(), StateError> {
        for set in split_into_change_sets(operations) {
            match self.client.batch(&set).await? {
                Ok(()) => {}
                Err(failed) if failed.status == 404 => {
                    for operation in &set {
                        match operation {
                            BatchOperation::Delete { entity_url } => {
                                self.delete_by_url(entity_url).await?
                            }
                            BatchOperation::Upsert { .. } => {
                                return Err(StateError::Service {
                                    operation: "batch".to_owned(),
                                    status: failed.status,
                                    code: failed.code.clone(),
                                    message: failed.message.clone(),
                                });
                            }
                        }
                    }
                }
                Err(failed) => {
                    return Err(StateError::Service {
                        operation: "batch".to_owned(),
                        status: failed.status,
                        code: failed.code,
                        message: failed.message,
                    });
                }
            }
        }
        Ok(())
    }

    async fn delete_by_url(&self, entity_url: &str) -> Result<(), StateError> {
        // The URL is one we built: `…(PartitionKey='p',RowKey='r')`, keys escaped (no quotes inside).
        let parse = || -> Option<(&str, &str)> {
            let keys = entity_url.rsplit_once("(PartitionKey='")?.1;
            let (partition, rest) = keys.split_once("',RowKey='")?;
            Some((partition, rest.strip_suffix("')")?))
        };
        let (partition, row) = parse()
            .ok_or_else(|| StateError::Io(format!("cannot parse entity URL {entity_url}")))?;
        self.client.delete(partition, row, "*").await.map(|_| ())
    }

    /// Deletes every entity of a partition.
    async fn clear_partition(&self, partition_key: &str) -> Result<(), StateError> {
        let filter = format!("PartitionKey eq '{partition_key}'");
        let rows = self.client.query(&filter, Some("RowKey")).await?;
        let operations = rows
            .iter()
            .filter_map(|row| string_prop(row, "RowKey"))
            .map(|row_key| BatchOperation::Delete {
                entity_url: self.client.entity_url(partition_key, row_key),
            })
            .collect();
        self.apply_batches(operations).await
    }

    fn run_row_key(report: &RunReport) -> String {
        // Inverted microseconds, zero-padded, so the newest run sorts first.
        let micros = report.started_at.timestamp_micros().max(0);
        format!(
            "{RUN_PREFIX}{:019}|{}",
            i64::MAX - micros,
            escape_key(&report.run_id)
        )
    }

    fn run_entity(report: &RunReport) -> Result<Map<String, Value>, StateError> {
        let build = |report: &RunReport| -> Result<Map<String, Value>, StateError> {
            let mut entity =
                keys_entity(&partition_of_link(&report.link), &Self::run_row_key(report));
            entity.insert("run_id".into(), report.run_id.clone().into());
            entity.insert("started_at".into(), report.started_at.to_rfc3339().into());
            let json = serde_json::to_string(report)
                .map_err(|e| StateError::Io(format!("serialising run record: {e}")))?;
            put_chunked(&mut entity, "json", &json);
            Ok(entity)
        };
        let what = format!("run record {} of link {:?}", report.run_id, report.link);
        let entity = build(report)?;
        if check_entity_size(&entity, &what).is_ok() {
            return Ok(entity);
        }
        // A dry run's full plan can pass the 1 MiB entity limit: keep the counts, drop the plan and long failure lists.
        let mut slim = report.clone();
        slim.plan = None;
        if slim.failures.len() > 100 {
            let dropped = slim.failures.len() - 100;
            slim.failures.truncate(100);
            slim.summary = format!("{} ({dropped} more failures not stored)", slim.summary);
        }
        let entity = build(&slim)?;
        check_entity_size(&entity, &what)?;
        Ok(entity)
    }
}

mod store;
