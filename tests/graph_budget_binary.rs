//! Graph's per-app limit kept across processes (issue 17): three `galbridge sync` processes, each writing the Acme
//! people into every Northern mailbox (one link each, its own folder), all three under Northern's one app
//! registration and one state folder. Each alone could send the whole limit within 10 s; together they would send
//! three times as much. The simulator enforces the same per-app limit galbridge is configured with
//! (`[service] graph_requests_per_10s`, knob `graph_app_requests_per_10_s`) and counts every 10 s span: no span
//! over the limit, no per-app 429, every contact in every mailbox. A process killed mid-run (its grant unspent)
//! holds the others back for at most one window.

// The engine's simulator connector (`engine::adapters::simulated`) comes with the `demo` cargo feature (on by default).
#![cfg(feature = "demo")]

mod engine_support;
mod phones_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use phones_support::{anchor_of, folder_by_anchor, writable_mailboxes};

/// Graph requests per 10 s per app: galbridge's configured limit and the simulator's, small so the test is quick.
const LIMIT: u32 = 600;
const LINKS: [&str; 3] = ["phones-a", "phones-b", "phones-c"];

fn folder_of(link: &str) -> String {
    format!("Acme {link}")
}

struct Setup {
    sim: m365_sim::SimHandle,
    _state: tempfile::TempDir,
    config_path: PathBuf,
    secrets: Vec<(String, String)>,
    northern_app: String,
}

async fn setup(people: usize) -> Setup {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", people),
            m365_sim::TenantSeed::new("northern", 12),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    sim.control()
        .update_knobs(|knobs| knobs.graph_app_requests_per_10_s = Some(LIMIT));
    let state = tempfile::tempdir().expect("temp dir");
    let mut toml = format!(
        "[service]\ngraph_requests_per_10s = {LIMIT}\nextra_ca_file = {:?}\n[state]\nkind = \"file\"\npath = {:?}\n",
        sim.ca_pem_path().display().to_string(),
        state.path().join("state").display().to_string()
    );
    let mut secrets = Vec::new();
    for name in ["acme", "northern"] {
        let info = sim.tenant(name).expect("seeded");
        let variable = format!("GALBRIDGE_TEST_{}_SECRET", name.to_uppercase());
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{}\"\ninitial_domain = \"{}\"\nclient_id = \"{}\"\ncredential = {{ env = \"{variable}\" }}\n\
             [tenants.{name}.endpoints]\nlogin = \"{b}\"\ngraph = \"{b}\"\nexchange = \"{b}\"\n",
            info.tenant_id,
            info.initial_domain,
            info.client_id,
            b = sim.base_url()
        ));
        secrets.push((variable, info.client_secret.clone()));
    }
    for link in LINKS {
        toml.push_str(&format!(
            "[[links]]\nname = \"{link}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
             kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{}\"\n",
            folder_of(link)
        ));
    }
    let config_path = state.path().join("galbridge.toml");
    std::fs::write(&config_path, toml).expect("config written");
    let northern_app = sim
        .tenant("northern")
        .expect("northern")
        .client_id
        .to_ascii_lowercase();
    Setup {
        sim,
        _state: state,
        config_path,
        secrets,
        northern_app,
    }
}

impl Setup {
    fn sync(&self, link: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_galbridge"));
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(["sync", "--link", link])
            .env("GALBRIDGE_LEASE_TTL_SECS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (variable, secret) in &self.secrets {
            command.env(variable, secret);
        }
        command
    }

    /// Northern's app as the simulator counted it.
    fn load(&self) -> m365_sim::AppLoad {
        self.sim
            .control()
            .app_loads()
            .into_iter()
            .find(|load| load.app_id == self.northern_app)
            .unwrap_or_default()
    }

    /// Asserts every writable Northern mailbox holds each Acme person exactly once in each link's folder.
    fn assert_everyone_everywhere(&self) -> usize {
        let acme_id = self.sim.tenant("acme").expect("acme").tenant_id;
        let people: BTreeSet<String> = self
            .sim
            .control()
            .users("acme")
            .expect("acme")
            .iter()
            .filter(|user| engine_support::in_default_scope(user))
            .map(|user| anchor_of(&acme_id, user))
            .collect();
        let mailboxes =
            writable_mailboxes(&self.sim.control().users("northern").expect("northern"));
        assert!(!mailboxes.is_empty());
        let mut contacts = 0;
        for link in LINKS {
            for mailbox in &mailboxes {
                let folder = folder_by_anchor(
                    &self.sim,
                    "northern",
                    mailbox["id"].as_str().expect("id"),
                    &folder_of(link),
                );
                let anchors: BTreeSet<String> =
                    folder.keys().filter(|a| !a.is_empty()).cloned().collect();
                assert_eq!(
                    anchors, people,
                    "{link}: {} holds everyone",
                    mailbox["userPrincipalName"]
                );
                for (anchor, copies) in folder.iter().filter(|(a, _)| !a.is_empty()) {
                    assert_eq!(copies.len(), 1, "{link}: {anchor} once");
                }
                contacts += anchors.len();
            }
        }
        contacts
    }
}

