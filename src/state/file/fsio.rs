//! The file store's disk primitives: durable atomic replacement of a file, reading JSON that reports damage instead
//! of hiding it, cross-process locks, and the reversible encoding of link and scope names into file names.
//!
//! Atomic write = write a uniquely named temp file beside the target, `fsync` it, `rename` it over the target, then
//! `fsync` the directory so the rename itself survives a power cut. A crash at any point leaves either the old or the
//! new file, plus at worst a stray temp file (`.{name}.{pid}.{n}.tmp`) that readers never look at.
//!
//! Locks are `flock`-style advisory locks through std's `File::lock` (stable since Rust 1.89): the kernel releases
//! them when the holding process dies, so a killed `galbridge sync` never leaves a stale lock behind, and two
//! processes (or two tasks of one process: each opens its own file description) exclude each other.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::state::StateError;

/// File names longer than this (after encoding) are replaced by a hash (most file systems cap names at 255 bytes).
const MAX_ENCODED_NAME: usize = 160;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) fn io_error(what: &Path, action: &str, error: &io::Error) -> StateError {
    StateError::Io(format!("{action} {}: {error}", what.display()))
}

/// Replaces `path` with `value` as JSON, durably (see the module header).
pub(super) fn write_json_atomic<T: Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> Result<(), StateError> {
    write_atomic(path, &mut |writer| {
        serde_json::to_writer(writer, value)
            .map_err(|e| StateError::Io(format!("serialising {}: {e}", path.display())))
    })
}

/// Writes `path` atomically and durably, its content streamed by `write` (a temp file beside it, synced, renamed
/// over, the directory synced): readers see the old file or the new one, never part of it.
pub(super) fn write_atomic(
    path: &Path,
    write: &mut dyn FnMut(&mut dyn Write) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let dir = path
        .parent()
        .ok_or_else(|| StateError::Io(format!("{} has no parent directory", path.display())))?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_error(&temp, "creating", &e))?;
        let mut writer = BufWriter::with_capacity(256 * 1024, file);
        write(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| io_error(&temp, "writing", e.error()))?;
        file.sync_all()
            .map_err(|e| io_error(&temp, "syncing", &e))?;
        drop(file);
        fs::rename(&temp, path).map_err(|e| io_error(path, "renaming temp file onto", &e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: a failed write leaves no temp file behind (readers ignore one anyway).
        let _ = fs::remove_file(&temp);
    }
    result
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StateError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "syncing directory", &e))
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; NTFS journals the rename's metadata itself.
        let _ = dir;
        Ok(())
    }
}

/// Reads JSON from `path`: `None` when the file does not exist, [`StateError::Corrupt`] naming the file when it
/// cannot be parsed (never a silent reset to empty: that would make the engine recreate every object).
pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "reading", &e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Removes a file if it exists; reports whether it did.
pub(super) fn remove_if_exists(path: &Path) -> Result<bool, StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "removing", &e)),
    }
}

/// An exclusive advisory lock on a lock file, released on drop (or by the kernel if the process dies).
#[derive(Debug)]
pub(super) struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the lock is ours. Call from a blocking context (`spawn_blocking`).
    pub(super) fn exclusive(path: &Path) -> Result<Self, StateError> {
        let file = open_lock_file(path)?;
        file.lock().map_err(|e| io_error(path, "locking", &e))?;
        Ok(Self { file })
    }

    /// Blocks until a shared lock is ours (it excludes exclusive holders only). Call from a blocking context.
    pub(super) fn shared(path: &Path) -> Result<Self, StateError> {
        let file = open_lock_file(path)?;
        file.lock_shared()
            .map_err(|e| io_error(path, "locking", &e))?;
        Ok(Self { file })
    }
}

fn open_lock_file(path: &Path) -> Result<File, StateError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating", &e))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_error(path, "opening lock file", &e))
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock as well; unlocking first just makes it prompt and explicit.
        let _ = self.file.unlock();
    }
}

/// Encodes a link or scope name into a portable file name, reversibly: `[a-z0-9_-]` and non-leading `.` stay,
/// an upper-case letter becomes `^` + lower case (Graph ids are case-sensitive, macOS and Windows file names are
/// not), every other byte becomes `%XX`. Names too long for a file system become `~{sha256}`; their files also
/// store the original name.
pub(super) fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for (i, byte) in name.bytes().enumerate() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => out.push(byte as char),
            b'.' if i > 0 => out.push('.'),
            b'A'..=b'Z' => {
                out.push('^');
                out.push(byte.to_ascii_lowercase() as char);
            }
            _ => out.push_str(&format!("%{byte:02x}")),
        }
    }
    if out.len() > MAX_ENCODED_NAME {
        return format!("~{}", hex::encode(Sha256::digest(name.as_bytes())));
    }
    out
}

/// Reverses [`encode_name`]; `None` for hashed names (read the name from the file) and for foreign names.
pub(super) fn decode_name(encoded: &str) -> Option<String> {
    if encoded.starts_with('~') {
        return None;
    }
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut chars = encoded.bytes();
    while let Some(byte) = chars.next() {
        match byte {
            b'^' => bytes.push(chars.next()?.to_ascii_uppercase()),
            b'%' => {
                let hi = chars.next()?;
                let lo = chars.next()?;
                let pair = [hi, lo];
                let text = std::str::from_utf8(&pair).ok()?;
                bytes.push(u8::from_str_radix(text, 16).ok()?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The directory of one link under the store's root.
pub(super) fn link_dir(root: &Path, link: &str) -> PathBuf {
    root.join("links").join(encode_name(link))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_portable() {
        for name in [
            "mbx-1",
            "AAMkADQ0Zj/+==",
            "user@contoso.com",
            ".hidden",
            "Ünïcødé ✓",
            "a|b#c?d\\e",
            "Aa",
        ] {
            let encoded = encode_name(name);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"^%_-.".contains(&b)),
                "{encoded} has a non-portable byte"
            );
            assert!(
                !encoded.bytes().any(|b| b.is_ascii_uppercase()),
                "{encoded} depends on case"
            );
            assert!(!encoded.starts_with('.'));
            assert_eq!(decode_name(&encoded).as_deref(), Some(name));
        }
        assert_ne!(encode_name("Aa"), encode_name("aA"));
    }

    #[test]
    fn long_names_are_hashed() {
        let long = "x".repeat(300);
        let encoded = encode_name(&long);
        assert!(encoded.starts_with('~') && encoded.len() < 70);
        assert_eq!(decode_name(&encoded), None);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.json");
        write_json_atomic(&path, &vec![1, 2, 3]).unwrap();
        write_json_atomic(&path, &vec![4]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![4]));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }
}
