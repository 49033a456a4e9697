//! `galbridge demo`: the self-contained tour (the README's first command). It starts m365-sim in-process with two
//! companies, Acme Construction (550 people) and Northern Construction (160), syncs them both ways as GAL mail
//! contacts, shows what landed, changes a few people (a new hire, a title change, a leaver) and syncs again to show
//! that the second run only touches what changed; then Acme's GAL onto Northern's phones (`phones.rs`), the Acme →
//! Northern link moved from contacts to B2B guests (`guests.rs`), and Acme's GAL onto Northern's phones through an
//! export mailbox (`export.rs`). Nothing leaves the machine; state goes to a temporary folder.
//!
//! `GALBRIDGE_DEMO_SMALL=1` shrinks the companies to 120 and 40 people (for tests of the binary).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

pub mod export;
pub mod guests;
pub mod phones;

use crate::config::Config;
use crate::engine::adapters::simulated::{SimConnectError, sim_connector};
use crate::engine::service::EngineService;
use crate::report::{RunOptions, RunOutcome, RunReport};
use crate::state::FileStore;
use crate::sync_service::SyncService;

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub acme_people: usize,
    pub northern_people: usize,
    /// No progress bars (tests, logs).
    pub quiet: bool,
}

/// Environment variable: `1` runs the demo with small companies ([`DemoOptions::SMALL`]).
pub const DEMO_SMALL_ENV: &str = "GALBRIDGE_DEMO_SMALL";

impl DemoOptions {
    /// The full tour: Acme Construction (550 people) and Northern Construction (160).
    pub const FULL: DemoOptions = DemoOptions {
        acme_people: 550,
        northern_people: 160,
        quiet: false,
    };
    /// The same tour with 120 and 40 people.
    pub const SMALL: DemoOptions = DemoOptions {
        acme_people: 120,
        northern_people: 40,
        quiet: false,
    };
}

impl Default for DemoOptions {
    /// [`DemoOptions::FULL`], or [`DemoOptions::SMALL`] when `GALBRIDGE_DEMO_SMALL=1`.
    fn default() -> Self {
        if std::env::var(DEMO_SMALL_ENV).is_ok_and(|v| v.trim() == "1") {
            Self::SMALL
        } else {
            Self::FULL
        }
    }
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the simulator did not start: {0}")]
    Simulator(#[from] m365_sim::SimError),
    #[error("cannot reach the simulator: {0}")]
    Connect(#[from] SimConnectError),
    #[error("the demo configuration is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("state folder {path}: {reason}")]
    State { path: String, reason: String },
    #[error("a run could not start: {0}")]
    Run(#[from] crate::sync_service::ServiceError),
    #[error("the run of {link} ended {outcome:?}: {summary}")]
    RunOutcome {
        link: String,
        outcome: RunOutcome,
        summary: String,
    },
}

/// The two runs of the demo.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub first: Vec<RunReport>,
    pub second: Vec<RunReport>,
    /// Mail contacts galbridge manages in each tenant after the second run.
    pub acme_contacts: usize,
    pub northern_contacts: usize,
    /// The last step's run: Acme's people as guests in Northern instead of contacts.
    pub guests: Option<RunReport>,
}

const MESH: &str = r#"
# Two companies of one group: everyone in each GAL sees everyone of the other.
[[meshes]]
name = "demo"
tenants = ["acme", "northern"]
[meshes.target]
kind = "mail_contact"
[meshes.mapping]
display_name = "{displayName} ({companyName})"
"#;

/// Runs the demo and prints its story on stdout.
pub async fn run(options: DemoOptions) -> Result<DemoSummary, DemoError> {
    println!(
        "galbridge demo: two Microsoft 365 tenants, simulated on this machine (nothing leaves it).\n"
    );
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![
            m365_sim::TenantSeed::new("acme", options.acme_people),
            m365_sim::TenantSeed::new("northern", options.northern_people),
        ],
        ..m365_sim::SimConfig::default()
    })
    .await?;
    println!(
        "  Acme Construction     {} people   (acme.onmicrosoft.com)",
        options.acme_people
    );
    println!(
        "  Northern Construction {} people   (northern.onmicrosoft.com)",
        options.northern_people
    );
    println!("  simulator at {}\n", sim.base_url());

