//! Test support for the `galbridge serve` process tests: m365-sim in its own runtime, a configuration pointing the
//! tenants at it the production way (the simulator's CA trusted through `service.extra_ca_file`, https endpoints,
//! client secrets in environment variables of the child), the child process, and the host's protocol spoken over
//! raw HTTP/1.1 exactly as the Functions host does (docs/microsoft-facts.md §7); `host` stands in for the host's HTTP front,
//! `queue_host` for its queue trigger.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use m365_sim::{Knobs, SimConfig, SimHandle, TenantSeed};
use serde_json::{Value, json};

pub mod host;
pub mod queue_host;

/// What the child's `HOSTNAME` is set to, so a lease holder (`{HOSTNAME}:{pid}:{run_id}`) can be predicted.
pub const HOST_NAME: &str = "galbridge-test-host";

/// One link from acme to northern, mail contacts.
pub const ONE_LINK: &str = "[[links]]\nname = \"acme-to-northern\"\n[links.source]\ntenant = \"acme\"\n\
                            [links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n";

/// Variables of the developer's shell that would change what the child does (the tests set what they need).
const SCRUBBED_ENV: &[&str] = &[
    "GALBRIDGE_CONFIG",
    "GALBRIDGE_EXTRA_CA_FILE",
    "GALBRIDGE_KEY_VAULT_URL",
    "GALBRIDGE_LEASE_TTL_SECS",
    "GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID",
    "GALBRIDGE_STATE_TABLE_ENDPOINT",
    "GALBRIDGE_STATE_TABLE_NAME",
    "GALBRIDGE_QUEUE",
    "GALBRIDGE_QUEUE__queueServiceUri",
    "GALBRIDGE_QUEUE__credential",
    "GALBRIDGE_QUEUE__clientId",
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
];

/// The binary under test: Cargo's, unless `GALBRIDGE_TEST_BIN` names another (a target directory shared by several
/// checkouts may have `target/debug/galbridge` replaced by another checkout's build while the tests run).
pub fn galbridge_binary() -> PathBuf {
    std::env::var_os("GALBRIDGE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_galbridge")))
}

/// A `galbridge` command with the developer's overriding variables removed and logs off (callers may set both).
pub fn galbridge_command() -> Command {
    let mut command = Command::new(galbridge_binary());
    for variable in SCRUBBED_ENV {
        command.env_remove(variable);
    }
    command.env("GALBRIDGE_LOG", "off");
    command
}

/// A simulator with its own runtime (the tests themselves are synchronous and block on sockets).
pub struct Sim {
    pub handle: SimHandle,
    /// Kept alive: the simulator serves on it.
    _runtime: tokio::runtime::Runtime,
}

impl Sim {
    /// acme with `acme_users` users, northern with 4, and the given knobs.
    pub fn start(acme_users: usize, knobs: Knobs) -> Sim {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the simulator");
        let handle = runtime
            .block_on(m365_sim::start(SimConfig {
                tenants: vec![
                    TenantSeed::new("acme", acme_users),
                    TenantSeed::new("northern", 4),
                ],
                knobs,
                ..SimConfig::default()
            }))
            .expect("the simulator starts");
        Sim {
            handle,
            _runtime: runtime,
        }
    }

    /// acme and northern with `acme_users` and `northern_users` users (phones tests want many mailboxes).
    pub fn start_sized(acme_users: usize, northern_users: usize, knobs: Knobs) -> Sim {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the simulator");
        let handle = runtime
            .block_on(m365_sim::start(SimConfig {
                tenants: vec![
                    TenantSeed::new("acme", acme_users),
                    TenantSeed::new("northern", northern_users),
                ],
                knobs,
                ..SimConfig::default()
            }))
            .expect("the simulator starts");
        Sim {
            handle,
            _runtime: runtime,
        }
    }

