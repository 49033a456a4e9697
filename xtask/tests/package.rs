//! The package a Functions host receives: built from a fixture checkout (and from this repository's
//! own `host.json` + `functions/` when they exist), then opened with the zip reader and unpacked the
//! way the host does, to check what the host relies on.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::MUSL_TARGET;
use xtask::archive::{PackageError, PackageInputs, write_package};
use xtask::contents::{FORBIDDEN_CRATES, PACKAGE_FEATURE_ARGS};
use xtask::elf::synthetic_executable;
use xtask::inspect::{InspectError, check_package};
use zip::ZipArchive;
use zip::write::SimpleFileOptions;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;

const HOST_JSON: &str = r#"{
  "version": "2.0",
  "extensionBundle": { "id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)" },
  "customHandler": {
    "description": { "defaultExecutablePath": "galbridge", "arguments": ["serve"] },
    "enableForwardingHttpRequest": false
  }
}"#;

const SYNC_TIMER: &str = r#"{ "bindings": [
  { "type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "%GALBRIDGE_SCHEDULE%" }
] }"#;

const SYNC_HTTP: &str = r#"{ "bindings": [
  { "type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function", "methods": ["post"], "route": "sync/{link?}" },
  { "type": "http", "direction": "out", "name": "res" }
] }"#;

const STATUS: &str = r#"{ "bindings": [
  { "type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function", "methods": ["get"], "route": "status" },
  { "type": "http", "direction": "out", "name": "res" }
] }"#;

const NOTIFY: &str = r#"{ "bindings": [
  { "type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous", "methods": ["post"], "route": "notify" },
  { "type": "http", "direction": "out", "name": "res" }
] }"#;

const PHONES_SHARD: &str = r#"{ "bindings": [
  { "type": "queueTrigger", "direction": "in", "name": "shard", "queueName": "galbridge-phones-shards", "connection": "GALBRIDGE_QUEUE" }
] }"#;

const CONFIG: &str = "# operator configuration\n[state]\nkind = \"table\"\n\n[tenants.contoso]\nid = \"contoso.onmicrosoft.com\"\n";

/// A checkout with galbridge's layout in a temp dir, plus a stand-in static executable.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        fixture.write("host.json", HOST_JSON);
        fixture.write("functions/SyncTimer/function.json", SYNC_TIMER);
        fixture.write("functions/SyncHttp/function.json", SYNC_HTTP);
        fixture.write("functions/Status/function.json", STATUS);
        fixture.write("functions/Notify/function.json", NOTIFY);
        fixture.write("functions/PhonesShard/function.json", PHONES_SHARD);
        fixture.write("galbridge.toml", CONFIG);
        fs::write(
            fixture.path("build/galbridge"),
            synthetic_executable(&[PT_LOAD, PT_LOAD]),
        )
        .expect("binary");
        fixture
    }

    fn path(&self, relative: &str) -> PathBuf {
        let path = self.dir.path().join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("parent dir");
        }
        path
    }

    fn write(&self, relative: &str, text: &str) {
        fs::write(self.path(relative), text).expect("fixture file");
    }

    fn inputs(&self) -> PackageInputs {
        PackageInputs {
            app_root: self.dir.path().to_owned(),
            binary: self.path("build/galbridge"),
            config: self.path("galbridge.toml"),
            output: self.path("dist/galbridge.zip"),
            enforce_galbridge_contract: true,
        }
    }
}

fn read_entry(archive: &mut ZipArchive<fs::File>, name: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    archive
        .by_name(name)
        .expect("entry present")
        .read_to_end(&mut bytes)
        .expect("entry readable");
    bytes
}