async fn wait_for(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("galbridge runs"))
        .await
        .expect("joins")
}

fn assert_succeeded(link: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{link} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_app_limit_and_all_the_work_lands() {
    let setup = setup(40).await;
    let started = Instant::now();
    let children: Vec<_> = LINKS
        .iter()
        .map(|link| (link, setup.sync(link).spawn().expect("galbridge starts")))
        .collect();
    for (link, child) in children {
        let output = wait_for(child).await;
        assert_succeeded(link, &output);
    }
    let elapsed = started.elapsed();
    let load = setup.load();
    let contacts = setup.assert_everyone_everywhere();
    let rate = load.requests as f64 / elapsed.as_secs_f64();
    println!(
        "3 processes, limit {LIMIT}/10 s: {} Graph requests of Northern's app in {:.1} s ({rate:.0}/s, {:.0} per 10 s); \
         most in any 10 s: {}; per fixed window: {:?}; per-app 429s: {}; {contacts} contacts",
        load.requests,
        elapsed.as_secs_f64(),
        rate * 10.0,
        load.max_in_any_10_s,
        load.windows.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        load.throttled,
    );
    assert!(
        load.requests > u64::from(LIMIT) * 2,
        "the work needs several windows: {}",
        load.requests
    );
    assert!(
        load.max_in_any_10_s <= LIMIT,
        "{} requests within 10 s",
        load.max_in_any_10_s
    );
    assert_eq!(load.throttled, 0, "no request hit the per-app limit");
    assert!(
        load.max_in_any_10_s >= LIMIT * 6 / 10,
        "the processes used the budget they share: {} in the busiest 10 s",
        load.max_in_any_10_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_grant_holds_the_others_back_one_window_at_most() {
    let setup = setup(40).await;
    let mut victim = setup.sync(LINKS[0]).spawn().expect("galbridge starts");
    let survivors: Vec<_> = LINKS[1..]
        .iter()
        .map(|link| (link, setup.sync(link).spawn().expect("galbridge starts")))
        .collect();
    // Kill on observed progress: once the three have sent most of a window's worth.
    let deadline = Instant::now() + Duration::from_secs(120);
    while setup.load().requests < u64::from(LIMIT) * 3 / 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        victim.try_wait().expect("status").is_none(),
        "the victim still runs"
    );
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    let killed_at = Instant::now();
    // Watch the app's requests until the survivors end: the longest pause after the kill.
    let mut last = setup.load().requests;
    let mut last_change = killed_at;
    let mut longest_pause = Duration::ZERO;
    let survivors: Vec<_> = survivors
        .into_iter()
        .map(|(link, child)| {
            (
                link,
                tokio::task::spawn_blocking(move || child.wait_with_output()),
            )
        })
        .collect();
    while !survivors.iter().all(|(_, task)| task.is_finished())
        && killed_at.elapsed() < Duration::from_secs(180)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = setup.load().requests;
        if now != last {
            longest_pause = longest_pause.max(last_change.elapsed());
            last = now;
            last_change = Instant::now();
        }
    }
    for (link, task) in survivors {
        let output = task.await.expect("joins").expect("galbridge runs");
        assert_succeeded(link, &output);
    }
    println!(
        "after the kill: longest pause in Northern's Graph requests {:.2} s; survivors done {:.1} s after it",
        longest_pause.as_secs_f64(),
        killed_at.elapsed().as_secs_f64()
    );
    assert!(
        longest_pause <= Duration::from_millis(12_000),
        "a dead process's grant holds the app back at most one window (+ the two extra slots): {longest_pause:?}"
    );
    // The killed link's rerun finishes its work; every folder is complete, and the limit held throughout.
    let output = wait_for(setup.sync(LINKS[0]).spawn().expect("galbridge starts")).await;
    assert_succeeded(LINKS[0], &output);
    setup.assert_everyone_everywhere();
    let load = setup.load();
    assert!(load.max_in_any_10_s <= LIMIT, "{}", load.max_in_any_10_s);
    assert_eq!(load.throttled, 0);
}