    /// Users of `tenant` that belong in other tenants' address books by default, from the simulator's own data
    /// (enabled members with an address, not hidden from the address lists), independently of the engine.
    pub fn users_in_scope(&self, tenant: &str) -> Vec<Value> {
        self.users(tenant)
            .into_iter()
            .filter(|user| {
                user["userType"] == "Member"
                    && user["accountEnabled"] == true
                    && user["mail"].as_str().is_some_and(|mail| mail.contains('@'))
                    && user["hiddenFromAddressLists"] != true
            })
            .collect()
    }

    pub fn users(&self, tenant: &str) -> Vec<Value> {
        self.handle
            .control()
            .users(tenant)
            .expect("the tenant is seeded")
    }

    /// Disables a user of `tenant` (it leaves the default scope); returns the user.
    pub fn disable_one_user(&self, tenant: &str) -> Value {
        let user = self.users(tenant).into_iter().next().expect("a user");
        let id = user["id"].as_str().expect("an id");
        self.handle
            .control()
            .update_user(tenant, id, json!({ "accountEnabled": false }))
            .expect("the user is updated");
        user
    }

    /// The anchor galbridge gives a source user: `galbridge:{sourceTenantId}:{objectId}`.
    pub fn anchor_of(&self, tenant: &str, user: &Value) -> String {
        let tenant_id = self.handle.tenant(tenant).expect("seeded").tenant_id;
        format!(
            "galbridge:{tenant_id}:{}",
            user["id"].as_str().expect("an id")
        )
    }

    /// Mail contacts in `tenant` carrying a galbridge anchor (CustomAttribute15), and those without one.
    pub fn contacts(&self, tenant: &str) -> (Vec<Value>, Vec<Value>) {
        self.handle
            .control()
            .mail_contacts(tenant)
            .expect("the tenant is seeded")
            .into_iter()
            .partition(|contact| {
                contact["CustomAttribute15"]
                    .as_str()
                    .is_some_and(|anchor| anchor.starts_with("galbridge:"))
            })
    }

    /// The configuration (tenants at the simulator, file state in `state`, then `links`) and the child's
    /// environment (the client secrets).
    pub fn config(&self, state: &Path, links: &str) -> (String, Vec<(String, String)>) {
        let mut toml = format!(
            "[service]\nextra_ca_file = {:?}\n[state]\nkind = \"file\"\npath = {:?}\n",
            self.handle.ca_pem_path().display().to_string(),
            state.display().to_string()
        );
        let mut env = Vec::new();
        for name in ["acme", "northern"] {
            let info = self.handle.tenant(name).expect("seeded");
            let variable = format!("GALBRIDGE_TEST_{}_SECRET", name.to_uppercase());
            toml.push_str(&format!(
                "[tenants.{name}]\ntenant_id = \"{}\"\ninitial_domain = \"{}\"\nclient_id = \"{}\"\n\
                 credential = {{ env = \"{variable}\" }}\n\
                 [tenants.{name}.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nexchange = \"{base}\"\n",
                info.tenant_id,
                info.initial_domain,
                info.client_id,
                base = self.handle.base_url()
            ));
            env.push((variable, info.client_secret));
        }
        toml.push_str(links);
        (toml, env)
    }
}

