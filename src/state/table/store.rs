//! The [`StateStore`] operations of [`TableStore`], in terms of the layout described in the parent module.

use chrono::Utc;

use super::batch::BatchOperation;
use super::client::{StoredEntity, WriteOutcome};
use super::keys::{check_entity_size, escape_key, get_chunked, put_chunked};
use super::{
    CHECKPOINT_ROW, LEASE_ROW, OBJECT_PREFIX, RUN_PREFIX, SCOPE_PREFIX, TableStore, corrupt,
    keys_entity, partition_of_link, partition_of_scope, prefix_filter, string_prop,
};
use crate::report::RunReport;
use crate::state::{
    BudgetCounts, BudgetGrant, BudgetRule, LINK_SCOPE, Lease, LinkCheckpoint, ObjectRecord,
    RUN_RECORDS_KEPT, StateError, StateStore,
};

/// `get_objects` point reads sent at once (bounded so a large anchor set does not flood the account).
const POINT_READS_IN_FLIGHT: usize = 8;

/// Rounds of read-then-compare-and-swap before giving up on a lease (each lost round means someone else wrote).
const LEASE_ROUNDS: usize = 4;

/// The partition of shared budgets (`~` never starts an escaped link name, and no link partition lacks `|` but
/// starts with `~` unless hashed to 64 hex digits).
const BUDGET_PARTITION: &str = "~budget";
/// Rounds of read-then-compare-and-swap on a budget row: many instances may claim in the same moment.
const BUDGET_ROUNDS: usize = 32;