    let state_dir = std::env::temp_dir().join(format!("galbridge-demo-{}", std::process::id()));
    let result = tour(&sim, &state_dir, &options).await;
    let _ = std::fs::remove_dir_all(&state_dir);
    sim.shutdown().await;
    result
}

fn config_for(sim: &m365_sim::SimHandle, state_dir: &Path) -> Result<Config, DemoError> {
    let mut toml = state_and_tenants_toml(sim, state_dir);
    toml.push_str(MESH);
    Ok(Config::from_toml_str(&toml, Path::new("demo.toml"))?)
}

/// The engine of one demo step: the file store in `state_dir` (shared by every step) and the production connector
/// pointed at the simulator.
fn step_engine(
    sim: &m365_sim::SimHandle,
    state_dir: &Path,
    config: &Config,
) -> Result<EngineService, DemoError> {
    let store = FileStore::open(state_dir).map_err(|e| DemoError::State {
        path: state_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let connector = Arc::new(sim_connector(sim, config)?);
    Ok(EngineService::new(config, Arc::new(store), connector))
}

/// Runs `link` once; a run that does not succeed stops the demo with its summary.
async fn run_to_success(
    service: &EngineService,
    link: &str,
    options: RunOptions,
) -> Result<RunReport, DemoError> {
    let report = service.run_link(link, options).await?;
    if !matches!(report.outcome, RunOutcome::Succeeded) {
        return Err(DemoError::RunOutcome {
            link: link.to_owned(),
            outcome: report.outcome,
            summary: report.summary,
        });
    }
    Ok(report)
}

/// The `[state]` (a file store in `state_dir`) and `[tenants.*]` tables of every demo step's configuration: both
/// companies, every endpoint at the simulator.
fn state_and_tenants_toml(sim: &m365_sim::SimHandle, state_dir: &Path) -> String {
    let mut toml = format!(
        "[state]\nkind = \"file\"\npath = {:?}\n\n",
        state_dir.display().to_string()
    );
    for name in ["acme", "northern"] {
        let Some(info) = sim.tenant(name) else {
            continue;
        };
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{}\"\ninitial_domain = \"{}\"\nclient_id = \"{}\"\n\
             credential = {{ env = \"GALBRIDGE_DEMO_UNUSED\" }}\n\
             [tenants.{name}.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nexchange = \"{base}\"\n\n",
            info.tenant_id,
            info.initial_domain,
            info.client_id,
            base = sim.base_url()
        ));
    }
    toml
}

