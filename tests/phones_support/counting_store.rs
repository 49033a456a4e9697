//! A state store that forwards to another and counts the object records the engine reads from mailbox scopes, so
//! a test can assert what an incremental run costs the store (issue 5: one changed person, one record per mailbox).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Duration;
use galbridge::report::RunReport;
use galbridge::state::{
    BudgetGrant, BudgetRule, LINK_SCOPE, Lease, LinkCheckpoint, ObjectRecord, StateError,
    StateStore,
};

pub struct CountingStore {
    inner: Arc<dyn StateStore>,
    mailbox_records_read: AtomicU64,
    mailbox_full_listings: AtomicU64,
    snapshot_records_read: AtomicU64,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn StateStore>) -> Self {
        Self {
            inner,
            mailbox_records_read: AtomicU64::new(0),
            mailbox_full_listings: AtomicU64::new(0),
            snapshot_records_read: AtomicU64::new(0),
        }
    }

    /// Object records returned from mailbox scopes (by `list_objects` and `get_objects`) since the last reset.
    pub fn mailbox_records_read(&self) -> u64 {
        self.mailbox_records_read.load(Ordering::SeqCst)
    }

    /// `list_objects` calls on mailbox scopes since the last reset.
    pub fn mailbox_full_listings(&self) -> u64 {
        self.mailbox_full_listings.load(Ordering::SeqCst)
    }

    /// Records of the link's source snapshot (the link scope) returned since the last reset.
    pub fn snapshot_records_read(&self) -> u64 {
        self.snapshot_records_read.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.snapshot_records_read.store(0, Ordering::SeqCst);
        self.mailbox_records_read.store(0, Ordering::SeqCst);
        self.mailbox_full_listings.store(0, Ordering::SeqCst);
    }

    fn count(&self, scope: &str, records: &[ObjectRecord]) {
        if scope == LINK_SCOPE {
            self.snapshot_records_read
                .fetch_add(records.len() as u64, Ordering::SeqCst);
        }
        if is_mailbox(scope) {
            self.mailbox_records_read
                .fetch_add(records.len() as u64, Ordering::SeqCst);
        }
    }
}

/// A mailbox's scope (not the link scope, not the shard records' `~shards`).
fn is_mailbox(scope: &str) -> bool {
    scope != LINK_SCOPE
        && galbridge::engine::targets::personal_contacts::shards::is_mailbox_scope(scope)
}

#[async_trait::async_trait]
impl StateStore for CountingStore {
    async fn acquire_lease(
        &self,
        link: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StateError> {
        self.inner.acquire_lease(link, holder, ttl).await
    }
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StateError> {
        self.inner.renew_lease(lease, ttl).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        self.inner.release_lease(lease).await
    }
    async fn current_lease(&self, link: &str) -> Result<Option<Lease>, StateError> {
        self.inner.current_lease(link).await
    }
    async fn load_checkpoint(&self, link: &str) -> Result<LinkCheckpoint, StateError> {
        self.inner.load_checkpoint(link).await
    }
    async fn save_checkpoint(
        &self,
        link: &str,
        checkpoint: &LinkCheckpoint,
    ) -> Result<(), StateError> {
        self.inner.save_checkpoint(link, checkpoint).await
    }
    async fn list_objects(&self, link: &str, scope: &str) -> Result<Vec<ObjectRecord>, StateError> {
        let records = self.inner.list_objects(link, scope).await?;
        if is_mailbox(scope) {
            self.mailbox_full_listings.fetch_add(1, Ordering::SeqCst);
        }
        self.count(scope, &records);
        Ok(records)
    }
    async fn get_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<Vec<ObjectRecord>, StateError> {
        let records = self.inner.get_objects(link, scope, anchors).await?;
        self.count(scope, &records);
        Ok(records)
    }
    async fn put_objects(
        &self,
        link: &str,
        scope: &str,
        records: &[ObjectRecord],
    ) -> Result<(), StateError> {
        self.inner.put_objects(link, scope, records).await
    }
    async fn delete_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<(), StateError> {
        self.inner.delete_objects(link, scope, anchors).await
    }
    async fn list_scopes(&self, link: &str) -> Result<Vec<String>, StateError> {
        self.inner.list_scopes(link).await
    }
    async fn put_run_record(&self, report: &RunReport) -> Result<(), StateError> {
        self.inner.put_run_record(report).await
    }
    async fn list_run_records(
        &self,
        link: &str,
        limit: usize,
    ) -> Result<Vec<RunReport>, StateError> {
        self.inner.list_run_records(link, limit).await
    }
    async fn delete_link(&self, link: &str) -> Result<(), StateError> {
        self.inner.delete_link(link).await
    }
    async fn take_budget(
        &self,
        key: &str,
        want: u32,
        at_least: u32,
        rule: &BudgetRule,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<BudgetGrant, StateError> {
        self.inner.take_budget(key, want, at_least, rule, now).await
    }
}
