//! The demo's "GAL to phones" step: Acme's people pushed into the contacts of Northern's sales team (a
//! `personal_contacts` link with a folder, a category and photos), then one change fanned out as one write per
//! mailbox. Called by the demo (`demo/mod.rs`) after the GAL sync steps; it uses the same simulator and state folder.

use std::path::Path;

use super::DemoError;
use crate::config::Config;
use crate::report::{RunOptions, RunReport};

const LINK: &str = "acme-to-northern-phones";
const FOLDER: &str = "Acme Directory";

/// What the phones step did.
#[derive(Debug, Clone)]
pub struct PhonesDemo {
    pub first: RunReport,
    pub second: RunReport,
    /// Mailboxes that hold the folder after the first run.
    pub mailboxes: usize,
}

fn phones_config(sim: &m365_sim::SimHandle, state_dir: &Path) -> Result<Config, DemoError> {
    let mut toml = super::state_and_tenants_toml(sim, state_dir);
    toml.push_str(&format!(
        "# Acme's GAL on the phones of Northern's sales team, in their own folder, with photos.\n\
         [[links]]\nname = \"{LINK}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\nkind = \"personal_contacts\"\n\
         tenant = \"northern\"\nmailboxes = {{ filter = {{ attribute = \"department\", equals = \"Sales\" }} }}\n\
         folder = \"{FOLDER}\"\ncategories = [\"Acme\"]\nphotos = true\n\
         field_policy = {{ mobile_phone = \"fill_blank\" }}\n"
    ));
    Ok(Config::from_toml_str(&toml, Path::new("demo-phones.toml"))?)
}

/// Runs the phones step and prints its part of the story.
pub async fn phones_step(
    sim: &m365_sim::SimHandle,
    state_dir: &Path,
) -> Result<PhonesDemo, DemoError> {
    let config = phones_config(sim, state_dir)?;
    let service = super::step_engine(sim, state_dir, &config)?;
    let run = |label: &'static str| {
        let service = &service;
        async move {
            let report = super::run_to_success(service, LINK, RunOptions::default()).await?;
            let requests: u64 = report.requests.values().sum();
            println!(
                "   {label:<12} created {:>5}  updated {:>4}  unchanged {:>5}  ({:.1}s, {} source requests)",
                report.applied.creates,
                report.applied.updates,
                report.applied.unchanged,
                report.duration_ms as f64 / 1000.0,
                requests
            );
            Ok::<RunReport, DemoError>(report)
        }
    };

    println!(
        "\n4. GAL to phones: Acme's people into the contacts of Northern's sales team (folder {FOLDER:?}, category \"Acme\", photos):"
    );
    let first = run("first run").await?;
    let control = sim.control();
    let sales: Vec<serde_json::Value> = control
        .users("northern")?
        .into_iter()
        .filter(|u| u["department"] == "Sales")
        .collect();
    let mailboxes = sales
        .iter()
        .filter(|u| {
            u["id"].as_str().is_some_and(|id| {
                control
                    .contact_folders("northern", id)
                    .is_ok_and(|folders| folders.iter().any(|(_, name, _)| name == FOLDER))
            })
        })
        .count();
    let person = control.users("acme")?.into_iter().find(|u| {
        u["userType"] == "Member" && u["accountEnabled"] == true && u["mail"].is_string()
    });
    if let Some(person) = &person {
        control.update_user(
            "acme",
            person["id"].as_str().unwrap_or_default(),
            serde_json::json!({"jobTitle": "Head of Safety"}),
        )?;
        println!(
            "   ~ {} becomes Head of Safety at Acme",
            person["displayName"].as_str().unwrap_or("someone")
        );
    }
    let second = run("second run").await?;
    println!(
        "   {mailboxes} phones carry Acme's list; one change cost {} contact writes (one per mailbox), no mailbox re-read.",
        second.applied.updates
    );
    Ok(PhonesDemo {
        first,
        second,
        mailboxes,
    })
}