async fn tour(
    sim: &m365_sim::SimHandle,
    state_dir: &Path,
    options: &DemoOptions,
) -> Result<DemoSummary, DemoError> {
    let config = config_for(sim, state_dir)?;
    let service = step_engine(sim, state_dir, &config)?;
    let links: Vec<String> = config
        .links()
        .iter()
        .map(|link| link.name.clone())
        .collect();

    println!("1. First sync, both ways (a full read of each directory):");
    let first = sync_all(&service, &links, options).await?;
    print_reports(&first);

    let control = sim.control();
    let acme_people = control.users("acme")?;
    let northern_people = control.users("northern")?;
    let visible = |user: &&Value| {
        user["userType"] == "Member"
            && user["accountEnabled"] == true
            && user["hiddenFromAddressLists"] != true
    };
    println!("\n2. Meanwhile, in the directories:");
    let hire = control.add_user(
        "acme",
        json!({"displayName": "Noor Haddad", "givenName": "Noor", "surname": "Haddad", "jobTitle": "Site Engineer",
               "department": "Engineering", "companyName": "Acme", "city": "Rotterdam"}),
    )?;
    println!("   + Acme hires Noor Haddad, Site Engineer ({hire})");
    if let Some(promoted) = northern_people.iter().find(visible) {
        let id = promoted["id"].as_str().unwrap_or_default();
        control.update_user("northern", id, json!({"jobTitle": "Head of Operations"}))?;
        println!(
            "   ~ Northern promotes {} to Head of Operations",
            promoted["displayName"].as_str().unwrap_or("someone")
        );
    }
    if let Some(leaver) = acme_people.iter().filter(visible).nth(3) {
        control.delete_user("acme", leaver["id"].as_str().unwrap_or_default(), true)?;
        println!(
            "   - {} leaves Acme",
            leaver["displayName"].as_str().unwrap_or("someone")
        );
    }

    println!("\n3. Second sync (incremental: only the changes are read and written):");
    let second = sync_all(&service, &links, options).await?;
    print_reports(&second);

    let anchored = |tenant: &str| -> Result<usize, DemoError> {
        Ok(control
            .mail_contacts(tenant)?
            .iter()
            .filter(|c| {
                c["CustomAttribute15"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("galbridge:"))
            })
            .count())
    };
    let summary = DemoSummary {
        acme_contacts: anchored("acme")?,
        northern_contacts: anchored("northern")?,
        first,
        second,
        guests: None,
    };
    println!(
        "\nAcme's GAL now lists {} Northern people, Northern's lists {} Acme people, each anchored in CustomAttribute15 \
         so galbridge never touches a contact it did not create.",
        summary.acme_contacts, summary.northern_contacts
    );
    phones::phones_step(sim, state_dir).await?;
    let summary = DemoSummary {
        guests: Some(guests::guests_step(sim, state_dir).await?),
        ..summary
    };
    // Last: the export mailbox it adds to Acme is a person of Acme's directory, whom the steps above would carry.
    export::export_step(sim, state_dir).await?;
    println!(
        "Next: `galbridge config schema`, the examples in examples/, and `galbridge plan` against your tenants."
    );
    Ok(summary)
}

async fn sync_all(
    service: &EngineService,
    links: &[String],
    options: &DemoOptions,
) -> Result<Vec<RunReport>, DemoError> {
    let bar = if options.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(links.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("   {spinner} [{bar:20}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut reports = Vec::new();
    for link in links {
        bar.set_message(link.clone());
        let report = run_to_success(service, link, RunOptions::default()).await;
        if report.is_err() {
            bar.finish_and_clear();
        }
        reports.push(report?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(reports)
}

fn print_reports(reports: &[RunReport]) {
    println!(
        "   {:<26} {:>11} {:>5} {:>7} {:>7} {:>7} {:>9} {:>8}",
        "link", "mode", "read", "created", "updated", "deleted", "requests", "time"
    );
    for report in reports {
        let requests: u64 = report.requests.values().sum();
        let mode = serde_json::to_value(report.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "   {:<26} {:>11} {:>5} {:>7} {:>7} {:>7} {:>9} {:>7.1}s",
            report.link,
            mode,
            report.source_read,
            report.applied.creates,
            report.applied.updates,
            report.applied.deletes,
            requests,
            report.duration_ms as f64 / 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_demo_syncs_both_ways_then_only_the_changes() {
        let summary = run(DemoOptions {
            acme_people: 40,
            northern_people: 15,
            quiet: true,
        })
        .await
        .unwrap();
        assert_eq!(summary.first.len(), 2);
        assert!(summary.first.iter().all(|r| r.applied.creates > 0));
        let second_writes: u64 = summary
            .second
            .iter()
            .map(|r| r.applied.creates + r.applied.updates + r.applied.deletes)
            .sum();
        assert_eq!(
            second_writes, 3,
            "a hire, a promotion, a leaver: {:#?}",
            summary.second
        );
        assert!(summary.acme_contacts > 0 && summary.northern_contacts > 0);
        let guests = summary.guests.expect("the guests step ran");
        assert_eq!(
            (guests.applied.creates, guests.applied.deletes),
            (
                summary.northern_contacts as u64,
                summary.northern_contacts as u64
            ),
            "each of Northern's Acme contacts replaced by a guest: {guests:#?}"
        );
    }
}
