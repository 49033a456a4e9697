//! Builds the release executable for the package: `cargo build --release --target
//! x86_64-unknown-linux-musl -p galbridge --bin galbridge --no-default-features` (without the `demo`
//! feature, so without the simulator: [`crate::contents`]), and finds the file cargo produced from
//! its JSON messages (so `CARGO_TARGET_DIR` and friends are honoured without guessing paths).
//!
//! Toolchain needs (docs/deploy.md "Build machine"): `rustup target add x86_64-unknown-linux-musl`.
//! ring compiles C and assembly for the target; when the `cc` crate finds no musl C compiler it
//! falls back to the host `cc`, which works on x86-64 Linux hosts; on other hosts install
//! `musl-tools` (Debian/Ubuntu) so `musl-gcc` exists.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::contents::PACKAGE_FEATURE_ARGS;

/// Why the build did not give us an executable.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot run cargo: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "cargo build --target {target} failed ({status}). If the target is missing: `rustup target add {target}`; \
         if a C compiler for musl is missing (ring): `apt-get install musl-tools`"
    )]
    Failed {
        target: String,
        status: std::process::ExitStatus,
    },
    #[error("cargo reported no executable for the galbridge binary")]
    NoExecutable,
}

/// The executable that was built and how long the build took.
#[derive(Debug, Clone)]
pub struct BuiltBinary {
    pub path: PathBuf,
    pub elapsed: Duration,
}

/// Runs the release build of `galbridge` for `target` in the workspace at `workspace_root`.
/// Cargo's human diagnostics go to this process's stderr as the build runs.
pub fn build_release_binary(
    workspace_root: &Path,
    target: &str,
) -> Result<BuiltBinary, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let mut child = Command::new(cargo)
        .current_dir(workspace_root)
        .args([
            "build",
            "--release",
            "--target",
            target,
            "--package",
            "galbridge",
            "--bin",
            "galbridge",
        ])
        .args(PACKAGE_FEATURE_ARGS)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(BuildError::Spawn)?;

    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(BuildError::Spawn)?;
            if let Some(path) = executable_from_message(&line) {
                executable = Some(path);
            }
        }
    }
    let status = child.wait().map_err(BuildError::Spawn)?;
    if !status.success() {
        return Err(BuildError::Failed {
            target: target.to_owned(),
            status,
        });
    }
    let path = executable.ok_or(BuildError::NoExecutable)?;
    Ok(BuiltBinary {
        path,
        elapsed: started.elapsed(),
    })
}

/// Reads one line of cargo's JSON output: the executable path of the `galbridge` binary artifact.
pub fn executable_from_message(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let target = message.get("target")?;
    let is_galbridge_bin = target.get("name")?.as_str()? == "galbridge"
        && target
            .get("kind")?
            .as_array()?
            .iter()
            .any(|kind| kind.as_str() == Some("bin"));
    if !is_galbridge_bin {
        return None;
    }
    message.get("executable")?.as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_binary_artifact_and_ignores_the_library_and_other_messages() {
        let library = r#"{"reason":"compiler-artifact","target":{"name":"galbridge","kind":["lib"]},"executable":null}"#;
        let binary = r#"{"reason":"compiler-artifact","target":{"name":"galbridge","kind":["bin"]},"executable":"/t/x86_64-unknown-linux-musl/release/galbridge"}"#;
        let other = r#"{"reason":"compiler-artifact","target":{"name":"m365-sim","kind":["bin"]},"executable":"/t/m365-sim"}"#;
        assert_eq!(executable_from_message(library), None);
        assert_eq!(executable_from_message(other), None);
        assert_eq!(
            executable_from_message(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(executable_from_message("not json"), None);
        assert_eq!(
            executable_from_message(binary),
            Some(PathBuf::from(
                "/t/x86_64-unknown-linux-musl/release/galbridge"
            ))
        );
    }
}
