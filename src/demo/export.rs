//! The demo's "export mailbox" step (issue 15): Acme fills one plain mailbox, "Acme Staff Export", with its GAL (a
//! `personal_contacts` link aimed at that mailbox), and Northern reads that mailbox's "ACME GAL" folder
//! (`kind = "mailbox_folder"`) into the phones of its Operations team. Acme's app may read that one mailbox only
//! (RBAC for Applications, as the simulator models it). Then one change at Acme travels the chain: one delta request
//! reads it from the export folder, one write per phone lands it. The demo's last step (`demo/mod.rs`).

use std::path::Path;

use super::DemoError;
use crate::config::Config;
use crate::report::{RunOptions, RunReport};

const EXPORT_LINK: &str = "acme-export";
const PHONES_LINK: &str = "acme-export-to-northern-ops";
const FOLDER: &str = "ACME GAL";

/// What the export step did.
#[derive(Debug, Clone)]
pub struct ExportDemo {
    /// The second (incremental) run of the Northern link.
    pub second: RunReport,
    /// Contacts in the export folder after the first run.
    pub exported: usize,
    /// Northern phones holding the folder.
    pub phones: usize,
}

fn export_config(
    sim: &m365_sim::SimHandle,
    state_dir: &Path,
    export: &str,
) -> Result<Config, DemoError> {
    let mut toml = super::state_and_tenants_toml(sim, state_dir);
    toml.push_str(&format!(
        "# Acme's GAL into one export mailbox; Northern reads that mailbox's folder into its Operations phones.\n\
         [[links]]\nname = \"{EXPORT_LINK}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"acme\"\nmailboxes = {{ list = [\"{export}\"] }}\n\
         folder = \"{FOLDER}\"\ncategories = [\"Acme\"]\n\n\
         [[links]]\nname = \"{PHONES_LINK}\"\n[links.source]\nkind = \"mailbox_folder\"\ntenant = \"acme\"\n\
         mailbox = \"{export}\"\nfolder = \"{FOLDER}\"\n[links.target]\nkind = \"personal_contacts\"\n\
         tenant = \"northern\"\nmailboxes = {{ filter = {{ attribute = \"department\", equals = \"Operations\" }} }}\n\
         folder = \"{FOLDER}\"\ncategories = [\"Acme\"]\n"
    ));
    Ok(Config::from_toml_str(&toml, Path::new("demo-export.toml"))?)
}

/// Runs the export step and prints its part of the story.
pub async fn export_step(
    sim: &m365_sim::SimHandle,
    state_dir: &Path,
) -> Result<ExportDemo, DemoError> {
    let control = sim.control();
    let export_id = control.add_user(
        "acme",
        serde_json::json!({"displayName": "Acme Staff Export", "companyName": "Acme"}),
    )?;
    let export = control
        .users("acme")?
        .into_iter()
        .find(|u| u["id"] == export_id.as_str())
        .and_then(|u| u["userPrincipalName"].as_str().map(str::to_owned))
        .unwrap_or_default();
    // RBAC for Applications: Acme's app reaches the export mailbox and no other.
    control.set_app_mailbox_scope("acme", Some(&[export_id.as_str()]))?;
    let config = export_config(sim, state_dir, &export)?;
    let service = super::step_engine(sim, state_dir, &config)?;
    let run = |link: &'static str, label: &'static str| {
        let service = &service;
        async move {
            let report = super::run_to_success(service, link, RunOptions::default()).await?;
            println!(
                "   {label:<24} read {:>4}  created {:>5}  updated {:>4}  deleted {:>3}  ({:.1}s)",
                report.source_read,
                report.applied.creates,
                report.applied.updates,
                report.applied.deletes,
                report.duration_ms as f64 / 1000.0
            );
            Ok::<RunReport, DemoError>(report)
        }
    };

    println!(
        "\n6. An export mailbox: Acme fills {export} (folder {FOLDER:?}) with its GAL; Northern reads that one mailbox \
         into its Operations team's phones. Acme's app may read no other mailbox (RBAC for Applications)."
    );
    run(EXPORT_LINK, "Acme -> export mailbox").await?;
    run(PHONES_LINK, "export -> Northern phones").await?;
    let exported = control
        .mailbox_contacts("acme", &export_id)?
        .iter()
        .filter(|c| c.folder_name == FOLDER)
        .count();
    let phones = control
        .users("northern")?
        .iter()
        .filter(|u| u["department"] == "Operations")
        .filter_map(|u| u["id"].as_str())
        .filter(|id| {
            control
                .contact_folders("northern", id)
                .is_ok_and(|folders| folders.iter().any(|(_, name, _)| name == FOLDER))
        })
        .count();
    let person = control.users("acme")?.into_iter().find(|u| {
        u["userType"] == "Member"
            && u["accountEnabled"] == true
            && u["mail"].is_string()
            && u["id"] != export_id.as_str()
    });
    if let Some(person) = &person {
        control.update_user(
            "acme",
            person["id"].as_str().unwrap_or_default(),
            serde_json::json!({"jobTitle": "Chief Estimator"}),
        )?;
        println!(
            "   ~ {} becomes Chief Estimator at Acme",
            person["displayName"].as_str().unwrap_or("someone")
        );
    }
    run(EXPORT_LINK, "Acme -> export mailbox").await?;
    let second = run(PHONES_LINK, "export -> Northern phones").await?;
    println!(
        "   {exported} contacts in the export folder reach {phones} Northern phones; the change was read with one delta \
         request on the export folder and cost {} writes (one per phone).",
        second.applied.updates
    );
    Ok(ExportDemo {
        second,
        exported,
        phones,
    })
}