#[test]
fn package_holds_host_json_the_executable_with_its_run_bit_the_config_and_each_function() {
    // Arrange
    let fixture = Fixture::new();

    // Act
    let report = write_package(&fixture.inputs()).expect("package written");

    // Assert: read the zip with the zip reader, not with our own checker.
    let mut archive = ZipArchive::new(fs::File::open(&report.path).unwrap()).unwrap();
    let names: BTreeSet<String> = archive
        .file_names()
        .map(|n| n.unwrap().into_owned())
        .collect();
    let expected: BTreeSet<String> = [
        "host.json",
        "galbridge",
        "galbridge.toml",
        "SyncTimer/function.json",
        "SyncHttp/function.json",
        "Status/function.json",
        "Notify/function.json",
        "PhonesShard/function.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expected);

    let executable = archive.by_name("galbridge").unwrap();
    assert_eq!(executable.unix_mode().map(|m| m & 0o777), Some(0o755));
    drop(executable);
    let config = archive.by_name("galbridge.toml").unwrap();
    assert_eq!(
        config.unix_mode().map(|m| m & 0o111),
        Some(0),
        "config is not executable"
    );
    drop(config);

    let host: serde_json::Value =
        serde_json::from_slice(&read_entry(&mut archive, "host.json")).unwrap();
    let started = host["customHandler"]["description"]["defaultExecutablePath"]
        .as_str()
        .unwrap();
    assert_eq!(started, "galbridge");
    assert!(
        names.contains(started),
        "host.json names an executable that is in the zip"
    );
    assert_eq!(
        host["customHandler"]["description"]["arguments"][0],
        "serve"
    );

    assert_eq!(
        read_entry(&mut archive, "galbridge"),
        fs::read(fixture.path("build/galbridge")).unwrap(),
        "the executable is shipped byte for byte"
    );
    assert_eq!(
        read_entry(&mut archive, "galbridge.toml"),
        CONFIG.as_bytes()
    );
    assert_eq!(
        read_entry(&mut archive, "SyncHttp/function.json"),
        SYNC_HTTP.as_bytes()
    );
    assert_eq!(report.functions.len(), 5);
}

#[test]
fn unpacked_like_the_host_does_the_executable_can_be_run() {
    // Arrange
    let fixture = Fixture::new();
    let report = write_package(&fixture.inputs()).expect("package written");
    let unpacked = fixture.path("unpacked");

    // Act: zip's extract applies the stored Unix modes, as Linux unzip does.
    ZipArchive::new(fs::File::open(&report.path).unwrap())
        .unwrap()
        .extract(&unpacked)
        .unwrap();

    // Assert
    let mode = fs::metadata(unpacked.join("galbridge"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "owner, group and others may execute: mode {mode:o}"
    );
    assert!(unpacked.join("SyncTimer/function.json").is_file());
    assert!(unpacked.join("host.json").is_file());
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let fixture = Fixture::new();
    let first = write_package(&fixture.inputs()).unwrap();
    let first_bytes = fs::read(&first.path).unwrap();
    let mut again = fixture.inputs();
    again.output = fixture.path("dist/again.zip");
    let second = write_package(&again).unwrap();
    assert_eq!(first_bytes, fs::read(second.path).unwrap());
}

#[test]
fn a_dynamically_linked_executable_is_refused_and_nothing_is_written() {
    let fixture = Fixture::new();
    fs::write(
        fixture.path("build/galbridge"),
        synthetic_executable(&[PT_LOAD, PT_INTERP]),
    )
    .unwrap();

    let error = write_package(&fixture.inputs()).unwrap_err();

    assert!(matches!(error, PackageError::Executable { .. }), "{error}");
    assert!(
        error.to_string().contains("x86_64-unknown-linux-musl"),
        "{error}"
    );
    assert!(!fixture.path("dist/galbridge.zip").exists());
}

/// The crates (name and version, one a line) that `cargo tree` says go into the galbridge executable built for
/// the package, with `features` as the feature arguments: normal dependencies only, as `cargo build` links them.
fn linked_crates(features: &[&str]) -> BTreeSet<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["tree", "--package", "galbridge", "--target", MUSL_TARGET])
        .args(["--edges", "normal", "--prefix", "none", "--format", "{p}"])
        .args(features)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_packaged_build_links_no_simulator_server_or_certificate_generation() {
    // The features `cargo xtask package` builds with (xtask/src/build.rs uses the same constant).
    let packaged = linked_crates(PACKAGE_FEATURE_ARGS);
    assert!(
        packaged.contains("galbridge") && packaged.contains("rustls"),
        "cargo tree listed the graph: {packaged:?}"
    );
    for forbidden in FORBIDDEN_CRATES {
        assert!(
            !packaged.contains(*forbidden),
            "the package's galbridge links {forbidden}: the simulator and what it alone needs belong behind the \
             `demo` feature (Cargo.toml), not in the binary deployed to Azure"
        );
    }
    // The check can see them: the default build (the demo's) links all three.
    let default = linked_crates(&[]);
    for forbidden in FORBIDDEN_CRATES {
        assert!(
            default.contains(*forbidden),
            "{forbidden} not in {default:?}"
        );
    }
}

#[test]
fn an_executable_carrying_the_simulator_is_refused_and_nothing_is_written() {
    let fixture = Fixture::new();
    let with_simulator = [
        synthetic_executable(&[PT_LOAD, PT_LOAD]),
        b"\0crates/m365-sim/src/server.rs\0".to_vec(),
    ]
    .concat();
    fs::write(fixture.path("build/galbridge"), with_simulator).unwrap();

    let error = write_package(&fixture.inputs()).unwrap_err();

    assert!(matches!(error, PackageError::DemoCode { .. }), "{error}");
    assert!(error.to_string().contains("demo"), "{error}");
    assert!(!fixture.path("dist/galbridge.zip").exists());
}

#[test]
fn a_timer_without_a_schedule_is_refused_with_its_file_named() {
    let fixture = Fixture::new();
    fixture.write(
        "functions/SyncTimer/function.json",
        r#"{ "bindings": [ { "type": "timerTrigger", "direction": "in", "name": "timer" } ] }"#,
    );

    let error = write_package(&fixture.inputs()).unwrap_err().to_string();

    assert!(
        error.contains("SyncTimer") && error.contains("schedule"),
        "{error}"
    );
}

#[test]
fn a_five_field_cron_schedule_is_refused() {
    let fixture = Fixture::new();
    fixture.write(
        "functions/SyncTimer/function.json",
        r#"{ "bindings": [ { "type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "*/15 * * * *" } ] }"#,
    );

    let error = write_package(&fixture.inputs()).unwrap_err().to_string();

    assert!(error.contains("6"), "{error}");
}

#[test]
fn an_http_trigger_without_an_http_output_binding_is_refused() {
    let fixture = Fixture::new();
    fixture.write(
        "functions/Status/function.json",
        r#"{ "bindings": [ { "type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function", "methods": ["get"], "route": "status" } ] }"#,
    );

    let error = write_package(&fixture.inputs()).unwrap_err().to_string();

    assert!(
        error.contains("Status") && error.contains("output binding"),
        "{error}"
    );
}

#[test]
fn an_anonymous_sync_endpoint_breaks_the_contract() {
    let fixture = Fixture::new();
    fixture.write(
        "functions/SyncHttp/function.json",
        &SYNC_HTTP.replace("\"function\"", "\"anonymous\""),
    );

    let error = write_package(&fixture.inputs()).unwrap_err();

    assert!(matches!(error, PackageError::Contract(_)), "{error}");
    assert!(error.to_string().contains("SyncHttp"), "{error}");
    // Without the contract the same layout is a valid (if unwise) Functions app.
    let mut lenient = fixture.inputs();
    lenient.enforce_galbridge_contract = false;
    assert!(write_package(&lenient).is_ok());
}

#[test]
fn a_shard_trigger_on_another_queue_or_connection_breaks_the_contract() {
    for (queue, connection) in [
        ("other-queue", "GALBRIDGE_QUEUE"),
        ("galbridge-phones-shards", "AzureWebJobsStorage"),
    ] {
        let fixture = Fixture::new();
        fixture.write(
            "functions/PhonesShard/function.json",
            &PHONES_SHARD
                .replace("galbridge-phones-shards", queue)
                .replace("GALBRIDGE_QUEUE", connection),
        );
        let error = write_package(&fixture.inputs()).unwrap_err();
        assert!(
            matches!(&error, PackageError::Contract(reason) if reason.contains("PhonesShard")),
            "{error}"
        );
        assert!(!fixture.path("dist/galbridge.zip").exists());
    }
}

#[test]
fn a_queue_trigger_with_an_invalid_queue_name_is_refused_with_its_file_named() {
    let fixture = Fixture::new();
    fixture.write(
        "functions/PhonesShard/function.json",
        &PHONES_SHARD.replace("galbridge-phones-shards", "Shards_Queue"),
    );
    let error = write_package(&fixture.inputs()).unwrap_err().to_string();
    assert!(
        error.contains("PhonesShard/function.json") && error.contains("Shards_Queue"),
        "{error}"
    );
}

#[test]
fn host_json_that_starts_another_program_breaks_the_contract() {
    let fixture = Fixture::new();
    fixture.write(
        "host.json",
        &HOST_JSON.replace("\"galbridge\"", "\"handler\""),
    );

    let error = write_package(&fixture.inputs()).unwrap_err().to_string();

    assert!(error.contains("handler"), "{error}");
}

#[test]
fn host_json_without_a_custom_handler_is_refused() {
    let fixture = Fixture::new();
    fixture.write("host.json", r#"{ "version": "2.0" }"#);

    let error = write_package(&fixture.inputs()).unwrap_err().to_string();

    assert!(error.contains("customHandler"), "{error}");
}

#[test]
fn a_config_that_is_not_toml_is_refused() {
    let fixture = Fixture::new();
    fixture.write("galbridge.toml", "[tenants.contoso\nid = ");

    let error = write_package(&fixture.inputs()).unwrap_err();

    assert!(matches!(error, PackageError::Config { .. }), "{error}");
}

#[test]
fn a_config_keeping_state_in_a_local_folder_is_refused() {
    let fixture = Fixture::new();
    fixture.write("galbridge.toml", "[state]\nkind = \"file\"\n");

    let error = write_package(&fixture.inputs()).unwrap_err();

    assert!(matches!(error, PackageError::Config { .. }), "{error}");
    assert!(error.to_string().contains("kind = \"table\""), "{error}");
    fixture.write("galbridge.toml", "[tenants.contoso]\n");
    let unset = write_package(&fixture.inputs()).unwrap_err().to_string();
    assert!(unset.contains("not set"), "{unset}");
}

/// Writes a zip by hand, as another tool might, for the checker to judge.
fn hand_made_zip(path: &Path, entries: &[(&str, u32, &[u8])]) {
    let mut writer = zip::ZipWriter::new(fs::File::create(path).expect("zip file"));
    for (name, mode, bytes) in entries {
        writer
            .start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
            .expect("zip entry");
        writer.write_all(bytes).expect("zip entry bytes");
    }
    writer.finish().expect("zip finished");
}

#[test]
fn check_package_refuses_an_executable_without_its_run_bit() {
    let fixture = Fixture::new();
    let binary = synthetic_executable(&[PT_LOAD]);
    let zip_path = fixture.path("dist/handmade.zip");
    hand_made_zip(
        &zip_path,
        &[
            ("host.json", 0o644, HOST_JSON.as_bytes()),
            ("galbridge", 0o644, &binary),
            ("galbridge.toml", 0o644, CONFIG.as_bytes()),
            ("SyncTimer/function.json", 0o644, SYNC_TIMER.as_bytes()),
        ],
    );

    let error = check_package(&zip_path).unwrap_err();

    assert!(
        matches!(error, InspectError::NotExecutable { mode: 0o644, .. }),
        "{error}"
    );
}

#[test]
fn check_package_refuses_an_executable_carrying_certificate_generation() {
    let fixture = Fixture::new();
    let binary = [
        synthetic_executable(&[PT_LOAD]),
        b"/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/rcgen-0.14.5/src/certificate.rs".to_vec(),
    ]
    .concat();
    let zip_path = fixture.path("dist/handmade.zip");
    hand_made_zip(
        &zip_path,
        &[
            ("host.json", 0o644, HOST_JSON.as_bytes()),
            ("galbridge", 0o755, &binary),
            ("galbridge.toml", 0o644, CONFIG.as_bytes()),
            ("SyncTimer/function.json", 0o644, SYNC_TIMER.as_bytes()),
        ],
    );

    let error = check_package(&zip_path).unwrap_err();

    assert!(matches!(error, InspectError::DemoCode { .. }), "{error}");
    assert!(error.to_string().contains("rcgen"), "{error}");
}

#[test]
fn check_package_refuses_a_zip_whose_host_json_names_a_missing_executable() {
    let fixture = Fixture::new();
    let binary = synthetic_executable(&[PT_LOAD]);
    let zip_path = fixture.path("dist/handmade.zip");
    hand_made_zip(
        &zip_path,
        &[
            ("host.json", 0o644, HOST_JSON.as_bytes()),
            ("bin/galbridge", 0o755, &binary),
            ("galbridge.toml", 0o644, CONFIG.as_bytes()),
            ("SyncTimer/function.json", 0o644, SYNC_TIMER.as_bytes()),
        ],
    );

    let error = check_package(&zip_path).unwrap_err();

    assert!(
        matches!(&error, InspectError::Missing { entry, .. } if entry == "galbridge"),
        "{error}"
    );
}

#[test]
fn check_package_refuses_a_function_json_nested_below_the_root_folders() {
    let fixture = Fixture::new();
    let binary = synthetic_executable(&[PT_LOAD]);
    let zip_path = fixture.path("dist/handmade.zip");
    hand_made_zip(
        &zip_path,
        &[
            ("host.json", 0o644, HOST_JSON.as_bytes()),
            ("galbridge", 0o755, &binary),
            ("galbridge.toml", 0o644, CONFIG.as_bytes()),
            (
                "functions/SyncTimer/function.json",
                0o644,
                SYNC_TIMER.as_bytes(),
            ),
        ],
    );

    let error = check_package(&zip_path).unwrap_err();

    assert!(
        matches!(error, InspectError::NestedFunction { .. }),
        "{error}"
    );
}

/// The repository's own `host.json` and `functions/` (owned by the functions engineer) must make a
/// package that keeps galbridge's contract. Until they land on this branch there is nothing to check.
#[test]
fn this_repository_host_json_and_functions_make_a_valid_package() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    if !repo.join("host.json").is_file() || !repo.join("functions").is_dir() {
        eprintln!("skipped: host.json and functions/ are not in this checkout yet");
        return;
    }
    let fixture = Fixture::new();
    // The package test is about host.json and functions/; the configuration is the fixture's.
    let config = fixture.path("galbridge.toml");

    let report = write_package(&PackageInputs {
        app_root: repo,
        binary: fixture.path("build/galbridge"),
        config,
        output: fixture.path("dist/repo.zip"),
        enforce_galbridge_contract: true,
    })
    .unwrap_or_else(|e| panic!("the repository's functions do not package: {e}"));

    let names: BTreeSet<&str> = report.functions.iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.is_superset(&BTreeSet::from([
            "SyncTimer",
            "SyncHttp",
            "Status",
            "Notify",
            "PhonesShard"
        ])),
        "{names:?}"
    );
}
