//! Sync benchmark of the real binary (`galbridge sync`, production path: m365 clients over TLS, file state) against
//! m365-sim running in this process: N source people into an empty target, then 1% of them changed. Prints wall
//! time, requests per object, retries, the galbridge process's peak memory (VmHWM, simulator not included), and the
//! incremental run's requests per change for two directory sizes (it must not grow with the directory).
//! `GALBRIDGE_BENCH_PEOPLE` sets N (default 5000; the small size is N/10). Run: `cargo bench --bench sync_bench`.
//! The simulator models no network latency here: wall times are galbridge's and the simulator's CPU on this machine.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One run of the binary: its report, wall time and peak resident memory.
struct Run {
    report: Value,
    secs: f64,
    peak_mib: Option<f64>,
}

struct Figures {
    people: usize,
    full: Run,
    changes: usize,
    incremental: Run,
}

fn requests(report: &Value) -> u64 {
    report["requests"]
        .as_object()
        .map(|map| map.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

fn count(report: &Value, section: &str, kind: &str) -> u64 {
    report[section][kind].as_u64().unwrap_or(0)
}

/// Peak resident memory (VmHWM) of a running process, in MiB.
fn peak_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `galbridge sync --json` to its end, sampling its peak memory (a high-water mark: the last sample before
/// exit is the peak up to ~10 ms before the end).
async fn sync(config: &Path, secrets: &[(String, String)]) -> Run {
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

async fn measure(people: usize) -> Figures {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", people),
            m365_sim::TenantSeed::new("northern", 5),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let dir = std::env::temp_dir().join(format!("galbridge-bench-{}-{people}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let mut toml = format!(
        "[service]\nmax_concurrency = 8\nextra_ca_file = {:?}\n[state]\nkind = \"file\"\npath = {:?}\n",
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

    let full = sync(&config, &secrets).await;

    let control = sim.control();
    let users = control.users("acme").expect("users");
    let changes = (people / 100).max(1);
    for (i, user) in users
        .iter()
        .filter(|u| u["accountEnabled"] == true && u["userType"] == "Member")
        .take(changes)
        .enumerate()
    {
        control
            .update_user(
                "acme",
                user["id"].as_str().unwrap_or_default(),
                json!({"jobTitle": format!("Changed {i}")}),
            )
            .expect("update");
    }
    let incremental = sync(&config, &secrets).await;
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
    Figures {
        people,
        full,
        changes,
        incremental,
    }
}

fn mib(run: &Run) -> String {
    run.peak_mib
        .map(|m| format!("{m:.0} MiB"))
        .unwrap_or_else(|| "n/a".into())
}

fn print(figures: &Figures) {
    let full = &figures.full.report;
    let written = count(full, "applied", "creates").max(1);
    println!(
        "{} source people ({} created), empty target:",
        figures.people,
        count(full, "applied", "creates")
    );
    println!(
        "  full run:   {:>7.2} s, {} requests {}, {:.2} requests per object, {} retries, peak memory {}, outcome {}",
        figures.full.secs,
        requests(full),
        full["requests"],
        requests(full) as f64 / written as f64,
        full["throttled_retries"].as_u64().unwrap_or(0),
        mib(&figures.full),
        full["outcome"]
    );
    let inc = &figures.incremental.report;
    println!(
        "  1% changed ({} people): {:>7.2} s, {} requests {}, {:.2} requests per change, {} updates, {} retries, peak memory {}",
        figures.changes,
        figures.incremental.secs,
        requests(inc),
        inc["requests"],
        requests(inc) as f64 / figures.changes as f64,
        count(inc, "applied", "updates"),
        inc["throttled_retries"].as_u64().unwrap_or(0),
        mib(&figures.incremental)
    );
}

#[tokio::main]
async fn main() {
    let people: usize = std::env::var("GALBRIDGE_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let small = measure((people / 10).max(100)).await;
    print(&small);
    let large = measure(people).await;
    print(&large);
    let per_change = |f: &Figures| requests(&f.incremental.report) as f64 / f.changes as f64;
    println!(
        "incremental requests per change: {:.2} at {} people, {:.2} at {} people (flat = cost follows changes, not size)",
        per_change(&small),
        small.people,
        per_change(&large),
        large.people
    );
}
