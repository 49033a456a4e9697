//! `m365-sim --tenants acme:550,northern:160`: serves seeded tenants and prints where and how to reach them (base
//! URL, CA path, tenant and app ids; secrets are not printed) until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use m365_sim::{SimConfig, TenantSeed};

/// mimalloc instead of the C library's allocator: every request allocates and frees many small JSON values and
/// buffers, and glibc malloc was about half of the CPU of a simulator under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "m365-sim",
    about = "A local, faithful double of the Microsoft 365 endpoints galbridge uses."
)]
struct Args {
    /// Tenants to seed, `name:users` separated by commas.
    #[arg(long, default_value = "acme:550,northern:160")]
    tenants: String,
    /// Seed of the deterministic generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// HTTPS listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Directory for the CA PEM (default: a temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Personal contacts each mailbox owner made by hand.
    #[arg(long, default_value_t = 0)]
    user_contacts_per_mailbox: usize,
}

fn parse_tenants(spec: &str, per_mailbox: usize) -> Result<Vec<TenantSeed>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (name, users) = item
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("'{item}' is not name:users"))?;
            let users = users
                .parse::<usize>()
                .map_err(|_| format!("'{users}' is not a number of users"))?;
            Ok(TenantSeed {
                user_contacts_per_mailbox: per_mailbox,
                ..TenantSeed::new(name, users)
            })
        })
        .collect()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let tenants = match parse_tenants(&args.tenants, args.user_contacts_per_mailbox) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("m365-sim: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = SimConfig {
        tenants,
        seed: args.seed,
        bind: args.bind,
        state_dir: args.state_dir,
        ..SimConfig::default()
    };
    let sim = match m365_sim::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("m365-sim: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let identity = sim.identity();
    println!("base_url      {}", sim.base_url());
    println!("http_base_url {}", sim.http_base_url());
    println!("ca_pem        {}", sim.ca_pem_path().display());
    println!(
        "IDENTITY_ENDPOINT={} (IDENTITY_HEADER: GET {}_control/identity)",
        identity.endpoint,
        sim.base_url()
    );
    for t in sim.tenants() {
        println!(
            "tenant {} id={} domain={} mail_domain={} client_id={} vault_secret={} vault_cert={}",
            t.name,
            t.tenant_id,
            t.initial_domain,
            t.mail_domain,
            t.client_id,
            t.secret_name,
            t.certificate_secret_name
        );
    }
    // The (fake) client secrets stay off the console: tools read them from the simulated Key Vault or from
    // `GET /_control/tenants`, so terminal logs never hold anything that looks like a credential.
    println!(
        "client secrets: Key Vault secret <tenant>-client-secret, or GET {}_control/tenants",
        sim.base_url()
    );
    println!("serving; Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
