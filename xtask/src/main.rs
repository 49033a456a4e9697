//! `cargo xtask`: the command line of the repository tasks (see the library's module doc).
//!
//! ```text
//! cargo xtask package [--binary PATH] [--config PATH] [--out PATH] [--target TRIPLE] [--app-root PATH] [--no-contract]
//! cargo xtask check-package [PATH]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use xtask::archive::{PackageInputs, write_package};
use xtask::build::build_release_binary;
use xtask::inspect::{PackageReport, check_package};
use xtask::{CONFIG_NAME, MUSL_TARGET};

const USAGE: &str = "\
usage:
  cargo xtask package [options]    build the musl release binary (without the demo feature: no
                                   simulator) and write dist/galbridge.zip
      --binary PATH     package this already-built executable instead of building
      --config PATH     the operator's configuration (default: ./galbridge.toml)
      --out PATH        where to write the zip (default: dist/galbridge.zip)
      --target TRIPLE   build target (default: x86_64-unknown-linux-musl)
      --app-root PATH   folder holding host.json and functions/ (default: the repository root)
      --no-contract     do not hold functions/ to galbridge's SyncTimer/SyncHttp/Status/Notify/PhonesShard contract
  cargo xtask check-package [PATH] check an existing package (default: dist/galbridge.zip)";

fn workspace_root() -> PathBuf {
    // xtask/ sits at the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Relative paths on the command line are relative to where the user stands.
fn from_cwd(path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        path
    } else {
        std::env::current_dir().map_or(path.clone(), |cwd| cwd.join(path))
    }
}

fn print_report(report: &PackageReport) {
    println!(
        "package  {} ({} bytes)",
        report.path.display(),
        report.zip_size
    );
    println!(
        "executable  {} (mode {:o}, {} bytes) started as: {} {}",
        report.host.executable,
        report.executable_mode,
        report.executable_size,
        report.host.executable,
        report.host.arguments.join(" ")
    );
    for function in &report.functions {
        println!("function  {}: {:?}", function.name, function.trigger);
    }
    println!("entries  {}", report.entries.join(", "));
}

fn package(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let mut binary = None;
    let mut config = root.join(CONFIG_NAME);
    let mut output = root.join("dist").join("galbridge.zip");
    let mut target = MUSL_TARGET.to_owned();
    let mut enforce_contract = true;
    let mut app_root = root.clone();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--binary" => binary = Some(from_cwd(&value()?)),
            "--config" => config = from_cwd(&value()?),
            "--out" => output = from_cwd(&value()?),
            "--target" => target = value()?,
            "--app-root" => app_root = from_cwd(&value()?),
            "--no-contract" => enforce_contract = false,
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if !config.is_file() {
        return Err(format!(
            "no operator configuration at {}: pass --config PATH (start from examples/, check it with `galbridge validate`)",
            config.display()
        ));
    }
    let binary = match binary {
        Some(path) => path,
        None => {
            eprintln!("building galbridge for {target} (release)…");
            let built = build_release_binary(&root, &target).map_err(|e| e.to_string())?;
            eprintln!(
                "built {} in {:.1} s",
                built.path.display(),
                built.elapsed.as_secs_f64()
            );
            built.path
        }
    };
    let report = write_package(&PackageInputs {
        app_root,
        binary,
        config,
        output,
        enforce_galbridge_contract: enforce_contract,
    })
    .map_err(|e| error_chain(&e))?;
    print_report(&report);
    Ok(())
}

fn check(args: &[String]) -> Result<(), String> {
    let path = match args {
        [] => workspace_root().join("dist").join("galbridge.zip"),
        [path] => from_cwd(path),
        _ => return Err(USAGE.to_owned()),
    };
    let report = check_package(&path).map_err(|e| error_chain(&e))?;
    print_report(&report);
    Ok(())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "package" => package(rest),
        Some((command, rest)) if command == "check-package" => check(rest),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