/// A running `galbridge serve`.
pub struct TestApp {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `galbridge serve --port 0` with the simulator's configuration for `links`.
pub fn spawn_with_sim(sim: &Sim, links: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (toml, env) = sim.config(&dir.path().join("state"), links);
    spawn_app(dir, &toml, &env)
}

/// Starts `galbridge serve --port 0` on `toml` (written into `dir`) and waits for the port it prints.
pub fn spawn_app(dir: tempfile::TempDir, toml: &str, env: &[(String, String)]) -> TestApp {
    spawn_app_logging_to(dir, toml, env, Stdio::inherit())
}

/// As [`spawn_app`], with the process's log (stderr) sent to `stderr`; `env` is applied last, so it may override
/// `GALBRIDGE_LOG` or set `FUNCTIONS_CUSTOMHANDLER_PORT` (JSON logs, as under the host).
pub fn spawn_app_logging_to(
    dir: tempfile::TempDir,
    toml: &str,
    env: &[(String, String)],
    stderr: Stdio,
) -> TestApp {
    let config = dir.path().join("galbridge.toml");
    std::fs::write(&config, toml).expect("the config is written");
    let mut command = galbridge_command();
    command
        .args([
            "--config",
            config.to_str().expect("a UTF-8 path"),
            "serve",
            "--port",
            "0",
            "--shutdown-grace",
            "5",
        ])
        .env("HOSTNAME", HOST_NAME)
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("galbridge starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("galbridge prints its address");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    TestApp { child, port, dir }
}

/// One HTTP/1.1 exchange; returns the status and the body.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).expect("the handler accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         X-Azure-Functions-InvocationId: 5d1c7a8e-test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("the request is sent");
    stream.write_all(body.as_bytes()).expect("the body is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// POSTs an invocation to `/{function}`; returns the host status and the envelope.
pub fn invoke(port: u16, function: &str, payload: &str) -> (u16, Value) {
    let (status, body) = request(port, "POST", &format!("/{function}"), payload);
    let envelope =
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("not JSON ({error}): {body}"));
    (status, envelope)
}

/// The `req` binding of an HTTP-triggered invocation, as the host sends it.
pub fn http_payload(method: &str, url: &str, link: Option<&str>, query: Value) -> String {
    json!({
        "Data": { "req": {
            "Url": url, "Method": method, "Query": query,
            "Headers": { "Content-Type": ["application/json"], "x-functions-key": ["k"] },
            "Params": link.map_or_else(|| json!({}), |link| json!({ "link": link })),
            "Body": "", "Identities": []
        }},
        "Metadata": { "sys": { "MethodName": "SyncHttp", "UtcNow": "2026-11-23T10:00:00Z" } }
    })
    .to_string()
}

/// `POST /api/sync/{link}` with `query`, as `SyncHttp` receives it.
pub fn sync_payload(link: &str, query: Value) -> String {
    http_payload(
        "POST",
        &format!("https://app.azurewebsites.net/api/sync/{link}"),
        Some(link),
        query,
    )
}

/// `GET /api/status`, as `Status` receives it.
pub fn status_payload() -> String {
    http_payload(
        "GET",
        "https://app.azurewebsites.net/api/status",
        None,
        json!({}),
    )
}

/// A timer invocation without schedule status (the host's first tick).
pub const TIMER_PAYLOAD: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{}}"#;

/// The HTTP output of an envelope: its status code and its JSON body.
pub fn res(envelope: &Value) -> (u64, Value) {
    let status = envelope["Outputs"]["res"]["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("an HTTP output: {envelope}"));
    let body = serde_json::from_str(envelope["Outputs"]["res"]["body"].as_str().expect("a body"))
        .expect("JSON");
    (status, body)
}

/// Asserts a whole handled HTTP answer: host status 200, exactly `{Outputs: {res}, Logs, ReturnValue: null}`, the
/// `res` output with `code`, the JSON `body` and JSON content type plus `headers`, and the `Logs` lines.
pub fn assert_http_answer(
    (host_status, envelope): &(u16, Value),
    code: u16,
    body: &Value,
    headers: &[(&str, &str)],
    logs: &[&str],
) {
    assert_eq!(*host_status, 200, "a handled outcome is 200 to the host");
    assert_eq!(res(envelope), (u64::from(code), body.clone()), "{envelope}");
    let mut expected_headers = json!({ "Content-Type": "application/json" });
    for (name, value) in headers {
        expected_headers[*name] = json!(value);
    }
    let mut rest = envelope.clone();
    rest["Outputs"]["res"]["body"].take();
    assert_eq!(
        rest,
        json!({
            "Outputs": { "res": { "statusCode": code, "body": null, "headers": expected_headers } },
            "Logs": logs,
            "ReturnValue": null
        })
    );
}
