//! The real `galbridge serve` process, spoken to exactly as the Azure Functions host does: readiness on `/`,
//! invocations POSTed to `/{FunctionName}` with the host's envelopes (microsoft-apis.md §7).
//!
//! These tests assert what holds whatever the sync engine does: the protocol, routing, envelope parsing, link
//! lookup, methods, query validation, status shape and shutdown. Run outcomes (200 with a report, 409, quarantine)
//! are covered with a fake service in `handler_router.rs`. SEAM for the lead: once the engine is wired into
//! `cli::build_service`, point the tenants' endpoints at an `m365-sim` instance here and add run assertions.
//! Tenant endpoints point at 127.0.0.1:9 (nothing listens) so that no run can ever reach the internet.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CONFIG: &str = r#"
[state]
kind = "file"
path = "state"

[tenants.acme]
tenant_id = "acme.onmicrosoft.com"
client_id = "11111111-1111-4111-8111-111111111111"
credential = { env = "ACME_TEST_SECRET" }
endpoints = { login = "http://127.0.0.1:9/", graph = "http://127.0.0.1:9/", exchange = "http://127.0.0.1:9/" }

[tenants.northern]
tenant_id = "northern.onmicrosoft.com"
client_id = "22222222-2222-4222-8222-222222222222"
credential = { env = "NORTHERN_TEST_SECRET" }
endpoints = { login = "http://127.0.0.1:9/", graph = "http://127.0.0.1:9/", exchange = "http://127.0.0.1:9/" }

[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
[links.target]
kind = "mail_contact"
tenant = "northern"
"#;

struct TestApp {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `galbridge serve --port 0` and waits for the port it prints.
fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("galbridge.toml");
    std::fs::write(&config, CONFIG).expect("the config is written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_galbridge"))
        .args([
            "--config",
            config.to_str().expect("a UTF-8 path"),
            "serve",
            "--port",
            "0",
            "--shutdown-grace",
            "5",
        ])
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env("GALBRIDGE_LOG", "off")
        .env("ACME_TEST_SECRET", "not-a-real-secret")
        .env("NORTHERN_TEST_SECRET", "not-a-real-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("galbridge starts");
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
    TestApp {
        child,
        port,
        _dir: dir,
    }
}

/// One HTTP/1.1 exchange; returns the status and the body.
fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).expect("the handler accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
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

/// POSTs an invocation; returns the host status and the envelope.
fn invoke(app: &TestApp, function: &str, payload: &str) -> (u16, Value) {
    let (status, body) = request(app.port, "POST", &format!("/{function}"), payload);
    let envelope =
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("not JSON ({error}): {body}"));
    (status, envelope)
}

