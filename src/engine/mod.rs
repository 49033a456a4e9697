//! The sync engine: one run of a link, step by step (design.md, "One sync run of a link"): read the source,
//! filter the scope, map to entries, diff into a [`plan::Plan`], apply the safety threshold, apply the plan to the
//! target, checkpoint. Rooms:
//! - [`entry`]: the normalised person, anchors, content hashes, source attribute bags.
//! - [`mapping`]: templates from source attributes to entry fields.
//! - [`scope`]: which source objects flow to the target (and loop prevention).
//! - [`plan`]: the plan as data (JSON and a human table); [`diff`] computes it; [`names`] keeps target names unique.
//! - [`safety`]: the deletion threshold and quarantine.
//! - [`from_config`]: resolved configuration links to [`spec::LinkSpec`].
//! - [`spec`]: a link as the engine runs it; [`ports`]: what the runner needs from Graph, Exchange and counters.
//! - [`runner`]: one run of a link; [`lease`]: keeping the link's lease while it runs.
//! - [`service`]: [`service::EngineService`], the engine behind the front doors' `SyncService`.
//! - [`build`]: the state store and the service from a loaded configuration.
//! - [`adapters`]: the ports over the real Graph and Exchange clients.
//! - [`purge`]: removing everything a link manages (uninstall).
//! - [`records`]: managed objects in the state store; [`targets`]: appliers of plans per target kind
//!   (`targets::personal_contacts` has its own runner for GAL to phones).
//! - [`phones_demo`]: the demo's GAL-to-phones step.

pub mod adapters;
pub mod build;
pub mod diff;
pub mod entry;
pub mod from_config;
pub mod lease;
pub mod mapping;
pub mod names;
#[cfg(feature = "demo")]
pub mod phones_demo;
pub mod plan;
pub mod ports;
pub mod purge;
pub mod records;
pub mod runner;
pub mod safety;
pub mod scope;
pub mod service;
pub mod spec;
pub mod targets;
#[cfg(test)]
pub mod testing;

pub use build::build_service;
