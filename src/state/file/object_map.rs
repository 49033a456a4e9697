//! One (link, scope) object map on disk: a snapshot plus an append-only journal, so that checkpointing a batch of
//! 20 records costs 20 records of I/O and one `fsync`, not a rewrite of the whole map (a mailbox of 2,000 people
//! checkpoints 100 times during its first fill: rewriting made that quadratic).
//!
//! ```text
//! {scope}.json     snapshot: {"scope", "records": [ObjectRecord, sorted by anchor]}, replaced atomically
//! {scope}.journal  JSON lines, oldest first: {"put": ObjectRecord} or {"delete": "anchor"}
//! {scope}.lock     flock'ed: exclusive by writers, shared by readers
//! ```
//! The map is the snapshot with the journal replayed over it. Compaction writes a new snapshot (atomically), then
//! removes the journal: a crash in between leaves a journal whose replay over the new snapshot changes nothing, since
//! the last operation on each anchor decides it. The first write of a scope writes a snapshot, so a journal never
//! exists without one (and `list_scopes` need only look at snapshots).
//!
//! A journal append is one `write` of whole lines followed by `fdatasync`. A crash mid-append can leave a torn last
//! line: readers ignore a final line without its newline (that append never returned), and the next writer cuts it
//! off before appending. Any other line that does not parse is damage, reported as [`StateError::Corrupt`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::fsio::{self, FileLock, io_error, remove_if_exists, write_json_atomic};
use crate::state::{ObjectRecord, StateError};

/// A journal is compacted once it is larger than this and than its snapshot (amortised linear I/O).
const COMPACT_AFTER_BYTES: u64 = 256 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SnapshotFile {
    /// The scope's real name (file names of long scopes are hashes).
    pub(super) scope: String,
    pub(super) records: Vec<ObjectRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JournalLine<R> {
    Put(R),
    Delete(String),
}

/// The one field of a record needed to decide whether to decode the rest.
#[derive(Deserialize)]
struct AnchorOnly<'a> {
    #[serde(borrow)]
    anchor: Cow<'a, str>,
}

/// The files of one scope's map; `snapshot` is `{dir}/{encoded}.json`.
pub(super) struct ObjectMapFiles {
    snapshot: PathBuf,
    journal: PathBuf,
    lock: PathBuf,
}

impl ObjectMapFiles {
    pub(super) fn new(snapshot: PathBuf) -> Self {
        Self {
            journal: snapshot.with_extension("journal"),
            lock: snapshot.with_extension("lock"),
            snapshot,
        }
    }

    /// Reads the whole map under a shared lock (a writer compacting at the same time cannot be half-seen).
    pub(super) fn read(&self) -> Result<BTreeMap<String, ObjectRecord>, StateError> {
        if !self.snapshot.exists() {
            // Nothing was ever written (a journal never exists without a snapshot): no lock file to create.
            return Ok(BTreeMap::new());
        }
        let _lock = FileLock::shared(&self.lock)?;
        self.read_locked()
    }

    fn read_locked(&self) -> Result<BTreeMap<String, ObjectRecord>, StateError> {
        self.read_locked_where(|_| true)
    }

