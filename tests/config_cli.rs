//! The configuration as the CLI presents it: `validate` and its exit codes, `config schema`, and link names
//! checked before anything runs.

use std::process::{Command, Output};

fn galbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_galbridge"))
        .args(args)
        .env_remove("GALBRIDGE_CONFIG")
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env("GALBRIDGE_LOG", "off")
        .output()
        .expect("galbridge runs")
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_lists_the_links_and_exits_0() {
    let path = example("two-way.toml");

    let output = galbridge(&["--config", &path, "validate"]);

    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{path}: ok: 2 tenants, 2 links (2 from meshes)\n  partners.acme-to-globex: acme -> globex (mail_contact)\n  \
             partners.globex-to-acme: globex -> acme (mail_contact)\n"
        )
    );
}

#[test]
fn an_invalid_file_exits_2_with_the_reason_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[service]\ndefault_interval = \"soon\"\n").unwrap();
    let path = path.to_str().unwrap();

    let output = galbridge(&["--config", path, "validate"]);

    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "{path}: service.default_interval: \"soon\" is not a duration (write a number and a unit: \"30s\", \
             \"15m\", \"24h\", \"7d\", \"1h30m\")\n"
        )
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn the_config_file_comes_from_the_environment_when_not_given() {
    let output = Command::new(env!("CARGO_BIN_EXE_galbridge"))
        .arg("validate")
        .env("GALBRIDGE_CONFIG", example("mesh.toml"))
        .env("GALBRIDGE_LOG", "off")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("6 links (6 from meshes)"));
}

#[test]
fn config_schema_prints_the_committed_schema() {
    let output = galbridge(&["config", "schema"]);

    let committed = std::fs::read_to_string(format!(
        "{}/galbridge.schema.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), committed);
}

#[test]
fn an_unknown_link_exits_2_before_anything_runs() {
    let output = galbridge(&[
        "--config",
        &example("one-way.toml"),
        "sync",
        "--link",
        "acme-to-nothern",
    ]);

    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "galbridge: no link named \"acme-to-nothern\" (did you mean \"acme-to-northern\"?)\n"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let output = galbridge(&["--help"]);

    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("3  a link is quarantined"), "{help}");
    assert!(help.contains("2  bad input"), "{help}");
}
