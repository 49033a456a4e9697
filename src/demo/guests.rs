//! The demo's "guests instead of contacts" step: the mesh's Acme → Northern link switched to `kind = "guest_user"`
//! with `migrate_from_mail_contact`, run once in full: galbridge removes each of its own mail contacts of an Acme
//! person from Northern's GAL and invites that person as a B2B guest shown in the GAL instead. Called by the demo
//! (`demo/mod.rs`) after the other steps; it uses the same simulator and state folder.

use std::path::Path;

use super::DemoError;
use crate::config::{Config, mesh_link_name};
use crate::report::{RunOptions, RunReport};

/// Runs the guests step and prints its part of the story; returns the run's report.
pub async fn guests_step(
    sim: &m365_sim::SimHandle,
    state_dir: &Path,
) -> Result<RunReport, DemoError> {
    let link = mesh_link_name("demo", "acme", "northern");
    let mut toml = super::state_and_tenants_toml(sim, state_dir);
    toml.push_str(&format!(
        "# The same link, now as B2B guests; galbridge's own contacts make way for them.\n\
         [[links]]\nname = \"{link}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\nkind = \"guest_user\"\n\
         tenant = \"northern\"\nmigrate_from_mail_contact = true\n"
    ));
    let config = Config::from_toml_str(&toml, Path::new("demo-guests.toml"))?;
    let service = super::step_engine(sim, state_dir, &config)?;
    println!(
        "\n5. Guests instead of contacts: Northern switches {link} to kind = \"guest_user\" (migrate_from_mail_contact):"
    );
    let options = RunOptions {
        full: true,
        ..RunOptions::default()
    };
    let report = super::run_to_success(&service, &link, options).await?;
    let shown = sim
        .control()
        .users("northern")?
        .iter()
        .filter(|u| {
            u["onPremisesExtensionAttributes"]["extensionAttribute15"]
                .as_str()
                .is_some_and(|a| a.starts_with("galbridge:"))
                && u["hiddenFromAddressLists"] == false
        })
        .count();
    println!(
        "   {} contacts removed, {} guests invited (no invitation mail), {shown} of them shown in Northern's GAL ({:.1}s).",
        report.applied.deletes,
        report.applied.creates,
        report.duration_ms as f64 / 1000.0
    );
    Ok(report)
}