    /// Reads only the records of `wanted` anchors, under a shared lock. Every record is still scanned, but only the
    /// wanted ones are decoded and kept (an incremental run needs a few people's records out of a map of thousands):
    /// memory follows `wanted`, not the map.
    pub(super) fn read_selected(
        &self,
        wanted: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, ObjectRecord>, StateError> {
        if !self.snapshot.exists() {
            return Ok(BTreeMap::new());
        }
        let _lock = FileLock::shared(&self.lock)?;
        self.read_locked_where(|anchor| wanted.contains(anchor))
    }

    /// Hands every record of the map to `visit`, one at a time and in no particular order, under a shared lock:
    /// memory follows the journal's anchors, never the map's records.
    pub(super) fn scan(&self, visit: &mut dyn FnMut(ObjectRecord)) -> Result<(), StateError> {
        if !self.snapshot.exists() {
            return Ok(());
        }
        let _lock = FileLock::shared(&self.lock)?;
        self.visit_locked(&|_| true, &mut |record| {
            visit(record);
            Ok(())
        })
    }

    fn read_locked_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, ObjectRecord>, StateError> {
        let mut map = BTreeMap::new();
        self.visit_locked(&keep, &mut |record| {
            map.insert(record.anchor.clone(), record);
            Ok(())
        })?;
        Ok(map)
    }

    /// The map's live records whose anchor `keep` accepts, decoded one at a time: the snapshot's not overridden by
    /// the journal (streamed from disk), then the journal's last puts. The caller holds a lock.
    fn visit_locked(
        &self,
        keep: &dyn Fn(&str) -> bool,
        visit: &mut dyn FnMut(ObjectRecord) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut journal = JournalIndex::read(&self.journal)?;
        stream_snapshot(&self.snapshot, &mut |raw| {
            let anchor: AnchorOnly<'_> =
                serde_json::from_str(raw.get()).map_err(|e| self.snapshot_corrupt(e))?;
            if journal.last.contains_key(anchor.anchor.as_ref()) || !keep(&anchor.anchor) {
                return Ok(());
            }
            let record: ObjectRecord =
                serde_json::from_str(raw.get()).map_err(|e| self.snapshot_corrupt(e))?;
            visit(record)
        })?;
        let puts: Vec<(String, JournalPut)> = journal
            .last
            .iter()
            .filter_map(|(anchor, put)| put.map(|put| (anchor.clone(), put)))
            .filter(|(anchor, _)| keep(anchor))
            .collect();
        for (_, put) in puts {
            let record: ObjectRecord = journal.decode(&self.journal, put)?;
            visit(record)?;
        }
        Ok(())
    }

    fn snapshot_corrupt(&self, e: serde_json::Error) -> StateError {
        StateError::Corrupt {
            what: self.snapshot.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// How many live records the map holds, and which of `anchors` are among them (anchors only, nothing decoded
    /// beyond them). The caller holds a lock.
    fn census_locked(&self, anchors: &[String]) -> Result<(usize, BTreeSet<String>), StateError> {
        let wanted: BTreeSet<&str> = anchors.iter().map(String::as_str).collect();
        let journal = JournalIndex::read(&self.journal)?;
        let mut live = 0;
        let mut present = BTreeSet::new();
        stream_snapshot(&self.snapshot, &mut |raw| {
            let anchor: AnchorOnly<'_> =
                serde_json::from_str(raw.get()).map_err(|e| self.snapshot_corrupt(e))?;
            if !journal.last.contains_key(anchor.anchor.as_ref()) {
                live += 1;
                if wanted.contains(anchor.anchor.as_ref()) {
                    present.insert(anchor.anchor.into_owned());
                }
            }
            Ok(())
        })?;
        for (anchor, put) in &journal.last {
            if put.is_some() {
                live += 1;
                if wanted.contains(anchor.as_str()) {
                    present.insert(anchor.clone());
                }
            }
        }
        Ok((live, present))
    }

    /// Inserts or replaces `records` (by anchor); durable when it returns.
    pub(super) fn put(&self, scope: &str, records: &[ObjectRecord]) -> Result<(), StateError> {
        let _lock = FileLock::exclusive(&self.lock)?;
        if !self.snapshot.exists() {
            // The first write of a scope starts its snapshot (reading first: a damaged journal is not papered over).
            let mut map = self.read_locked()?;
            for record in records {
                map.insert(record.anchor.clone(), record.clone());
            }
            return self.write_snapshot(scope, map);
        }
        // Validate the snapshot is readable before growing a journal on top of a damaged map (record by record:
        // the snapshot is never held whole).
        if self.journal_len()? == 0 {
            stream_snapshot(&self.snapshot, &mut |raw| {
                let _: ObjectRecord =
                    serde_json::from_str(raw.get()).map_err(|e| self.snapshot_corrupt(e))?;
                Ok(())
            })?;
        }
        let lines: Vec<JournalLine<&ObjectRecord>> = records.iter().map(JournalLine::Put).collect();
        self.append(&lines)?;
        self.compact_if_large(scope)
    }

    /// Removes `anchors`; durable when it returns. A scope left empty loses its files.
    pub(super) fn delete(&self, scope: &str, anchors: &[String]) -> Result<(), StateError> {
        if !self.snapshot.exists() {
            return Ok(());
        }
        let _lock = FileLock::exclusive(&self.lock)?;
        let (live, present) = self.census_locked(anchors)?;
        if present.is_empty() {
            return Ok(());
        }
        if live == present.len() {
            return self.write_snapshot(scope, BTreeMap::new());
        }
        let lines: Vec<JournalLine<&ObjectRecord>> =
            present.into_iter().map(JournalLine::Delete).collect();
        self.append(&lines)?;
        self.compact_if_large(scope)
    }

    fn journal_len(&self) -> Result<u64, StateError> {
        match fs::metadata(&self.journal) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_error(&self.journal, "inspecting", &e)),
        }
    }

    /// Appends whole lines with one write, then `fdatasync` (and the directory's `fsync` when the journal is new).
    fn append(&self, lines: &[JournalLine<&ObjectRecord>]) -> Result<(), StateError> {
        let mut bytes = Vec::with_capacity(lines.len() * 512);
        for line in lines {
            serde_json::to_writer(&mut bytes, line).map_err(|e| {
                StateError::Io(format!("serialising {}: {e}", self.journal.display()))
            })?;
            bytes.push(b'\n');
        }
        let created = !self.journal.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.journal)
            .map_err(|e| io_error(&self.journal, "opening", &e))?;
        let end = cut_torn_tail(&mut file).map_err(|e| io_error(&self.journal, "repairing", &e))?;
        file.seek(SeekFrom::Start(end))
            .and_then(|_| file.write_all(&bytes))
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(&self.journal, "appending to", &e))?;
        if created && let Some(dir) = self.journal.parent() {
            fsio::sync_dir(dir)?;
        }
        Ok(())
    }

    fn compact_if_large(&self, scope: &str) -> Result<(), StateError> {
        let journal = self.journal_len()?;
        if journal <= COMPACT_AFTER_BYTES {
            return Ok(());
        }
        let snapshot = fs::metadata(&self.snapshot)
            .map(|meta| meta.len())
            .map_err(|e| io_error(&self.snapshot, "inspecting", &e))?;
        if journal <= snapshot {
            return Ok(());
        }
        self.compact(scope)
    }

    /// Writes the snapshot with the journal merged in, then drops the journal. A merge of two sorted streams (the
    /// snapshot's records, the journal's last puts sorted by anchor), written as it is read: records are copied as
    /// JSON text, never decoded, and the map is never held whole. The caller holds the exclusive lock.
    fn compact(&self, scope: &str) -> Result<(), StateError> {
        let mut journal = JournalIndex::read(&self.journal)?;
        let mut puts: Vec<(String, JournalPut)> = journal
            .last
            .iter()
            .filter_map(|(anchor, put)| put.map(|put| (anchor.clone(), put)))
            .collect();
        puts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut written = 0usize;
        fsio::write_atomic(&self.snapshot, &mut |out| {
            out.write_all(b"{\"scope\":")
                .map_err(|e| io_error(&self.snapshot, "writing", &e))?;
            serde_json::to_writer(&mut *out, scope).map_err(|e| {
                StateError::Io(format!("serialising {}: {e}", self.snapshot.display()))
            })?;
            out.write_all(b",\"records\":[")
                .map_err(|e| io_error(&self.snapshot, "writing", &e))?;
            let mut next = 0;
            let mut emit = |out: &mut dyn Write, text: &[u8]| -> Result<(), StateError> {
                if written > 0 {
                    out.write_all(b",")
                        .map_err(|e| io_error(&self.snapshot, "writing", &e))?;
                }
                written += 1;
                out.write_all(text)
                    .map_err(|e| io_error(&self.snapshot, "writing", &e))
            };
            stream_snapshot(&self.snapshot, &mut |raw| {
                let anchor: AnchorOnly<'_> =
                    serde_json::from_str(raw.get()).map_err(|e| self.snapshot_corrupt(e))?;
                while next < puts.len() && puts[next].0.as_str() < anchor.anchor.as_ref() {
                    let text = journal.text(&self.journal, puts[next].1)?;
                    emit(&mut *out, &text)?;
                    next += 1;
                }
                if journal.last.contains_key(anchor.anchor.as_ref()) {
                    // Overridden by the journal: its put (if any) is written in its place in the order.
                    return Ok(());
                }
                emit(&mut *out, raw.get().as_bytes())
            })?;
            while next < puts.len() {
                let text = journal.text(&self.journal, puts[next].1)?;
                emit(&mut *out, &text)?;
                next += 1;
            }
            out.write_all(b"]}")
                .map_err(|e| io_error(&self.snapshot, "writing", &e))
        })?;
        let mut removed = remove_if_exists(&self.journal)?;
        if written == 0 {
            removed |= remove_if_exists(&self.snapshot)?;
        }
        if removed && let Some(dir) = self.snapshot.parent() {
            fsio::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Replaces the snapshot with `map`, then drops the journal (see the module header for why this order is safe);
    /// an empty map removes the snapshot as well.
    fn write_snapshot(
        &self,
        scope: &str,
        map: BTreeMap<String, ObjectRecord>,
    ) -> Result<(), StateError> {
        if let Some(dir) = self.snapshot.parent() {
            fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating", &e))?;
        }
        let empty = map.is_empty();
        let file = SnapshotFile {
            scope: scope.to_owned(),
            records: map.into_values().collect(),
        };
        write_json_atomic(&self.snapshot, &file)?;
        let mut removed = remove_if_exists(&self.journal)?;
        if empty {
            removed |= remove_if_exists(&self.snapshot)?;
        }
        if removed && let Some(dir) = self.snapshot.parent() {
            fsio::sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Where the journal holds a put: the record's JSON text (offset and length in the file) and its line number.
#[derive(Clone, Copy)]
struct JournalPut {
    offset: u64,
    len: usize,
    line: usize,
}

/// The last operation on each anchor the journal names (`Some`: a put, `None`: a delete), read line by line: the
/// records themselves stay on disk until asked for.
struct JournalIndex {
    last: HashMap<String, Option<JournalPut>>,
    file: Option<File>,
}

impl JournalIndex {
    fn read(path: &Path) -> Result<JournalIndex, StateError> {
        let mut index = JournalIndex {
            last: HashMap::new(),
            file: None,
        };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(index),
            Err(e) => return Err(io_error(path, "reading", &e)),
        };
        let mut reader = BufReader::with_capacity(256 * 1024, &file);
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut number = 0usize;
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io_error(path, "reading", &e))?;
            // Only whole lines count: a final line without its newline is an append that never returned.
            if read == 0 || line.last() != Some(&b'\n') {
                break;
            }
            number += 1;
            let body = &line[..read - 1];
            if !body.is_empty() {
                let corrupt = |e: serde_json::Error| StateError::Corrupt {
                    what: path.display().to_string(),
                    reason: format!("line {number}: {e}"),
                };
                let entry: JournalLine<&RawValue> =
                    serde_json::from_slice(body).map_err(corrupt)?;
                match entry {
                    JournalLine::Put(record) => {
                        let anchor: AnchorOnly<'_> =
                            serde_json::from_str(record.get()).map_err(corrupt)?;
                        let start = record.get().as_ptr() as usize - body.as_ptr() as usize;
                        index.last.insert(
                            anchor.anchor.into_owned(),
                            Some(JournalPut {
                                offset: offset + start as u64,
                                len: record.get().len(),
                                line: number,
                            }),
                        );
                    }
                    JournalLine::Delete(anchor) => {
                        index.last.insert(anchor, None);
                    }
                }
            }
            offset += read as u64;
        }
        drop(reader);
        index.file = Some(file);
        Ok(index)
    }

    /// The JSON text of a put.
    fn text(&mut self, path: &Path, put: JournalPut) -> Result<Vec<u8>, StateError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StateError::Io(format!("{} is not open", path.display())))?;
        let mut text = vec![0; put.len];
        file.seek(SeekFrom::Start(put.offset))
            .and_then(|_| file.read_exact(&mut text))
            .map_err(|e| io_error(path, "reading", &e))?;
        Ok(text)
    }

    /// The record of a put.
    fn decode(&mut self, path: &Path, put: JournalPut) -> Result<ObjectRecord, StateError> {
        let text = self.text(path, put)?;
        serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
            what: path.display().to_string(),
            reason: format!("line {}: {e}", put.line),
        })
    }
}