#[async_trait::async_trait]
impl StateStore for TableStore {
    async fn acquire_lease(
        &self,
        link: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<Lease, StateError> {
        let partition = partition_of_link(link);
        for _ in 0..LEASE_ROUNDS {
            let now = Utc::now();
            let until = now + ttl;
            let entity = Self::lease_entity(link, holder, until);
            let outcome = match self.client.get(&partition, LEASE_ROW).await? {
                None => self.client.insert(&entity).await?,
                Some(current) => {
                    let lease = Self::lease_from_entity(link, &current)?;
                    if lease.until > now {
                        return Err(StateError::LeaseHeld {
                            link: link.to_owned(),
                            holder: lease.holder,
                            until: lease.until,
                        });
                    }
                    self.client
                        .put(&partition, LEASE_ROW, &entity, Some(&current.etag))
                        .await?
                }
            };
            match outcome {
                WriteOutcome::Written { etag } => {
                    return Ok(Lease {
                        link: link.to_owned(),
                        holder: holder.to_owned(),
                        until,
                        etag,
                    });
                }
                // Someone else wrote between our read and our write: read again (it is most likely theirs now).
                WriteOutcome::AlreadyExists
                | WriteOutcome::PreconditionFailed
                | WriteOutcome::NotFound => {}
            }
        }
        Err(StateError::Conflict {
            what: format!("lease of link {link:?}"),
        })
    }

    async fn renew_lease(&self, lease: &Lease, ttl: chrono::Duration) -> Result<Lease, StateError> {
        let until = Utc::now() + ttl;
        let entity = Self::lease_entity(&lease.link, &lease.holder, until);
        match self
            .client
            .put(
                &partition_of_link(&lease.link),
                LEASE_ROW,
                &entity,
                Some(&lease.etag),
            )
            .await?
        {
            WriteOutcome::Written { etag } => Ok(Lease {
                until,
                etag,
                ..lease.clone()
            }),
            _ => Err(StateError::LeaseLost {
                link: lease.link.clone(),
            }),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        // If-Match: a lease that was already taken over (or released) is left alone.
        self.client
            .delete(&partition_of_link(&lease.link), LEASE_ROW, &lease.etag)
            .await
            .map(|_| ())
    }

    async fn current_lease(&self, link: &str) -> Result<Option<Lease>, StateError> {
        match self.client.get(&partition_of_link(link), LEASE_ROW).await? {
            None => Ok(None),
            Some(entity) => Ok(Some(Self::lease_from_entity(link, &entity)?)
                .filter(|lease| lease.until > Utc::now())),
        }
    }

    async fn load_checkpoint(&self, link: &str) -> Result<LinkCheckpoint, StateError> {
        let Some(entity) = self
            .client
            .get(&partition_of_link(link), CHECKPOINT_ROW)
            .await?
        else {
            self.remember_checkpoint_etag(link, None);
            return Ok(LinkCheckpoint::default());
        };
        let what = format!("checkpoint of link {link:?}");
        let json = get_chunked(&entity.properties, "json", &what)?
            .ok_or_else(|| corrupt(&what, "json is missing"))?;
        let checkpoint = serde_json::from_str(&json).map_err(|e| corrupt(&what, e.to_string()))?;
        self.remember_checkpoint_etag(link, Some(entity.etag));
        Ok(checkpoint)
    }

    async fn save_checkpoint(
        &self,
        link: &str,
        checkpoint: &LinkCheckpoint,
    ) -> Result<(), StateError> {
        let what = format!("checkpoint of link {link:?}");
        let partition = partition_of_link(link);
        let mut entity = keys_entity(&partition, CHECKPOINT_ROW);
        let json = serde_json::to_string(checkpoint)
            .map_err(|e| StateError::Io(format!("serialising {what}: {e}")))?;
        put_chunked(&mut entity, "json", &json);
        check_entity_size(&entity, &what)?;
        let outcome = match self.known_checkpoint_etag(link) {
            // Loaded and absent: only an insert is right (someone else's checkpoint must not be overwritten).
            Some(None) => self.client.insert(&entity).await?,
            Some(Some(etag)) => {
                self.client
                    .put(&partition, CHECKPOINT_ROW, &entity, Some(&etag))
                    .await?
            }
            None => {
                self.client
                    .put(&partition, CHECKPOINT_ROW, &entity, None)
                    .await?
            }
        };
        match outcome {
            WriteOutcome::Written { etag } => {
                self.remember_checkpoint_etag(link, Some(etag));
                Ok(())
            }
            _ => Err(StateError::Conflict { what }),
        }
    }

    async fn list_objects(&self, link: &str, scope: &str) -> Result<Vec<ObjectRecord>, StateError> {
        let entities = self
            .client
            .query(
                &prefix_filter(&partition_of_scope(link, scope), OBJECT_PREFIX),
                None,
            )
            .await?;
        let mut records = entities
            .iter()
            .map(Self::object_from_entity)
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        Ok(records)
    }

    async fn scan_objects(
        &self,
        link: &str,
        scope: &str,
        visit: &mut (dyn FnMut(ObjectRecord) + Send),
    ) -> Result<(), StateError> {
        // Page by page: only one page of entities (≤ 1,000) is in memory at once.
        self.client
            .query_each(
                &prefix_filter(&partition_of_scope(link, scope), OBJECT_PREFIX),
                None,
                &mut |entity| {
                    visit(Self::object_from_entity(&entity)?);
                    Ok(())
                },
            )
            .await
    }

    async fn get_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<Vec<ObjectRecord>, StateError> {
        use futures::{StreamExt, TryStreamExt};
        let wanted: std::collections::BTreeSet<&str> = anchors.iter().map(String::as_str).collect();
        let partition = partition_of_scope(link, scope);
        let row_keys: std::collections::BTreeSet<String> = wanted
            .iter()
            .map(|anchor| format!("{OBJECT_PREFIX}{}", escape_key(anchor)))
            .collect();
        // Point reads, not `RowKey eq a or RowKey eq b` queries: quirk, an `or` over row keys is served as a scan
        // of the whole partition (https://learn.microsoft.com/azure/storage/tables/table-storage-design-for-query),
        // which is the O(map) cost this call exists to avoid.
        let (client, partition) = (&self.client, partition.as_str());
        let found: Vec<Option<StoredEntity>> = futures::stream::iter(row_keys)
            .map(|row_key| async move { client.get(partition, &row_key).await })
            .buffer_unordered(POINT_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut records = Vec::with_capacity(found.len());
        for entity in found.iter().flatten() {
            let record = Self::object_from_entity(&entity.properties)?;
            // A hashed key (a very long anchor) is only trusted with its stored anchor.
            if wanted.contains(record.anchor.as_str()) {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        Ok(records)
    }

    async fn put_objects(
        &self,
        link: &str,
        scope: &str,
        records: &[ObjectRecord],
    ) -> Result<(), StateError> {
        if records.is_empty() {
            return Ok(());
        }
        // Build (and size-check) every entity before writing anything.
        let mut operations = Vec::with_capacity(records.len());
        let mut row_keys = std::collections::HashSet::new();
        for record in records.iter().rev() {
            let entity = Self::object_entity(link, scope, record)?;
            let row_key = string_prop(&entity, "RowKey")
                .unwrap_or_default()
                .to_owned();
            // A change set may not touch one entity twice: the last record for an anchor wins.
            if row_keys.insert(row_key.clone()) {
                let entity_url = self
                    .client
                    .entity_url(&partition_of_scope(link, scope), &row_key);
                operations.push(BatchOperation::Upsert { entity_url, entity });
            }
        }
        operations.reverse();
        if scope != LINK_SCOPE {
            // Index first: a crash after this but before the records leaves an empty scope listed, never records
            // that list_scopes cannot find.
            let mut index = keys_entity(
                &partition_of_link(link),
                &format!("{SCOPE_PREFIX}{}", escape_key(scope)),
            );
            index.insert("scope".into(), scope.into());
            let index_key = format!("{SCOPE_PREFIX}{}", escape_key(scope));
            self.client
                .put(&partition_of_link(link), &index_key, &index, None)
                .await?;
        }
        self.apply_batches(operations).await
    }

    async fn delete_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<(), StateError> {
        if anchors.is_empty() {
            return Ok(());
        }
        let partition = partition_of_scope(link, scope);
        let mut seen = std::collections::HashSet::new();
        let operations = anchors
            .iter()
            .map(|anchor| format!("{OBJECT_PREFIX}{}", escape_key(anchor)))
            .filter(|row_key| seen.insert(row_key.clone()))
            .map(|row_key| BatchOperation::Delete {
                entity_url: self.client.entity_url(&partition, &row_key),
            })
            .collect();
        self.apply_batches(operations).await?;
        if scope != LINK_SCOPE {
            let remaining = self
                .client
                .query(&format!("PartitionKey eq '{partition}'"), Some("RowKey"))
                .await?;
            if remaining.is_empty() {
                let index_key = format!("{SCOPE_PREFIX}{}", escape_key(scope));
                self.client
                    .delete(&partition_of_link(link), &index_key, "*")
                    .await?;
            }
        }
        Ok(())
    }

    async fn list_scopes(&self, link: &str) -> Result<Vec<String>, StateError> {
        let rows = self
            .client
            .query(
                &prefix_filter(&partition_of_link(link), SCOPE_PREFIX),
                Some("scope"),
            )
            .await?;
        let mut scopes: Vec<String> = rows
            .iter()
            .filter_map(|row| string_prop(row, "scope").map(str::to_owned))
            .collect();
        scopes.sort();
        Ok(scopes)
    }

    async fn put_run_record(&self, report: &RunReport) -> Result<(), StateError> {
        let partition = partition_of_link(&report.link);
        let entity = Self::run_entity(report)?;
        let row_key = Self::run_row_key(report);
        self.client.put(&partition, &row_key, &entity, None).await?;
        // Keys sort newest first: drop what is past the cap, and an older copy of the same run id.
        let rows = self
            .client
            .query(
                &prefix_filter(&partition, RUN_PREFIX),
                Some("RowKey,run_id"),
            )
            .await?;
        let mut kept = 0;
        let mut operations = Vec::new();
        for row in &rows {
            let Some(key) = string_prop(row, "RowKey") else {
                continue;
            };
            let same_run_elsewhere =
                key != row_key && string_prop(row, "run_id") == Some(report.run_id.as_str());
            if same_run_elsewhere || kept >= RUN_RECORDS_KEPT {
                operations.push(BatchOperation::Delete {
                    entity_url: self.client.entity_url(&partition, key),
                });
            } else {
                kept += 1;
            }
        }
        self.apply_batches(operations).await
    }

    async fn list_run_records(
        &self,
        link: &str,
        limit: usize,
    ) -> Result<Vec<RunReport>, StateError> {
        let rows = self
            .client
            .query(&prefix_filter(&partition_of_link(link), RUN_PREFIX), None)
            .await?;
        let mut runs = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            let what = format!("run record {}", string_prop(row, "RowKey").unwrap_or("?"));
            let json = get_chunked(row, "json", &what)?
                .ok_or_else(|| corrupt(&what, "json is missing"))?;
            runs.push(
                serde_json::from_str::<RunReport>(&json)
                    .map_err(|e| corrupt(&what, e.to_string()))?,
            );
        }
        crate::state::memory::sort_newest_first(&mut runs);
        Ok(runs)
    }

    async fn delete_link(&self, link: &str) -> Result<(), StateError> {
        for scope in self.list_scopes(link).await? {
            self.clear_partition(&partition_of_scope(link, &scope))
                .await?;
        }
        self.clear_partition(&partition_of_scope(link, LINK_SCOPE))
            .await?;
        self.clear_partition(&partition_of_link(link)).await?;
        self.remember_checkpoint_etag(link, None);
        Ok(())
    }

    async fn take_budget(
        &self,
        key: &str,
        want: u32,
        at_least: u32,
        rule: &BudgetRule,
        now: chrono::DateTime<Utc>,
    ) -> Result<BudgetGrant, StateError> {
        let row = escape_key(key);
        let what = format!("budget {key:?}");
        for round in 0..BUDGET_ROUNDS {
            let current = self.client.get(BUDGET_PARTITION, &row).await?;
            let mut counts: BudgetCounts = match &current {
                None => BudgetCounts::default(),
                Some(stored) => string_prop(&stored.properties, "slots")
                    .and_then(|json| serde_json::from_str(json).ok())
                    .unwrap_or_default(),
            };
            let grant = counts.claim(want, at_least, rule, now);
            if grant.granted == 0 {
                return Ok(grant);
            }
            let mut entity = keys_entity(BUDGET_PARTITION, &row);
            entity.insert("key".into(), key.into());
            let slots =
                serde_json::to_string(&counts).map_err(|e| corrupt(&what, e.to_string()))?;
            entity.insert("slots".into(), slots.into());
            let outcome = match &current {
                None => self.client.insert(&entity).await?,
                Some(stored) => {
                    self.client
                        .put(BUDGET_PARTITION, &row, &entity, Some(&stored.etag))
                        .await?
                }
            };
            match outcome {
                WriteOutcome::Written { .. } => return Ok(grant),
                // Another instance claimed between our read and our write: read its counts and claim again, after
                // a short pause that grows with the rounds lost (so racing instances spread out).
                WriteOutcome::AlreadyExists
                | WriteOutcome::PreconditionFailed
                | WriteOutcome::NotFound => {
                    let pause = 2 + u64::try_from(round).unwrap_or(0) * 3;
                    tokio::time::sleep(std::time::Duration::from_millis(
                        pause + u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8),
                    ))
                    .await;
                }
            }
        }
        Err(StateError::Conflict { what })
    }
}
