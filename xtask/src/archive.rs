//! Writes the Functions package (zip) from a repository checkout and a built executable.
//!
//! Layout at the zip root (docs/microsoft-facts.md §7): `host.json`, the executable named by host.json
//! (mode 0755, so the host can start it: Flex Consumption runs the package as it is, nobody runs
//! `chmod` for us), `galbridge.toml`, and `{FunctionName}/function.json` for each folder of
//! `functions/`. Entries are written in a fixed order with a fixed timestamp, so the same inputs
//! give the same bytes.
//!
//! Everything is checked before a byte is written ([`crate::layout`], [`crate::elf`], and
//! [`crate::contents`]: no simulator in the executable), and the
//! written zip is read back with [`crate::inspect::check_package`] before it is reported.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::contents::{self, DemoCodeFound};
use crate::inspect::{self, PackageReport};
use crate::layout::{self, FunctionSpec, LayoutError};
use crate::{CONFIG_NAME, elf};

/// What goes into one package.
#[derive(Debug, Clone)]
pub struct PackageInputs {
    /// Folder holding `host.json` and `functions/` (the repository root).
    pub app_root: PathBuf,
    /// The built executable to ship.
    pub binary: PathBuf,
    /// The operator's configuration, shipped as `galbridge.toml`.
    pub config: PathBuf,
    /// Where to write the zip (parent folders are created).
    pub output: PathBuf,
    /// Also hold `functions/` to galbridge's function contract ([`layout::check_galbridge_functions`]).
    pub enforce_galbridge_contract: bool,
}

/// Why a package could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the zip {path}: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{path}: {source}")]
    Executable {
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
    #[error("{path}: {source}")]
    DemoCode {
        path: PathBuf,
        #[source]
        source: DemoCodeFound,
    },
    #[error("{path} is not valid TOML: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{dir} has no function folders (each needs a function.json)")]
    NoFunctions { dir: PathBuf },
    #[error("host.json or functions/ break galbridge's contract: {0}")]
    Contract(String),
    #[error("the written package failed its own check: {0}")]
    SelfCheck(#[from] inspect::InspectError),
}

fn read(path: &Path) -> Result<Vec<u8>, PackageError> {
    fs::read(path).map_err(|source| PackageError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, PackageError> {
    fs::read_to_string(path).map_err(|source| PackageError::Read {
        path: path.to_owned(),
        source,
    })
}

/// One function folder read from disk: its spec and the exact `function.json` bytes to ship.
struct FunctionSource {
    spec: FunctionSpec,
    json: String,
}

/// Reads and checks every `functions/*/function.json` under `app_root`, sorted by name.
fn read_functions(app_root: &Path) -> Result<Vec<FunctionSource>, PackageError> {
    let dir = app_root.join("functions");
    let entries = fs::read_dir(&dir).map_err(|source| PackageError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut functions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PackageError::Read {
            path: dir.clone(),
            source,
        })?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let json_path = path.join("function.json");
        if !json_path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let json = read_text(&json_path)?;
        let spec = layout::parse_function_json(&name, &json_path.display().to_string(), &json)?;
        functions.push(FunctionSource { spec, json });
    }
    if functions.is_empty() {
        return Err(PackageError::NoFunctions { dir });
    }
    functions.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(functions)
}

/// The package runs from a read-only mount on Flex Consumption, and instances come and go: the
/// state must live in Table Storage (`[state] kind = "table"`), not in the default local folder.
fn check_state_kind(config: &toml::Table) -> Result<(), String> {
    let kind = config
        .get("state")
        .and_then(toml::Value::as_table)
        .and_then(|state| state.get("kind"))
        .and_then(toml::Value::as_str);
    match kind {
        Some("table") => Ok(()),
        other => Err(format!(
            "[state] kind is {}, but a Functions deployment keeps its state in Table Storage: \
             set [state] kind = \"table\" (the endpoint and table come from the app settings)",
            other.map_or_else(
                || "not set (the local-folder default)".to_owned(),
                |k| format!("\"{k}\"")
            )
        )),
    }
}

/// Checks the inputs, writes the zip, reads it back and returns what it holds.
pub fn write_package(inputs: &PackageInputs) -> Result<PackageReport, PackageError> {
    // Arrange every entry first: a bad input leaves no half-written package behind.
    let host_path = inputs.app_root.join("host.json");
    let host_json = read_text(&host_path)?;
    let host = layout::parse_host_json(&host_path.display().to_string(), &host_json)?;

    let functions = read_functions(&inputs.app_root)?;
    if inputs.enforce_galbridge_contract {
        layout::check_galbridge_host(&host).map_err(PackageError::Contract)?;
        let specs: Vec<FunctionSpec> = functions.iter().map(|f| f.spec.clone()).collect();
        layout::check_galbridge_functions(&specs).map_err(PackageError::Contract)?;
    }

    let binary = read(&inputs.binary)?;
    elf::check_static_x86_64(&binary).map_err(|source| PackageError::Executable {
        path: inputs.binary.clone(),
        source,
    })?;
    contents::check_no_simulator(&binary).map_err(|source| PackageError::DemoCode {
        path: inputs.binary.clone(),
        source,
    })?;

    let config = read_text(&inputs.config)?;
    // Syntax, plus the one setting a Functions deployment cannot do without; the schema belongs
    // to the binary (`galbridge validate`).
    let parsed = config
        .parse::<toml::Table>()
        .map_err(|error| PackageError::Config {
            path: inputs.config.clone(),
            reason: error.to_string(),
        })?;
    if inputs.enforce_galbridge_contract {
        check_state_kind(&parsed).map_err(|reason| PackageError::Config {
            path: inputs.config.clone(),
            reason,
        })?;
    }

    if let Some(parent) = inputs.output.parent() {
        fs::create_dir_all(parent).map_err(|source| PackageError::Write {
            path: parent.to_owned(),
            source,
        })?;
    }
    let file = fs::File::create(&inputs.output).map_err(|source| PackageError::Write {
        path: inputs.output.clone(),
        source,
    })?;
    let zip_error = |source| PackageError::Zip {
        path: inputs.output.clone(),
        source,
    };
    let mut writer = ZipWriter::new(file);
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default());
    let mut add = |name: &str, mode: u32, bytes: &[u8]| -> Result<(), PackageError> {
        writer
            .start_file(name, options.unix_permissions(mode))
            .map_err(zip_error)?;
        writer
            .write_all(bytes)
            .map_err(|source| PackageError::Write {
                path: inputs.output.clone(),
                source,
            })
    };
    add("host.json", 0o644, host_json.as_bytes())?;
    add(&host.executable, 0o755, &binary)?;
    add(CONFIG_NAME, 0o644, config.as_bytes())?;
    for function in &functions {
        add(
            &format!("{}/function.json", function.spec.name),
            0o644,
            function.json.as_bytes(),
        )?;
    }
    writer.finish().map_err(zip_error)?;

    Ok(inspect::check_package(&inputs.output)?)
}
