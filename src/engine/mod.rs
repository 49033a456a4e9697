//! The sync engine: one run of a link, step by step (docs/architecture.md, "One sync run"). Every link runs the same
//! lifecycle ([`lifecycle`]: lease, counters, report, run record) around the same source stage ([`source_stage`]:
//! read, hidden, scope, map), then its target's own steps ([`targets`], one folder per target kind: plan, safety,
//! apply, checkpoint). Rooms:
//! - [`entry`]: the normalised person, anchors, content hashes, source attribute bags.
//! - [`mapping`]: templates from source attributes to entry fields.
//! - [`scope`]: which source objects flow to the target (loop prevention, hidden in Exchange).
//! - [`plan`]: the plan as data (JSON and a human table); [`diff`] computes it; [`names`] keeps target names unique.
//! - [`safety`]: the deletion threshold and quarantine.
//! - [`source_stage`]: the source side every link runs first, into a batch its target plans from.
//! - [`lifecycle`]: what every run shares; [`lease`]: keeping the link's lease while it runs.
//! - [`targets`]: `mail_contact` (Exchange mail contacts) and `personal_contacts` (GAL to phones): run, apply, purge.
//! - [`from_config`]: resolved configuration links to [`spec::LinkSpec`]; [`spec`]: a link as the engine runs it;
//!   [`ports`]: what the targets need from Graph, Exchange and counters.
//! - [`service`]: [`service::EngineService`], the engine behind the front doors' `SyncService`.
//! - [`build`]: the state store and the service from a loaded configuration.
//! - [`adapters`]: the ports over the real Graph and Exchange clients.
//! - [`records`]: managed objects in the state store.

pub mod adapters;
pub mod build;
pub mod diff;
pub mod entry;
pub mod from_config;
pub mod lease;
pub mod lifecycle;
pub mod mapping;
pub mod names;
pub mod plan;
pub mod ports;
pub mod records;
pub mod safety;
pub mod scope;
pub mod service;
pub mod source_stage;
pub mod spec;
pub mod targets;
#[cfg(test)]
pub mod testing;

pub use build::{build_service, build_serving_service};