/// Streams the records of a snapshot file to `each` as JSON text, one at a time (the file is never read whole).
/// A missing snapshot has no records.
fn stream_snapshot(
    path: &Path,
    each: &mut dyn FnMut(&RawValue) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, "reading", &e)),
    };
    let mut stopped = None;
    let mut deserializer =
        serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, file));
    let result = serde::de::DeserializeSeed::deserialize(
        SnapshotSeed {
            each,
            stopped: &mut stopped,
        },
        &mut deserializer,
    )
    .and_then(|()| deserializer.end());
    match (stopped, result) {
        (Some(error), _) => Err(error),
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => Err(StateError::Corrupt {
            what: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Deserialises `{"scope": …, "records": [...]}` handing each record to `each`; an error of `each` stops the read
/// and is kept in `stopped`.
struct SnapshotSeed<'a, 'b> {
    each: &'a mut dyn FnMut(&RawValue) -> Result<(), StateError>,
    stopped: &'b mut Option<StateError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for SnapshotSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SnapshotSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an object map snapshot")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut records = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "records" && !records {
                records = true;
                map.next_value_seed(RecordsSeed {
                    each: &mut *self.each,
                    stopped: &mut *self.stopped,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        if !records {
            return Err(serde::de::Error::missing_field("records"));
        }
        Ok(())
    }
}

struct RecordsSeed<'a, 'b> {
    each: &'a mut dyn FnMut(&RawValue) -> Result<(), StateError>,
    stopped: &'b mut Option<StateError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for RecordsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a list of records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<Box<RawValue>>()? {
            if let Err(error) = (self.each)(&record) {
                *self.stopped = Some(error);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// Truncates a journal that does not end with a newline back to its last whole line; returns the new length.
fn cut_torn_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // Rare (only after a crash mid-append): read it all and keep the whole lines.
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let keep = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |end| end as u64 + 1);
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn record(anchor: &str, hash: &str) -> ObjectRecord {
        ObjectRecord {
            anchor: anchor.to_owned(),
            target_id: format!("contact-{anchor}"),
            hash: hash.to_owned(),
            data: Some(serde_json::json!({ "displayName": anchor, "padding": "x".repeat(300) })),
            updated_at: Utc::now(),
        }
    }

    fn files(dir: &tempfile::TempDir) -> ObjectMapFiles {
        ObjectMapFiles::new(dir.path().join("objects").join("mbx.json"))
    }

    fn hashes(files: &ObjectMapFiles) -> Vec<(String, String)> {
        files
            .read()
            .unwrap()
            .into_values()
            .map(|r| (r.anchor, r.hash))
            .collect()
    }

    #[test]
    fn later_batches_are_appended_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let map = files(&dir);
        map.put("mbx", &[record("a", "1"), record("b", "1")])
            .unwrap();
        let snapshot = fs::read(&map.snapshot).unwrap();
        map.put("mbx", &[record("b", "2"), record("c", "1")])
            .unwrap();
        map.delete("mbx", &["a".to_owned(), "zz".to_owned()])
            .unwrap();

        assert_eq!(
            fs::read(&map.snapshot).unwrap(),
            snapshot,
            "snapshot untouched"
        );
        let journal = fs::read_to_string(&map.journal).unwrap();
        assert_eq!(journal.lines().count(), 3, "{journal}");
        assert!(journal.ends_with("{\"delete\":\"a\"}\n"), "{journal}");
        assert_eq!(
            hashes(&map),
            [("b".into(), "2".into()), ("c".into(), "1".into())]
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_then_cut_off_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let map = files(&dir);
        map.put("mbx", &[record("a", "1")]).unwrap();
        map.put("mbx", &[record("b", "1")]).unwrap();
        // What a crash in the middle of an append leaves: part of a line, no newline.
        let mut journal = OpenOptions::new().append(true).open(&map.journal).unwrap();
        journal
            .write_all(b"{\"put\":{\"anchor\":\"torn-marker\",\"tar")
            .unwrap();
        drop(journal);

        assert_eq!(hashes(&map).len(), 2);
        map.put("mbx", &[record("d", "1")]).unwrap();
        let text = fs::read_to_string(&map.journal).unwrap();
        assert!(!text.contains("torn-marker"), "torn line cut off: {text}");
        let anchors: Vec<String> = hashes(&map).into_iter().map(|(a, _)| a).collect();
        assert_eq!(anchors, ["a", "b", "d"]);
    }

    #[test]
    fn a_damaged_line_inside_the_journal_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let map = files(&dir);
        map.put("mbx", &[record("a", "1")]).unwrap();
        map.put("mbx", &[record("b", "1")]).unwrap();
        let mut text = fs::read_to_string(&map.journal).unwrap();
        text.insert_str(0, "not json\n");
        fs::write(&map.journal, text).unwrap();
        match map.read() {
            Err(StateError::Corrupt { what, reason }) => {
                assert_eq!(what, map.journal.display().to_string());
                assert!(reason.starts_with("line 1:"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn compaction_bounds_the_journal_and_a_crash_before_dropping_it_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let map = files(&dir);
        for batch in 0..120 {
            let records: Vec<ObjectRecord> = (0..20)
                .map(|n| {
                    record(
                        &format!("p{:03}", (batch * 7 + n) % 400),
                        &batch.to_string(),
                    )
                })
                .collect();
            map.put("mbx", &records).unwrap();
            let journal = fs::metadata(&map.journal).map_or(0, |m| m.len());
            assert!(journal <= COMPACT_AFTER_BYTES.max(fs::metadata(&map.snapshot).unwrap().len()));
        }
        let before = hashes(&map);
        assert!(before.len() > 300);

        // Crash between "new snapshot renamed in" and "journal removed": the journal is replayed over a snapshot that
        // already holds its effects.
        map.put("mbx", &[record("p001", "last")]).unwrap();
        map.delete("mbx", &["p002".to_owned()]).unwrap();
        let expected = hashes(&map);
        let journal = fs::read(&map.journal).unwrap();
        let all = map.read().unwrap();
        map.write_snapshot("mbx", all).unwrap();
        assert!(!map.journal.exists());
        fs::write(&map.journal, journal).unwrap();
        assert_eq!(hashes(&map), expected);
        assert_ne!(expected, before);
    }

    #[test]
    fn a_selective_read_sees_the_journal_too() {
        let dir = tempfile::tempdir().unwrap();
        let map = files(&dir);
        map.put(
            "mbx",
            &[record("a", "1"), record("b", "1"), record("c", "1")],
        )
        .unwrap();
        map.put("mbx", &[record("b", "2"), record("d", "1")])
            .unwrap();
        map.delete("mbx", &["c".to_owned()]).unwrap();
        let wanted: BTreeSet<String> = ["b", "c", "d", "zz"].map(str::to_owned).into();
        let selected: Vec<(String, String)> = map
            .read_selected(&wanted)
            .unwrap()
            .into_values()
            .map(|r| (r.anchor, r.hash))
            .collect();
        assert_eq!(
            selected,
            [("b".into(), "2".into()), ("d".into(), "1".into())]
        );
    }

    #[test]
    fn deleting_the_last_record_removes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let map = files(&dir);
        map.put("mbx", &[record("a", "1")]).unwrap();
        map.put("mbx", &[record("b", "1")]).unwrap();
        map.delete("mbx", &["a".to_owned(), "b".to_owned()])
            .unwrap();
        assert!(!map.snapshot.exists());
        assert!(!map.journal.exists());
        assert!(map.read().unwrap().is_empty());
    }
}