fn http_payload(method: &str, url: &str, link: Option<&str>, query: Value) -> String {
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

fn res(envelope: &Value) -> (u64, Value) {
    let status = envelope["Outputs"]["res"]["statusCode"]
        .as_u64()
        .expect("an HTTP output");
    let body = serde_json::from_str(envelope["Outputs"]["res"]["body"].as_str().expect("a body"))
        .expect("JSON");
    (status, body)
}

#[test]
fn readiness_probe() {
    let app = spawn_app();

    let (status, body) = request(app.port, "GET", "/", "");

    assert_eq!((status, body.as_str()), (200, "ready"));
}

#[test]
fn timer_envelopes_in_every_shape_the_host_sends() {
    let app = spawn_app();
    let status_object = r#"{"Last":"2026-11-23T09:45:00+00:00","Next":"2026-11-23T10:00:00+00:00","LastUpdated":"2026-11-23T09:45:00+00:00"}"#;
    let timer_object = format!(
        r#"{{"Schedule":{{"AdjustForDST":true}},"ScheduleStatus":{status_object},"IsPastDue":false}}"#
    );
    let payloads = [
        r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{}}"#.to_owned(),
        r#"{"Data":{"timer":{"Schedule":{},"IsPastDue":true}},"Metadata":{"sys":{"MethodName":"SyncTimer"}}}"#.to_owned(),
        format!(r#"{{"Data":{{"timer":{timer_object}}},"Metadata":{{}}}}"#),
        json!({ "Data": { "timer": timer_object }, "Metadata": {} }).to_string(),
        json!({ "Data": { "timer": r#"{"Schedule":{},"ScheduleStatus":null,"IsPastDue":false}"# } }).to_string(),
    ];
    for payload in &payloads {
        let (status, envelope) = invoke(&app, "SyncTimer", payload);

        assert_eq!(status, 200, "{payload}");
        assert_eq!(envelope["Outputs"], json!({}), "{payload}");
        assert_eq!(envelope["ReturnValue"], Value::Null);
        let logs = envelope["Logs"].as_array().expect("Logs is an array");
        assert_eq!(
            logs.len(),
            1,
            "one line per due link (one link, never run): {envelope}"
        );
        assert!(logs[0].is_string());
        assert_eq!(
            envelope.as_object().map(|o| o.len()),
            Some(3),
            "exactly Outputs, Logs, ReturnValue"
        );
    }
}

#[test]
fn sync_of_an_unknown_link_is_404() {
    let app = spawn_app();

    let (status, envelope) = invoke(
        &app,
        "SyncHttp",
        &http_payload(
            "POST",
            "https://app.azurewebsites.net/api/sync/acme-to-northen",
            Some("acme-to-northen"),
            json!({}),
        ),
    );

    assert_eq!(status, 200);
    assert_eq!(
        res(&envelope),
        (
            404,
            json!({ "error": "no link named \"acme-to-northen\" (did you mean \"acme-to-northern\"?)" })
        )
    );
    assert_eq!(
        envelope["Outputs"]["res"]["headers"],
        json!({ "Content-Type": "application/json" })
    );
    assert_eq!(
        envelope["Logs"],
        json!(["no link named \"acme-to-northen\" (did you mean \"acme-to-northern\"?)"])
    );
}

#[test]
fn link_is_taken_from_the_url_when_params_are_missing_and_query_may_be_a_string() {
    let app = spawn_app();

    let (_, envelope) = invoke(
        &app,
        "SyncHttp",
        &http_payload(
            "POST",
            "https://app/api/sync/nope?dry_run=true",
            None,
            json!("{\"dry_run\":\"true\"}"),
        ),
    );

    assert_eq!(
        res(&envelope).0,
        404,
        "the link came from the URL: {envelope}"
    );
}

#[test]
fn wrong_methods_are_405() {
    let app = spawn_app();

    let (status, sync) = invoke(
        &app,
        "SyncHttp",
        &http_payload("GET", "https://app/api/sync", None, json!({})),
    );
    let (_, status_fn) = invoke(
        &app,
        "Status",
        &http_payload("POST", "https://app/api/status", None, json!({})),
    );

    assert_eq!(status, 200);
    assert_eq!(
        res(&sync),
        (
            405,
            json!({ "error": "method GET is not allowed here; use POST" })
        )
    );
    assert_eq!(sync["Outputs"]["res"]["headers"]["Allow"], "POST");
    assert_eq!(
        res(&status_fn),
        (
            405,
            json!({ "error": "method POST is not allowed here; use GET" })
        )
    );
}

#[test]
fn bad_query_value_is_400() {
    let app = spawn_app();

    let (_, envelope) = invoke(
        &app,
        "SyncHttp",
        &http_payload(
            "POST",
            "https://app/api/sync/acme-to-northern",
            Some("acme-to-northern"),
            json!({ "allow_deletes": "sure" }),
        ),
    );

    assert_eq!(
        res(&envelope),
        (
            400,
            json!({ "error": "query parameter allow_deletes must be true or false; got \"sure\"" })
        )
    );
}

#[test]
fn status_lists_every_configured_link() {
    let app = spawn_app();

    let (status, envelope) = invoke(
        &app,
        "Status",
        &http_payload("GET", "https://app/api/status", None, json!({})),
    );

    assert_eq!(status, 200);
    let (code, body) = res(&envelope);
    assert_eq!(code, 200);
    assert!(body["version"].is_string());
    let links = body["links"].as_array().expect("links");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["link"], "acme-to-northern");
    assert_eq!(links[0]["source_tenant"], "acme");
    assert_eq!(links[0]["target_tenant"], "northern");
    assert_eq!(links[0]["target_kind"], "mail_contact");
}

#[test]
fn malformed_envelopes_and_unknown_functions_fail_the_invocation() {
    let app = spawn_app();

    let (status, envelope) = invoke(&app, "SyncHttp", "[1, 2, 3]");
    assert_eq!(status, 400);
    assert_eq!(
        res(&envelope),
        (
            400,
            json!({ "error": "malformed invocation of SyncHttp: the invocation body is not a JSON object" })
        )
    );

    let (status, _) = request(app.port, "POST", "/SyncTimer", "{\"Data\":");
    assert_eq!(status, 400);

    let (status, envelope) = invoke(&app, "Cleanup", r#"{"Data":{},"Metadata":{}}"#);
    assert_eq!(status, 404);
    assert_eq!(
        res(&envelope),
        (
            404,
            json!({ "error": "no function named \"Cleanup\"; this handler serves SyncTimer, SyncHttp, Status" })
        )
    );
}

#[test]
fn sigterm_stops_the_process_cleanly() {
    let mut app = spawn_app();
    assert_eq!(request(app.port, "GET", "/", "").0, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = app.child.try_wait().expect("the child can be polled") {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "galbridge did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", app.port)).is_err(),
        "the port is closed"
    );
}
