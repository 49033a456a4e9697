//! Repository tasks for galbridge, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! The one task that matters is building the Azure Functions package (a zip) that the Flex Consumption
//! host runs as a custom handler (docs/microsoft-facts.md §7): `host.json`, the static
//! `x86_64-unknown-linux-musl` executable with its run bit, one folder per function with its
//! `function.json`, and the operator's `galbridge.toml`.
//!
//! Rooms:
//! - [`layout`]: what a valid `host.json` and `function.json` are, and galbridge's own function contract.
//! - [`elf`]: checks that the executable is a static x86-64 Linux binary.
//! - [`contents`]: the package's cargo features (no `demo`) and the check that the executable has no simulator,
//!   RSA key or certificate generation in it.
//! - [`archive`]: writes the zip from a repository checkout and a built binary.
//! - [`inspect`]: reads a zip back and checks everything the host needs (used after writing, and by
//!   `cargo xtask check-package`).
//! - [`build`]: runs the musl release build and finds the executable it produced.

pub mod archive;
pub mod build;
pub mod contents;
pub mod elf;
pub mod inspect;
pub mod layout;

/// Name of the executable inside the package; `host.json` must point at it.
pub const EXECUTABLE_NAME: &str = "galbridge";
/// Name of the operator's configuration inside the package (the default of `GALBRIDGE_CONFIG`).
pub const CONFIG_NAME: &str = "galbridge.toml";
/// The target the package's executable is built for.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
