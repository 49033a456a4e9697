//! What the benchmarks that run the real binary share: a configuration for a simulated one-way mail-contact link,
//! and one `galbridge sync --json` run with its report, wall time and peak memory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One run of the binary: its report, wall time and peak resident memory.
pub struct Run {
    pub report: Value,
    pub secs: f64,
    pub peak_mib: Option<f64>,
}

/// Requests the report counts, every service together.
pub fn requests(report: &Value) -> u64 {
    report["requests"]
        .as_object()
        .map(|map| map.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// A count of the report's `section` (`planned`, `applied`).
pub fn count(report: &Value, section: &str, kind: &str) -> u64 {
    report[section][kind].as_u64().unwrap_or(0)
}

/// Peak resident memory (VmHWM) of a running process, in MiB.
pub fn peak_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `galbridge sync --json` to its end, sampling its peak memory (a high-water mark: the last sample before
/// exit is the peak up to ~10 ms before the end).
pub async fn sync(config: &Path, secrets: &[(String, String)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_galbridge"));
    command
        .arg("--config")
        .arg(config)
        .args(["sync", "--json"])
        .env("GALBRIDGE_LOG", "warn")
        .env_remove("GALBRIDGE_EXTRA_CA_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in secrets {
        command.env(name, value);
    }
    let clock = Instant::now();
    let mut child = command.spawn().expect("galbridge starts");
    let pid = child.id().expect("running");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .map(|_| text)
    });
    let mut peak_mib = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if let Some(mib) = peak_of(pid) {
            peak_mib = Some(mib);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let secs = clock.elapsed().as_secs_f64();
    let text = reader.await.expect("joined").expect("stdout read");
    assert!(
        status.success(),
        "galbridge sync failed ({status}):\n{text}"
    );
    let reports: Value = serde_json::from_str(&text).expect("JSON reports");
    Run {
        report: reports[0].clone(),
        secs,
        peak_mib,
    }
}

/// Writes `dir/galbridge.toml`: file state in `dir/state`, the simulator's tenants `acme` (source) and `northern`
/// (target) with their secrets in environment variables (returned), and one link `bench` between them.
pub fn one_way_config(
    sim: &m365_sim::SimHandle,
    dir: &Path,
    max_concurrency: u32,
) -> (PathBuf, Vec<(String, String)>) {
    let mut toml = format!(
        "[service]\nmax_concurrency = {max_concurrency}\nextra_ca_file = {:?}\n[state]\nkind = \"file\"\npath = {:?}\n",
        sim.ca_pem_path().display().to_string(),
        dir.join("state").display().to_string()
    );
    let mut secrets = Vec::new();
    for name in ["acme", "northern"] {
        let info = sim.tenant(name).expect("seeded");
        let variable = format!("GALBRIDGE_BENCH_{}_SECRET", name.to_uppercase());
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{}\"\ninitial_domain = \"{}\"\nclient_id = \"{}\"\n\
             credential = {{ env = \"{variable}\" }}\n\
             [tenants.{name}.endpoints]\nlogin = \"{b}\"\ngraph = \"{b}\"\nexchange = \"{b}\"\n",
            info.tenant_id,
            info.initial_domain,
            info.client_id,
            b = sim.base_url()
        ));
        secrets.push((variable, info.client_secret.clone()));
    }
    toml.push_str(
        "[[links]]\nname = \"bench\"\n[links.source]\ntenant = \"acme\"\n[links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n",
    );
    let config = dir.join("galbridge.toml");
    std::fs::write(&config, toml).expect("configuration written");
    (config, secrets)
}
