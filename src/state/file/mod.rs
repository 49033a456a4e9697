//! `FileStore`: the sync state in a local directory, the embedded default of the CLI (`[state] kind = "file"`).
//!
//! Layout under the root (names encoded by [`fsio::encode_name`]):
//! ```text
//! links/{link}/lease.lock            empty; flock'ed for the lease compare-and-swap
//! links/{link}/lease.json            {"holder", "until", "generation"}; absent when free
//! links/{link}/write.lock            empty; flock'ed around the checkpoint's and run records' read-modify-writes
//! links/{link}/checkpoint.json       LinkCheckpoint
//! links/{link}/runs.json             the last 50 RunReports, newest first
//! links/{link}/objects/@link.*       the link-wide object map (LINK_SCOPE)
//! links/{link}/objects/{scope}.json  one mailbox's object map: a snapshot {"scope", "records": [...]}, plus
//!                     {scope}.journal  appended changes since, and {scope}.lock (see [`object_map`])
//! budgets/{key}.lock                 flock'ed around a shared budget's claim (see [`super::budget`])
//! budgets/{key}.json                 BudgetCounts: tokens granted per recent slot
//! ```
//! One file per (link, scope) keeps memory bounded by the largest single map (a mailbox's 2,000 people), never
//! by the whole deployment (2,000 people × 5,000 mailboxes).
//!
//! The lease is a compare-and-swap under a kernel file lock: take `lease.lock`, read `lease.json`, refuse if another
//! holder's lease has not expired, else write a new lease with `generation + 1` (the generation is the ETag), release.
//! Because the kernel drops the lock of a dead process, a crash can never wedge a link: the lease simply expires,
//! and a lease held by a process of this host that no longer exists is taken over at once ([`super::holder_is_gone`]).
//! Every write is atomic and durable when the call returns ([`fsio::write_json_atomic`]); a damaged file is reported
//! as [`StateError::Corrupt`] with its path, never silently replaced. Budget rows are the exception: they only
//! matter for the next 10 s, so they are written without `fsync` (a claim costs no disk flush) and a damaged one
//! starts afresh.

mod fsio;
mod object_map;

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use self::fsio::{
    FileLock, decode_name, encode_name, io_error, link_dir, read_json, remove_if_exists,
    write_json_atomic,
};
use self::object_map::{ObjectMapFiles, SnapshotFile};
use super::memory::sort_newest_first;
use super::{
    BudgetCounts, BudgetGrant, BudgetRule, LINK_SCOPE, Lease, LinkCheckpoint, ObjectRecord,
    RUN_RECORDS_KEPT, StateError, StateStore,
};
use crate::report::RunReport;

const LINK_SCOPE_FILE: &str = "@link.json";

/// Local-directory [`StateStore`]. Cheap to clone; safe to use from many tasks and many processes at once.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    holder: String,
    until: DateTime<Utc>,
    generation: u64,
}

impl FileStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        fs::create_dir_all(root.join("links"))
            .map_err(|e| io_error(&root, "creating state directory", &e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot file of one (link, scope) object map (for operators and tests); its journal is beside it.
    pub fn object_map_path(&self, link: &str, scope: &str) -> PathBuf {
        let objects = link_dir(&self.root, link).join("objects");
        if scope == LINK_SCOPE {
            objects.join(LINK_SCOPE_FILE)
        } else {
            objects.join(format!("{}.json", encode_name(scope)))
        }
    }

    fn object_map(&self, link: &str, scope: &str) -> ObjectMapFiles {
        ObjectMapFiles::new(self.object_map_path(link, scope))
    }

    /// Runs blocking file work off the async executor.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, StateError> + Send + 'static,
    {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || work(&root))
            .await
            .map_err(|e| StateError::Io(format!("file store task failed: {e}")))?
    }
}

fn lease_from_file(link: &str, file: LeaseFile) -> Lease {
    Lease {
        link: link.to_owned(),
        holder: file.holder,
        until: file.until,
        etag: file.generation.to_string(),
    }
}

