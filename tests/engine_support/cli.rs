//! Test bed for the real `galbridge` binary: m365-sim in the test process (TLS; its CA is trusted through
//! `service.extra_ca_file`), Table Storage state on Azurite (one fresh table per bed), client secrets handed to the
//! child process in environment variables, and helpers to run commands and read what the target tenant holds.
//!
//! Include from a test file that also includes Azurite:
//! `#[path = "support/azurite.rs"] mod azurite;` and `#[path = "engine_support/cli.rs"] mod cli;`.
#![allow(dead_code)]

#[path = "../support/exchange_errors.rs"]
mod exchange_errors;

use std::path::PathBuf;
use std::process::Stdio;

use m365_sim::{SimConfig, SimHandle, TenantSeed};
use serde_json::Value;

/// The environment variable the bed's configuration names for the Table Storage connection string.
const CONNECTION_STRING_ENV: &str = "GALBRIDGE_TEST_TABLE_CONNECTION";

/// Variables of the developer's shell that would change what the child does.
const SCRUBBED_ENV: &[&str] = &[
    "GALBRIDGE_CONFIG",
    "GALBRIDGE_EXTRA_CA_FILE",
    "GALBRIDGE_STATE_TABLE_ENDPOINT",
    "GALBRIDGE_STATE_TABLE_NAME",
    "GALBRIDGE_KEY_VAULT_URL",
    "FUNCTIONS_CUSTOMHANDLER_PORT",
];

/// One simulator, one Azurite table, one configuration file: what an operator's machine would have.
pub struct Bed {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    tenants: Vec<String>,
    table: String,
    env: Vec<(String, String)>,
    /// Keep state in a local folder (the file store) instead of the bed's Azurite table.
    file_state: bool,
    links_toml: String,
}

/// What one command did.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The JSON the command printed on stdout.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// `sync --json` / `plan --json` print an array of run reports: the only one.
    pub fn report(&self) -> Value {
        let reports = self.json();
        let reports = reports.as_array().expect("an array of run reports");
        assert_eq!(reports.len(), 1, "one report: {reports:#?}");
        reports[0].clone()
    }
}

