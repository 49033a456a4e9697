//! Logging setup: `tracing` with JSON lines under the Azure Functions host (when `FUNCTIONS_CUSTOMHANDLER_PORT` is
//! set, so Application Insights gets structured fields) and human-readable lines in a terminal. The filter comes
//! from `GALBRIDGE_LOG` (`tracing` env-filter syntax), default `info`. Logs go to stderr: stdout is for command
//! output. Never log a secret, token or `Authorization` header: secrets travel in [`Secret`], which prints
//! `[redacted]`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub use crate::config::Secret;

/// The environment variable holding the log filter.
pub const LOG_ENV: &str = "GALBRIDGE_LOG";
/// Set by the Functions host for custom handlers; its presence means "running under the host".
pub const HOST_PORT_ENV: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with span fields (invocation id, function).
    Json,
    /// For people at a terminal.
    Human,
}

impl LogFormat {
    /// JSON under the Functions host, human otherwise.
    pub fn detect() -> Self {
        if std::env::var_os(HOST_PORT_ENV).is_some() {
            Self::Json
        } else {
            Self::Human
        }
    }
}

/// Installs the global subscriber (once; later calls are ignored, which keeps tests simple), filtered by
/// `GALBRIDGE_LOG`, else `info`.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// As [`init`], with another filter when `GALBRIDGE_LOG` is unset (the demo tells its own story on stdout and only
/// wants warnings on stderr).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .try_init(),
    };
}
