//! The operator's command line (clap): `serve`, `sync`, `plan`, `status`, `validate`, `config schema`, `purge`,
//! `demo`. Commands load the configuration, build the [`SyncService`] once, and print either a compact table or
//! (`--json`) the report types. Exit codes are part of the interface: see [`Exit`].

mod lazy;
mod login;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use crate::engine::build_service;
pub use lazy::LazyEngine;

use crate::config::{Config, json_schema};
use crate::functions::{ServeOptions, serve, shutdown_signal};
use crate::report::{RunOptions, RunOutcome, RunReport};
use crate::sync_service::{ServiceError, SyncService};
use crate::telemetry::{LogFormat, init_with_default};

const EXIT_CODES: &str = "\
Exit codes:
  0  every run succeeded (or the check passed)
  1  a run failed or partially failed, or could not start
  2  bad input: invalid configuration, unknown link, bad arguments
  3  a link is quarantined: deletes were held back (release with --allow-deletes)

Configuration: --config FILE, else $GALBRIDGE_CONFIG, else ./galbridge.toml.
Logs: $GALBRIDGE_LOG (e.g. \"debug\", \"galbridge=trace\"); JSON lines under the Functions host.";

/// Keeps Microsoft 365 address books in sync across tenants and onto phones.
#[derive(Debug, Parser)]
#[command(name = "galbridge", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The configuration file [default: $GALBRIDGE_CONFIG, else ./galbridge.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve as an Azure Functions custom handler (SyncTimer, SyncHttp, Status, Notify).
    ///
    /// Listens on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT and answers the host's readiness probe on `/` at once:
    /// nothing is contacted and no state is opened until the first invocation needs the engine. SIGTERM stops
    /// taking invocations and lets runs in flight checkpoint (see --shutdown-grace).
    Serve(ServeArgs),
    /// Sync links now: every link, or those named with --link.
    Sync(SyncArgs),
    /// Show what a sync would change, without writing anything (a dry run).
    Plan(PlanArgs),
    /// Each link's health, last run, next due time, counts, failing objects and quarantine.
    ///
    /// A table by default; --json prints the status report; --html FILE writes the status page (one
    /// self-contained HTML file with a chart of the recent runs, as `GET /api/status` serves it to a browser).
    Status(StatusArgs),
    /// Check the configuration file and list the links it defines.
    Validate,
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Remove the contacts galbridge created for a link and forget its state (a dry run without --yes).
    ///
    /// Without --yes, lists every contact that would go (name and anchor) and removes nothing. With --yes, deletes
    /// them from the target and forgets the link's state, so the next sync starts over. Only contacts carrying
    /// this link's anchor are touched; contacts galbridge did not create stay.
    Purge(PurgeArgs),
    /// Sign in once as a mailbox's user, for a mailbox folder read with sign_in = "delegated" (device code).
    ///
    /// Shows where to sign in and the code to enter; stores the refresh token in the state folder, where every run
    /// redeems it and stores the renewed one.
    Login(login::LoginArgs),
    /// Run the self-contained demo against the local Microsoft 365 simulator.
    ///
    /// Needs the `demo` cargo feature (on by default); the package deployed to Azure is built without it.
    #[cfg_attr(
        not(feature = "demo"),
        command(
            about = "Not in this build: the demo needs the `demo` cargo feature (run `cargo run --release -- demo` from a checkout)",
            long_about = None
        )
    )]
    Demo,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (0 = any free port, printed on stdout)
    #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT", default_value_t = 8080)]
    pub port: u16,
    /// After SIGTERM, seconds that in-flight runs get to finish and checkpoint
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub shutdown_grace: u64,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// A link to sync (repeatable); default: every link
    #[arg(long = "link", value_name = "NAME")]
    pub links: Vec<String>,
    /// Plan only: show the changes, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Re-read the whole source and repair drift, instead of reading changes only
    #[arg(long)]
    pub full: bool,
    /// Release a quarantine: apply the deletes that exceeded the safety threshold
    #[arg(long)]
    pub allow_deletes: bool,
    /// Print the run reports as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A link to plan (repeatable); default: every link
    #[arg(long = "link", value_name = "NAME")]
    pub links: Vec<String>,
    /// Plan a full reconcile
    #[arg(long)]
    pub full: bool,
    /// Print the run reports (with the plan) as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Write the status page (self-contained HTML) to FILE ("-" for stdout)
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of the configuration file.
    Schema,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The link to purge
    #[arg(long, value_name = "NAME")]
    pub link: String,
    /// Confirm: really delete (without it, only list what would be removed)
    #[arg(long)]
    pub yes: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Process exit codes (documented in `--help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    Quarantined = 3,
    RunFailed = 1,
    BadInput = 2,
}

impl Exit {
    /// The more serious of two (bad input > run failed > quarantined > ok).
    fn worst(self, other: Self) -> Self {
        let rank = |exit: Self| match exit {
            Self::Ok => 0,
            Self::Quarantined => 1,
            Self::RunFailed => 2,
            Self::BadInput => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The binary's entry point: parse, set up logging, run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log_filter = match cli.command {
        Command::Demo => "warn",
        _ => "info",
    };
    init_with_default(LogFormat::detect(), default_log_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("galbridge: cannot start the async runtime: {error}");
            return Exit::RunFailed.into();
        }
    };
    runtime.block_on(run(cli)).into()
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Config(ConfigCommand::Schema) => {
            print!("{}", json_schema());
            Exit::Ok
        }
        Command::Demo => demo().await,
        command => {
            let path = Config::locate(cli.config.as_deref());
            let config = match Config::load(&path) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("{error}");
                    return Exit::BadInput;
                }
            };
            with_config(command, config).await
        }
    }
}

/// `demo`: the self-contained tour on the in-process simulator.
#[cfg(feature = "demo")]
async fn demo() -> Exit {
    match crate::demo::run(crate::demo::DemoOptions::default()).await {
        Ok(_) => Exit::Ok,
        Err(error) => {
            eprintln!("galbridge demo: {error}");
            Exit::RunFailed
        }
    }
}

/// `demo` in a build without the simulator (the package deployed to Azure): say how to get it.
#[cfg(not(feature = "demo"))]
async fn demo() -> Exit {
    eprintln!("{DEMO_NOT_BUILT}");
    Exit::BadInput
}

/// What `galbridge demo` answers (exit code 2) when the binary was built without the `demo` cargo feature.
pub const DEMO_NOT_BUILT: &str = "galbridge demo: not in this build. The demo and its Microsoft 365 simulator come \
     with the `demo` cargo feature, on by default and left out of the package deployed to Azure \
     (`cargo xtask package`). From a checkout of the repository: `cargo run --release -- demo`.";

async fn with_config(command: Command, config: Config) -> Exit {
    if let Command::Validate = command {
        return validate(&config);
    }
    if let Command::Purge(args) = &command
        && let Some(exit) = refuse_purge(&config, args)
    {
        return exit;
    }
    if let Command::Login(args) = &command {
        return login::login(&config, args).await;
    }
    if let Command::Serve(args) = command {
        return serve_command(config, &args).await;
    }
    // `status` also peeks the poison queue of a configured shard queue (what `serve` sends shards to); the CLI's
    // own runs keep running a phones run's shards in this process.
    let built = if matches!(command, Command::Status(_)) {
        crate::engine::build_serving_service(config.clone()).await
    } else {
        build_service(config.clone()).await
    };
    let service = match built {
        Ok(service) => service,
        Err(error) => {
            eprintln!("galbridge: {error}");
            return Exit::RunFailed;
        }
    };
    match command {
        Command::Sync(args) => {
            let options = RunOptions {
                dry_run: args.dry_run,
                full: args.full,
                allow_deletes: args.allow_deletes,
            };
            sync(&service, &config, &args.links, options, args.json).await
        }
        Command::Plan(args) => {
            let options = RunOptions {
                dry_run: true,
                full: args.full,
                allow_deletes: false,
            };
            sync(&service, &config, &args.links, options, args.json).await
        }
        Command::Status(args) => match service.status().await {
            Ok(status) => {
                if let Some(path) = &args.html {
                    let page = crate::status_page::render(&status, chrono::Utc::now());
                    if path.as_os_str() == "-" {
                        print!("{page}");
                    } else if let Err(error) = std::fs::write(path, page) {
                        eprintln!("galbridge status: cannot write {}: {error}", path.display());
                        return Exit::RunFailed;
                    }
                }
                if args.json {
                    print_json(&status);
                } else if args.html.is_none() {
                    print!("{}", output::status_table(&status));
                }
                Exit::Ok
            }
            Err(error) => {
                eprintln!("galbridge status: {error}");
                Exit::RunFailed
            }
        },
        Command::Purge(args) => purge(&service, &config, &args, args.json).await,
        Command::Serve(_)
        | Command::Validate
        | Command::Config(_)
        | Command::Demo
        | Command::Login(_) => Exit::Ok,
    }
}

/// `serve`: readiness first, engine later. The engine is built by the first invocation that needs it (see
/// [`LazyEngine`]), so answering the host's readiness probe contacts nothing and touches no state.
async fn serve_command(config: Config, args: &ServeArgs) -> Exit {
    let options = ServeOptions {
        port: args.port,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    let shutdown = shutdown_signal(); // installs the SIGTERM handler before the port opens
    match serve(LazyEngine::new(config), options, shutdown).await {
        Ok(()) => Exit::Ok,
        Err(error) => {
            eprintln!("galbridge serve: {error}");
            Exit::RunFailed
        }
    }
}

fn validate(config: &Config) -> Exit {
    let links = config.links();
    let from_meshes = links.iter().filter(|link| link.mesh.is_some()).count();
    println!(
        "{}: ok: {} tenants, {} links ({from_meshes} from meshes)",
        config.origin().display(),
        config.file().tenants.len(),
        links.len()
    );
    for link in links {
        println!(
            "  {}: {} -> {} ({}){}",
            link.name,
            link.source_tenant.name,
            link.target_tenant.name,
            link.target.kind_name(),
            if link.enabled { "" } else { ", disabled" }
        );
    }
    Exit::Ok
}

/// Refuses an unknown link before anything is built; `None` when the purge may go ahead.
fn refuse_purge(config: &Config, args: &PurgeArgs) -> Option<Exit> {
    if config.link(&args.link).is_some() {
        return None;
    }
    let suggestion = config
        .suggest_link(&args.link)
        .map(|name| format!(" (did you mean {name:?}?)"));
    eprintln!(
        "galbridge purge: no link named {:?}{}",
        args.link,
        suggestion.unwrap_or_default()
    );
    Some(Exit::BadInput)
}

/// Without `--yes`, lists what would be removed (a dry run); with it, removes every object the link manages.
async fn purge(
    service: &crate::engine::service::EngineService,
    config: &Config,
    args: &PurgeArgs,
    json: bool,
) -> Exit {
    match service.purge(&args.link, args.yes).await {
        Ok(report) => {
            if args.yes && report.outcome == crate::report::RunOutcome::Succeeded {
                remove_subscriptions(service, config, &args.link).await;
            }
            if json {
                print_json(&report);
            } else {
                print!("{}", output::purge_listing(&report));
                if !args.yes {
                    eprintln!(
                        "galbridge purge: dry run: nothing was removed; run again with --yes to delete every \
                         object galbridge created for link {:?} and forget its state",
                        args.link
                    );
                }
            }
            exit_for_outcome(&report)
        }
        Err(error) => {
            eprintln!("galbridge purge: {error}");
            exit_for_error(&error)
        }
    }
}

/// After a purge: the Graph subscriptions of the link's source tenant go too, unless another link still reads from
/// it (change notifications, docs/operations.md). A failure is reported, not fatal: unrenewed, they expire.
async fn remove_subscriptions(
    service: &crate::engine::service::EngineService,
    config: &Config,
    link: &str,
) {
    let Some(source) = config.link(link).map(|link| link.source_tenant.clone()) else {
        return;
    };
    let Some(notifier) = crate::notify::Notifier::from_config(config, service.store().clone())
    else {
        return;
    };
    if notifier.tenant_still_read(&source.name, link) {
        return;
    }
    match notifier.remove_for_tenant(service, &source).await {
        Ok(0) => {}
        Ok(count) => eprintln!(
            "galbridge purge: deleted {count} change-notification subscription{} of tenant {:?}",
            if count == 1 { "" } else { "s" },
            source.name
        ),
        Err(error) => eprintln!(
            "galbridge purge: the subscriptions of tenant {:?} could not be deleted ({error}); they expire by \
             themselves",
            source.name
        ),
    }
}

async fn sync<S: SyncService>(
    service: &S,
    config: &Config,
    links: &[String],
    options: RunOptions,
    json: bool,
) -> Exit {
    // Refuse unknown names before running anything: half a run then an error helps nobody.
    for name in links {
        if config.link(name).is_none() {
            let suggestion = config
                .suggest_link(name)
                .map(|name| format!(" (did you mean {name:?}?)"));
            eprintln!(
                "galbridge: no link named {name:?}{}",
                suggestion.unwrap_or_default()
            );
            return Exit::BadInput;
        }
    }
    let results = if links.is_empty() {
        service.run_all(options).await
    } else {
        futures::future::join_all(
            links
                .iter()
                .map(|name| service.run_link(name, options.clone())),
        )
        .await
    };
    let mut exit = Exit::Ok;
    let mut reports = Vec::new();
    for result in results {
        match result {
            Ok(report) => {
                exit = exit.worst(exit_for_outcome(&report));
                reports.push(report);
            }
            Err(error) => {
                eprintln!("galbridge: {error}");
                exit = exit.worst(exit_for_error(&error));
            }
        }
    }
    if json {
        print_json(&reports);
    } else if !reports.is_empty() {
        print!("{}", output::run_table(&reports));
    }
    exit
}

fn exit_for_outcome(report: &RunReport) -> Exit {
    match report.outcome {
        RunOutcome::Succeeded | RunOutcome::Planned => Exit::Ok,
        RunOutcome::Quarantined => Exit::Quarantined,
        RunOutcome::PartiallyFailed | RunOutcome::Failed => Exit::RunFailed,
    }
}

fn exit_for_error(error: &ServiceError) -> Exit {
    match error {
        ServiceError::UnknownLink { .. } | ServiceError::BadRequest(_) => Exit::BadInput,
        ServiceError::LeaseHeld { .. } | ServiceError::Internal(_) => Exit::RunFailed,
    }
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("galbridge: cannot print JSON: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn demo_is_a_command_in_every_build_and_says_how_to_get_it_when_left_out() {
        let cli = Cli::try_parse_from(["galbridge", "demo"]).expect("demo parses");
        assert!(matches!(cli.command, Command::Demo));
        assert!(
            DEMO_NOT_BUILT.contains("`demo` cargo feature"),
            "{DEMO_NOT_BUILT}"
        );
        assert!(
            DEMO_NOT_BUILT.contains("cargo run --release -- demo"),
            "{DEMO_NOT_BUILT}"
        );
    }

    #[cfg(not(feature = "demo"))]
    #[tokio::test]
    async fn without_the_demo_feature_demo_is_bad_input_not_a_run() {
        let cli = Cli::try_parse_from(["galbridge", "demo"]).expect("demo parses");
        assert_eq!(run(cli).await, Exit::BadInput);
    }

    #[test]
    fn worst_exit_wins() {
        assert_eq!(Exit::Ok.worst(Exit::Quarantined), Exit::Quarantined);
        assert_eq!(Exit::Quarantined.worst(Exit::RunFailed), Exit::RunFailed);
        assert_eq!(Exit::BadInput.worst(Exit::RunFailed), Exit::BadInput);
    }
}