#[async_trait::async_trait]
impl StateStore for FileStore {
    async fn acquire_lease(
        &self,
        link: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<Lease, StateError> {
        let (link, holder) = (link.to_owned(), holder.to_owned());
        self.blocking(move |root| {
            let dir = link_dir(root, &link);
            let _lock = FileLock::exclusive(&dir.join("lease.lock"))?;
            let path = dir.join("lease.json");
            let current: Option<LeaseFile> = read_json(&path)?;
            let now = Utc::now();
            // A lease whose holder was a process of this host that no longer exists is taken over at once (a
            // killed run must not hold its link for the lease's lifetime); any other live lease is refused.
            if let Some(current) = &current
                && current.until > now
                && !super::holder_is_gone(&current.holder)
            {
                return Err(StateError::LeaseHeld {
                    link,
                    holder: current.holder.clone(),
                    until: current.until,
                });
            }
            let generation = current.map_or(0, |c| c.generation) + 1;
            let file = LeaseFile {
                holder,
                until: now + ttl,
                generation,
            };
            write_json_atomic(&path, &file)?;
            Ok(lease_from_file(&link, file))
        })
        .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: chrono::Duration) -> Result<Lease, StateError> {
        let lease = lease.clone();
        self.blocking(move |root| {
            let dir = link_dir(root, &lease.link);
            let _lock = FileLock::exclusive(&dir.join("lease.lock"))?;
            let path = dir.join("lease.json");
            let current: Option<LeaseFile> = read_json(&path)?;
            let Some(current) = current
                .filter(|c| c.generation.to_string() == lease.etag && c.holder == lease.holder)
            else {
                return Err(StateError::LeaseLost { link: lease.link });
            };
            let file = LeaseFile {
                holder: current.holder,
                until: Utc::now() + ttl,
                generation: current.generation + 1,
            };
            write_json_atomic(&path, &file)?;
            Ok(lease_from_file(&lease.link, file))
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        let lease = lease.clone();
        self.blocking(move |root| {
            let dir = link_dir(root, &lease.link);
            if !dir.exists() {
                return Ok(());
            }
            let _lock = FileLock::exclusive(&dir.join("lease.lock"))?;
            let path = dir.join("lease.json");
            let current: Option<LeaseFile> = read_json(&path)?;
            // The generation survives a release (the next acquirer continues from it), so only mark it expired.
            if let Some(current) = current.filter(|c| c.generation.to_string() == lease.etag) {
                let released = LeaseFile {
                    until: DateTime::<Utc>::UNIX_EPOCH,
                    ..current
                };
                write_json_atomic(&path, &released)?;
            }
            Ok(())
        })
        .await
    }

    async fn current_lease(&self, link: &str) -> Result<Option<Lease>, StateError> {
        let link = link.to_owned();
        self.blocking(move |root| {
            let current: Option<LeaseFile> = read_json(&link_dir(root, &link).join("lease.json"))?;
            Ok(current
                .filter(|c| c.until > Utc::now())
                .map(|c| lease_from_file(&link, c)))
        })
        .await
    }

    async fn load_checkpoint(&self, link: &str) -> Result<LinkCheckpoint, StateError> {
        let link = link.to_owned();
        self.blocking(move |root| {
            Ok(read_json(&link_dir(root, &link).join("checkpoint.json"))?.unwrap_or_default())
        })
        .await
    }

    async fn save_checkpoint(
        &self,
        link: &str,
        checkpoint: &LinkCheckpoint,
    ) -> Result<(), StateError> {
        let (link, checkpoint) = (link.to_owned(), checkpoint.clone());
        self.blocking(move |root| {
            let dir = link_dir(root, &link);
            let _lock = FileLock::exclusive(&dir.join("write.lock"))?;
            write_json_atomic(&dir.join("checkpoint.json"), &checkpoint)
        })
        .await
    }

    async fn list_objects(&self, link: &str, scope: &str) -> Result<Vec<ObjectRecord>, StateError> {
        let map = self.object_map(link, scope);
        self.blocking(move |_| Ok(map.read()?.into_values().collect()))
            .await
    }

    async fn get_objects(
        &self,
        link: &str,
        scope: &str,
        anchors: &[String],
    ) -> Result<Vec<ObjectRecord>, StateError> {
        // One map per scope: scan it, decoding only the wanted records (the map is the unit of I/O here).
        let files = self.object_map(link, scope);
        let wanted: std::collections::BTreeSet<String> = anchors.iter().cloned().collect();
        self.blocking(move |_| Ok(files.read_selected(&wanted)?.into_values().collect()))
            .await
    }

    async fn scan_objects(
        &self,
        link: &str,
        scope: &str,
        visit: &mut (dyn FnMut(ObjectRecord) + Send),
    ) -> Result<(), StateError> {
        // The map is streamed on a blocking thread; records cross over a small channel, so only a few are in
        // memory at once.
        let files = self.object_map(link, scope);
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<ObjectRecord>(64);
        let reader = self.blocking(move |_| {
            files.scan(&mut |record| {
                // A receiver that stopped listening only loses records nobody wants any more.
                let _ = sender.blocking_send(record);
            })
        });
        let visiting = async {
            while let Some(record) = receiver.recv().await {
                visit(record);
            }
        };
        let (read, ()) = tokio::join!(reader, visiting);
        read
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
        let (scope, records) = (scope.to_owned(), records.to_vec());
        let files = self.object_map(link, &scope);
        self.blocking(move |_| files.put(&scope, &records)).await
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
        let (scope, anchors) = (scope.to_owned(), anchors.to_vec());
        let files = self.object_map(link, &scope);
        self.blocking(move |_| files.delete(&scope, &anchors)).await
    }

    async fn list_scopes(&self, link: &str) -> Result<Vec<String>, StateError> {
        let link = link.to_owned();
        self.blocking(move |root| {
            let dir = link_dir(root, &link).join("objects");
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error(&dir, "listing", &e)),
            };
            let mut scopes = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_error(&dir, "listing", &e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Temp files start with '.', the link-wide map is '@link.json'; neither is a scope.
                let Some(stem) = name.strip_suffix(".json") else {
                    continue;
                };
                if name.starts_with('.') || name == LINK_SCOPE_FILE {
                    continue;
                }
                match decode_name(stem) {
                    Some(scope) => scopes.push(scope),
                    None => {
                        let file: Option<SnapshotFile> = read_json(&entry.path())?;
                        scopes.extend(file.map(|f| f.scope));
                    }
                }
            }
            scopes.sort();
            Ok(scopes)
        })
        .await
    }

    async fn put_run_record(&self, report: &RunReport) -> Result<(), StateError> {
        let report = report.clone();
        self.blocking(move |root| {
            let dir = link_dir(root, &report.link);
            let _lock = FileLock::exclusive(&dir.join("write.lock"))?;
            let path = dir.join("runs.json");
            let mut runs: Vec<RunReport> = read_json(&path)?.unwrap_or_default();
            runs.retain(|existing| existing.run_id != report.run_id);
            runs.push(report);
            sort_newest_first(&mut runs);
            runs.truncate(RUN_RECORDS_KEPT);
            write_json_atomic(&path, &runs)
        })
        .await
    }

    async fn list_run_records(
        &self,
        link: &str,
        limit: usize,
    ) -> Result<Vec<RunReport>, StateError> {
        let link = link.to_owned();
        self.blocking(move |root| {
            let runs: Vec<RunReport> =
                read_json(&link_dir(root, &link).join("runs.json"))?.unwrap_or_default();
            Ok(runs.into_iter().take(limit).collect())
        })
        .await
    }

    async fn delete_link(&self, link: &str) -> Result<(), StateError> {
        let link = link.to_owned();
        self.blocking(move |root| {
            let dir = link_dir(root, &link);
            if !dir.exists() {
                return Ok(());
            }
            // Keep the two lock files: a process blocked on one must lock the same inode its successors will,
            // or two of them could both believe they hold the lease.
            let _lease_lock = FileLock::exclusive(&dir.join("lease.lock"))?;
            let _write_lock = FileLock::exclusive(&dir.join("write.lock"))?;
            for name in ["lease.json", "checkpoint.json", "runs.json"] {
                remove_if_exists(&dir.join(name))?;
            }
            // The object maps go; their lock files stay, for the same reason as above.
            let objects = dir.join("objects");
            let entries = match fs::read_dir(&objects) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fsio::sync_dir(&dir),
                Err(e) => return Err(io_error(&objects, "listing", &e)),
            };
            for entry in entries {
                let path = entry.map_err(|e| io_error(&objects, "listing", &e))?.path();
                if path.extension().is_none_or(|extension| extension != "lock") {
                    remove_if_exists(&path)?;
                }
            }
            fsio::sync_dir(&objects)?;
            fsio::sync_dir(&dir)
        })
        .await
    }

    async fn take_budget(
        &self,
        key: &str,
        want: u32,
        at_least: u32,
        rule: &BudgetRule,
        now: DateTime<Utc>,
    ) -> Result<BudgetGrant, StateError> {
        let (key, rule) = (encode_name(key), *rule);
        self.blocking(move |root| {
            let dir = root.join("budgets");
            let _lock = FileLock::exclusive(&dir.join(format!("{key}.lock")))?;
            let path = dir.join(format!("{key}.json"));
            // A damaged row (a crash mid-write) only loses the last 10 s of counts: start afresh.
            let mut counts: BudgetCounts = read_json(&path).ok().flatten().unwrap_or_default();
            let grant = counts.claim(want, at_least, &rule, now);
            if grant.granted > 0 {
                let bytes = serde_json::to_vec(&counts)
                    .map_err(|e| StateError::Io(format!("serialising {}: {e}", path.display())))?;
                fs::write(&path, bytes).map_err(|e| io_error(&path, "writing", &e))?;
            }
            Ok(grant)
        })
        .await
    }
}
