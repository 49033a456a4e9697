//! `galbridge login --tenant NAME --mailbox UPN`: the one-time delegated sign-in of a mailbox read as a source with
//! `sign_in = "delegated"` (docs/app-registrations.md, "The tenant owns a mailbox read as a source"). Runs the device
//! code flow against the tenant's login endpoint (docs/microsoft-facts.md §12), shows the person signing in where to
//! go and which code to enter, and stores the refresh token where every run will find and rotate it. Never prints a
//! token.

use clap::Args;

use super::Exit;
use crate::config::Config;
use crate::engine::adapters::m365::M365Connector;
use crate::m365::delegated::{DelegatedLogin, contacts_read_scope};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The tenant (its name in [tenants]) that owns the mailbox
    #[arg(long, value_name = "NAME")]
    pub tenant: String,
    /// The mailbox to sign in as (UPN), as a link's [links.source] mailbox names it
    #[arg(long, value_name = "UPN")]
    pub mailbox: String,
}

pub async fn login(config: &Config, args: &LoginArgs) -> Exit {
    let Some(tenant) = config.tenant(&args.tenant) else {
        let hint = crate::config::did_you_mean(
            &args.tenant,
            config.file().tenants.keys().map(String::as_str),
        )
        .map(|name| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default();
        eprintln!(
            "galbridge login: no tenant {:?} in the configuration{hint}",
            args.tenant
        );
        return Exit::BadInput;
    };
    // The connector the runs use: the same HTTP client settings and the same refresh-token store (a file in the
    // state folder, or a Key Vault secret with table state).
    let connector = match M365Connector::new(config) {
        Ok(connector) => connector,
        Err(error) => {
            eprintln!("galbridge login: {error}");
            return Exit::RunFailed;
        }
    };
    let store = match connector.refresh_token_store(&args.tenant, &args.mailbox) {
        Ok(store) => store,
        Err(message) => {
            eprintln!("galbridge login: {message}");
            return Exit::BadInput;
        }
    };
    let (http, counters) = connector.http_client();
    let endpoints = tenant.endpoints();
    let login = DelegatedLogin {
        http,
        counters,
        login_base: endpoints.login.clone(),
        tenant_id: tenant.tenant_id.as_str().to_owned(),
        tenant_name: args.tenant.clone(),
        client_id: tenant.client_id.as_str().to_owned(),
        mailbox: args.mailbox.clone(),
        scope: contacts_read_scope(endpoints.graph_audience),
    };
    let result = async {
        let code = login.start_device_code().await?;
        eprintln!("{}", code.message);
        eprintln!(
            "Sign in as {} (the mailbox galbridge will read).",
            args.mailbox
        );
        let refresh = login.finish_device_code(&code).await?;
        store.save(&refresh).await
    }
    .await;
    match result {
        Ok(()) => {
            eprintln!(
                "Signed in. The refresh token is kept in {}; each run renews it.",
                store.describe()
            );
            Exit::Ok
        }
        Err(error) => {
            eprintln!("galbridge login: {error}");
            Exit::RunFailed
        }
    }
}