impl Bed {
    /// Starts the simulator with `seeds` and writes a configuration with `links_toml`. `None` when Azurite-backed
    /// tests are skipped (`GALBRIDGE_SKIP_AZURITE=1`).
    pub async fn start(seeds: &[(&str, usize)], links_toml: &str) -> Option<Bed> {
        let azurite = crate::azurite::shared()?;
        let sim = m365_sim::start(SimConfig {
            tenants: seeds
                .iter()
                .map(|(name, users)| TenantSeed::new(name, *users))
                .collect(),
            knobs: exchange_errors::knobs(),
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = vec![
            (
                CONNECTION_STRING_ENV.to_owned(),
                azurite.connection_string(),
            ),
            // A killed run's lease blocks its link until it expires: keep that short.
            ("GALBRIDGE_LEASE_TTL_SECS".to_owned(), "2".to_owned()),
            ("GALBRIDGE_LOG".to_owned(), "warn".to_owned()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        for (name, _) in seeds {
            let info = sim.tenant(name).expect("seeded tenant");
            env.push((secret_variable(name), info.client_secret.clone()));
        }
        let mut bed = Bed {
            config: dir.path().join("galbridge.toml"),
            sim,
            dir,
            tenants: seeds.iter().map(|(name, _)| (*name).to_owned()).collect(),
            table: format!("gb{}", uuid::Uuid::new_v4().simple())[..24].to_owned(),
            env,
            file_state: false,
            links_toml: String::new(),
        };
        bed.set_links(links_toml);
        Some(bed)
    }

    /// Keeps the state in the file store (a folder of the bed) from now on, with the default lease lifetime (the
    /// file store takes over a dead local process's lease at once, so no short lifetime is needed).
    pub fn use_file_state(&mut self) {
        self.file_state = true;
        self.env
            .retain(|(name, _)| name != "GALBRIDGE_LEASE_TTL_SECS");
        let links = self.links_toml.clone();
        self.set_links(&links);
    }

    /// Sets an environment variable of every command from now on.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Rewrites the configuration with other links (same tenants, same state).
    pub fn set_links(&mut self, links_toml: &str) {
        self.links_toml = links_toml.to_owned();
        let state = if self.file_state {
            format!(
                "[state]\nkind = \"file\"\npath = {:?}\n\n",
                self.dir.path().join("state").display().to_string()
            )
        } else {
            format!(
                "[state]\nkind = \"table\"\ntable = \"{}\"\n\
                 auth = {{ connection_string_env = \"{CONNECTION_STRING_ENV}\" }}\n\n",
                self.table
            )
        };
        let mut toml = format!(
            "[service]\nmax_concurrency = 4\nextra_ca_file = {:?}\n\n{state}",
            self.sim.ca_pem_path().display().to_string(),
        );
        for name in &self.tenants {
            let info = self.sim.tenant(name).expect("seeded tenant");
            toml.push_str(&format!(
                "[tenants.{name}]\ntenant_id = \"{}\"\ninitial_domain = \"{}\"\nclient_id = \"{}\"\n\
                 credential = {{ env = \"{}\" }}\n[tenants.{name}.endpoints]\nlogin = \"{b}\"\ngraph = \"{b}\"\n\
                 exchange = \"{b}\"\n\n",
                info.tenant_id,
                info.initial_domain,
                info.client_id,
                secret_variable(name),
                b = self.sim.base_url()
            ));
        }
        toml.push_str(links_toml);
        std::fs::write(&self.config, toml).expect("configuration written");
    }

    /// The binary with `args`, the configuration and the bed's environment (not started).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_galbridge"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for variable in SCRUBBED_ENV {
            command.env_remove(variable);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Runs a command to its end. Fails the test if a client secret shows up in its output.
    pub async fn run(&self, args: &[&str]) -> Finished {
        let output = self
            .command(args)
            .output()
            .await
            .expect("the galbridge binary runs");
        let finished = Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        for name in &self.tenants {
            let secret = self.sim.tenant(name).expect("seeded").client_secret;
            assert!(
                !finished.stdout.contains(&secret) && !finished.stderr.contains(&secret),
                "the client secret of {name} leaked into the output of {args:?}"
            );
        }
        finished
    }

    /// `sync --json` plus `extra`, expecting exit code `code`; the one run report.
    pub async fn sync_expecting(&self, code: i32, extra: &[&str]) -> Value {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let finished = self.run(&args).await;
        assert_eq!(
            finished.code, code,
            "exit code of {args:?}:\n{}\n{}",
            finished.stdout, finished.stderr
        );
        finished.report()
    }

    /// Mail contacts of a tenant carrying a galbridge anchor in CustomAttribute15.
    pub fn anchored(&self, tenant: &str) -> Vec<Value> {
        self.sim
            .control()
            .mail_contacts(tenant)
            .expect("tenant")
            .into_iter()
            .filter(is_anchored)
            .collect()
    }

    /// Users of a tenant that galbridge should show elsewhere by default (an independent reading of the scope).
    pub fn in_scope(&self, tenant: &str) -> Vec<Value> {
        self.sim
            .control()
            .users(tenant)
            .expect("tenant")
            .into_iter()
            .filter(in_default_scope)
            .collect()
    }
}

fn secret_variable(tenant: &str) -> String {
    format!("GALBRIDGE_TEST_{}_SECRET", tenant.to_uppercase())
}

/// Whether a mail contact carries a galbridge anchor (CustomAttribute15, the default).
pub fn is_anchored(contact: &Value) -> bool {
    contact["CustomAttribute15"]
        .as_str()
        .is_some_and(|a| a.starts_with("galbridge:"))
}

/// An enabled member with an address, shown in the address lists.
pub fn in_default_scope(user: &Value) -> bool {
    user["userType"] == "Member"
        && user["accountEnabled"] == true
        && user["mail"].as_str().is_some_and(|m| m.contains('@'))
        && user["hiddenFromAddressLists"] != true
}

/// The contact whose external address is `address` (Exchange prefixes `SMTP:`).
pub fn by_address<'a>(contacts: &'a [Value], address: &str) -> Option<&'a Value> {
    contacts.iter().find(|c| {
        c["ExternalEmailAddress"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(&format!("SMTP:{address}")))
    })
}

/// Every contact of `contacts` matches the user it was made from, field by field.
pub fn assert_every_field(contacts: &[Value], users: &[Value]) {
    for user in users {
        let mail = user["mail"].as_str().expect("in scope: has mail");
        let contact = by_address(contacts, mail).unwrap_or_else(|| panic!("no contact for {mail}"));
        assert_eq!(contact["DisplayName"], user["displayName"], "{mail}");
        for (graph, exchange) in [
            ("givenName", "FirstName"),
            ("surname", "LastName"),
            ("jobTitle", "Title"),
            ("department", "Department"),
            ("companyName", "Company"),
            ("officeLocation", "Office"),
            ("mobilePhone", "MobilePhone"),
            ("streetAddress", "StreetAddress"),
            ("city", "City"),
            ("state", "StateOrProvince"),
            ("postalCode", "PostalCode"),
            ("country", "CountryOrRegion"),
        ] {
            let want = user[graph].as_str().unwrap_or("");
            let got = contact[exchange].as_str().unwrap_or("");
            assert_eq!(got, want, "{mail}: {exchange} from {graph}");
        }
        assert_eq!(
            contact["Phone"].as_str().unwrap_or(""),
            user["businessPhones"][0].as_str().unwrap_or(""),
            "{mail}: Phone"
        );
    }
}
