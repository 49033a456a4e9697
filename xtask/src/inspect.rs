//! Reads a Functions package back and checks what the host needs to run it: `host.json` at the
//! root naming an executable that is in the zip, has its run bit and is a static x86-64 Linux
//! binary without the demo's simulator ([`crate::contents`]); the operator's `galbridge.toml`; and one valid `{Function}/function.json` per function.
//!
//! Used right after [`crate::archive::write_package`] and by `cargo xtask check-package`, so a zip
//! made any other way (by hand, by another tool, on Windows) can be checked before it is deployed.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use crate::contents::{self, DemoCodeFound};
use crate::layout::{self, FunctionSpec, HostSettings, LayoutError};
use crate::{CONFIG_NAME, elf};

/// What a checked package holds.
#[derive(Debug, Clone)]
pub struct PackageReport {
    pub path: PathBuf,
    /// Every entry name, in archive order.
    pub entries: Vec<String>,
    pub host: HostSettings,
    /// Unix mode bits of the executable entry.
    pub executable_mode: u32,
    pub executable_size: u64,
    pub functions: Vec<FunctionSpec>,
    pub zip_size: u64,
}

/// Why a package would not run.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable zip: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{path}: no {entry} at the root of the package")]
    Missing { path: PathBuf, entry: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(
        "{path}: the executable {entry} has mode {mode:o} without a run bit: the host cannot start it"
    )]
    NotExecutable {
        path: PathBuf,
        entry: String,
        mode: u32,
    },
    #[error("{path}: the executable {entry}: {source}")]
    Executable {
        path: PathBuf,
        entry: String,
        #[source]
        source: elf::ElfError,
    },
    #[error("{path}: the executable {entry}: {source}")]
    DemoCode {
        path: PathBuf,
        entry: String,
        #[source]
        source: DemoCodeFound,
    },
    #[error(
        "{path}: {entry} is misplaced: each function.json sits in a function folder at the root ({{Function}}/function.json)"
    )]
    NestedFunction { path: PathBuf, entry: String },
    #[error("{path}: no function folders ({{Function}}/function.json)")]
    NoFunctions { path: PathBuf },
}

/// Opens the zip at `path` and checks it (see the module doc).
pub fn check_package(path: &Path) -> Result<PackageReport, InspectError> {
    let io_error = |source| InspectError::Io {
        path: path.to_owned(),
        source,
    };
    let zip_error = |source| InspectError::Zip {
        path: path.to_owned(),
        source,
    };
    let zip_size = fs::metadata(path).map_err(io_error)?.len();
    let file = fs::File::open(path).map_err(io_error)?;
    let mut archive = ZipArchive::new(file).map_err(zip_error)?;

    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive.by_index(index).map_err(zip_error)?;
        entries.push(entry.name().map_err(zip_error)?.into_owned());
    }
    let names: BTreeSet<&str> = entries.iter().map(String::as_str).collect();
    let missing = |entry: &str| InspectError::Missing {
        path: path.to_owned(),
        entry: entry.to_owned(),
    };

    let mut read_entry = |name: &str| -> Result<Vec<u8>, InspectError> {
        let mut entry = archive.by_name(name).map_err(zip_error)?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(io_error)?;
        Ok(bytes)
    };

    if !names.contains("host.json") {
        return Err(missing("host.json"));
    }
    let host_text = String::from_utf8_lossy(&read_entry("host.json")?).into_owned();
    let host = layout::parse_host_json("host.json (in the package)", &host_text)?;

    if !names.contains(host.executable.as_str()) {
        return Err(missing(&host.executable));
    }
    let binary = read_entry(&host.executable)?;
    elf::check_static_x86_64(&binary).map_err(|source| InspectError::Executable {
        path: path.to_owned(),
        entry: host.executable.clone(),
        source,
    })?;
    contents::check_no_simulator(&binary).map_err(|source| InspectError::DemoCode {
        path: path.to_owned(),
        entry: host.executable.clone(),
        source,
    })?;

    if !names.contains(CONFIG_NAME) {
        return Err(missing(CONFIG_NAME));
    }

    let mut functions = Vec::new();
    for name in entries
        .iter()
        .filter(|n| n.ends_with("/function.json") || *n == "function.json")
    {
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() != 2 {
            return Err(InspectError::NestedFunction {
                path: path.to_owned(),
                entry: name.clone(),
            });
        }
        let text = String::from_utf8_lossy(&read_entry(name)?).into_owned();
        functions.push(layout::parse_function_json(
            parts[0],
            &format!("{name} (in the package)"),
            &text,
        )?);
    }
    if functions.is_empty() {
        return Err(InspectError::NoFunctions {
            path: path.to_owned(),
        });
    }

    let executable = archive.by_name(&host.executable).map_err(zip_error)?;
    // No mode means the zip was made without Unix attributes (e.g. on Windows): no run bit.
    let executable_mode = executable.unix_mode().unwrap_or(0) & 0o7777;
    let executable_size = executable.size();
    drop(executable);
    if executable_mode & 0o111 == 0 {
        return Err(InspectError::NotExecutable {
            path: path.to_owned(),
            entry: host.executable.clone(),
            mode: executable_mode,
        });
    }

    Ok(PackageReport {
        path: path.to_owned(),
        entries,
        host,
        executable_mode,
        executable_size,
        functions,
        zip_size,
    })
}
