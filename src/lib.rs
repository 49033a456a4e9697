//! galbridge: keeps Microsoft 365 address books in sync across tenants and onto phones.
//!
//! The rooms of the crate:
//! - [`cli`]: the operator's command line (`sync`, `plan`, `status`, `validate`, `serve`, `demo`, `purge`).
//! - [`config`]: the TOML configuration, its validation and its JSON Schema.
//! - [`functions`]: the Azure Functions custom-handler protocol (`serve`).
//! - [`sync_service`]: the boundary between the front doors (CLI, Functions) and the sync engine.
//! - [`report`]: run reports and status, the JSON every front door prints.
//! - [`engine`]: one sync run of a link: read, scope, map, diff, plan, apply, checkpoint.
//! - [`m365`]: thin clients for Graph, Exchange `InvokeCommand`, Key Vault, and token acquisition.
//! - [`state`]: checkpoints, leases and run records (Azure Table Storage or a local file store).
//! - [`status_page`]: the self-contained HTML status page (`GET /api/status` for browsers, `status --html`).
//! - [`telemetry`]: tracing setup and the secret type that never prints.
//! - [`demo`]: the self-contained demo against the local Microsoft 365 simulator (the `demo` cargo feature, on by
//!   default and left out of the package shipped to Azure).

pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod engine;
pub mod functions;
pub mod m365;
pub mod notify;
pub mod queue;
pub mod report;
pub mod state;
pub mod status_page;
pub mod sync_service;
pub mod telemetry;
