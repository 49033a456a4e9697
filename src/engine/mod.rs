//! The sync engine: one run of a link, step by step (design.md, "One sync run of a link"): read the source,
//! filter the scope, map to entries, diff into a [`plan::Plan`], apply the safety threshold, apply the plan to the
//! target, checkpoint. Rooms:
//! - [`entry`]: the normalised person, anchors, content hashes, source attribute bags.
//! - [`mapping`]: templates from source attributes to entry fields.
//! - [`scope`]: which source objects flow to the target (and loop prevention).
//! - [`plan`]: the plan as data (JSON and a human table); [`diff`] computes it; [`names`] keeps target names unique.
//! - [`safety`]: the deletion threshold and quarantine.
//! - [`spec`]: a link as the engine runs it; [`ports`]: what the runner needs from Graph, Exchange and counters.
//! - [`runner`]: one run of a link.
//! - [`records`]: managed objects in the state store; [`targets`]: appliers of plans per target kind.

pub mod diff;
pub mod entry;
pub mod mapping;
pub mod names;
pub mod plan;
pub mod ports;
pub mod records;
pub mod runner;
pub mod safety;
pub mod scope;
pub mod spec;
pub mod targets;
#[cfg(test)]
pub mod testing;
