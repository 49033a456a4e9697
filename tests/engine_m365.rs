//! The production path end to end: `engine::build_service` (file state store, m365 `ApiClient` and `TokenProvider`
//! with client secrets from environment variables, the simulator's CA trusted through `service.extra_ca_file`)
//! against m365-sim. Environment variables cannot be set inside a test process (that is `unsafe`, and unsafe code is
//! forbidden), so the run happens in a child process of this test binary that is given them.

use std::process::Command;

use serde_json::Value;

const CHILD: &str = "production_service_child_run";

#[tokio::test]
async fn production_service_syncs_through_the_m365_clients() {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", 12),
            m365_sim::TenantSeed::new("northern", 4),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let state = tempfile::tempdir().expect("temp dir");
    let mut toml = format!(
        "[service]\nextra_ca_file = {:?}\n[state]\nkind = \"file\"\npath = {:?}\n",
        sim.ca_pem_path().display().to_string(),
        state.path().display().to_string()
    );
    let mut child = Command::new(std::env::current_exe().expect("test binary"));
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
        child.env(variable, &info.client_secret);
    }
    toml.push_str(
        "[[links]]\nname = \"a-to-n\"\n[links.source]\ntenant = \"acme\"\n[links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n",
    );
    let config_path = state.path().join("galbridge.toml");
    std::fs::write(&config_path, toml).expect("config written");

    let output = tokio::task::spawn_blocking(move || {
        child
            .args(["--ignored", "--exact", CHILD, "--nocapture"])
            .env("GALBRIDGE_TEST_CONFIG", &config_path)
            .output()
            .expect("child runs")
    })
    .await
    .expect("child joins");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
    assert!(
        !stdout.contains(&sim.tenant("acme").unwrap().client_secret),
        "no secret in the output"
    );

    let in_scope = sim
        .control()
        .users("acme")
        .unwrap()
        .iter()
        .filter(|u| {
            u["userType"] == "Member"
                && u["accountEnabled"] == true
                && u["hiddenFromAddressLists"] != true
        })
        .count();
    let anchored: Vec<Value> = sim
        .control()
        .mail_contacts("northern")
        .unwrap()
        .into_iter()
        .filter(|c| {
            c["CustomAttribute15"]
                .as_str()
                .is_some_and(|a| a.starts_with("galbridge:"))
        })
        .collect();
    assert_eq!(anchored.len(), in_scope);
    // The requests went through the m365 clients: tokens from the login endpoint, commands to Exchange.
    let counters = sim.control().counters();
    assert!(!counters.is_empty());
}

/// Runs in the child process only (see above): the production service from the configuration file.
#[tokio::test]
#[ignore = "run by production_service_syncs_through_the_m365_clients in a child process"]
async fn production_service_child_run() {
    use galbridge::sync_service::SyncService;
    let path = std::env::var("GALBRIDGE_TEST_CONFIG").expect("started by the parent test");
    let config =
        galbridge::config::Config::load(std::path::Path::new(&path)).expect("valid configuration");
    let service = galbridge::engine::build_service(config)
        .await
        .expect("service builds");
    let report = service
        .run_link("a-to-n", galbridge::report::RunOptions::default())
        .await
        .expect("run starts");
    println!("{}", report.summary);
    assert_eq!(
        report.outcome,
        galbridge::report::RunOutcome::Succeeded,
        "{report:#?}"
    );
    assert!(
        report.requests.get("login").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.requests
    );
    assert!(
        report.requests.get("exchange").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.requests
    );
    let again = service
        .run_link("a-to-n", galbridge::report::RunOptions::default())
        .await
        .expect("run starts");
    assert_eq!(again.mode, galbridge::report::RunMode::Incremental);
}
