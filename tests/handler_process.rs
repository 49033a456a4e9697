//! The real `galbridge serve` process, spoken to exactly as the Azure Functions host does: readiness on `/`,
//! invocations POSTed to `/{FunctionName}` with the host's envelopes (docs/microsoft-facts.md §7).
//!
//! These tests cover the protocol: readiness (which must contact nothing), routing, envelope parsing, link lookup,
//! methods, query validation, status shape and shutdown. The tenants point at an in-process m365-sim (see
//! `handler_support`); run outcomes through the same protocol (200 with a report, dry run, 409, timer, status after
//! runs) are in `handler_runs.rs`, the delete safety (quarantine, release) in `handler_quarantine.rs`.

mod handler_support;

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handler_support::{
    ONE_LINK, Sim, TestApp, assert_http_answer, http_payload, invoke, request, res, spawn_app,
    spawn_with_sim,
};
use serde_json::{Value, json};

fn spawn() -> (Sim, TestApp) {
    let sim = Sim::start(6, m365_sim::Knobs::default());
    let app = spawn_with_sim(&sim, ONE_LINK);
    (sim, app)
}

#[test]
fn readiness_probe() {
    let (_sim, app) = spawn();

    let (status, body) = request(app.port, "GET", "/", "");

    assert_eq!((status, body.as_str()), (200, "ready"));
    assert!(
        !app.state_dir().exists(),
        "readiness does not open the state store"
    );
}

/// Accepts and counts TCP connections: whatever would be contacted (Table Storage, Key Vault, login, Graph,
/// Exchange) is pointed here.
struct Tripwire {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Tripwire {
    fn start() -> Tripwire {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Tripwire { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

#[test]
fn readiness_contacts_nothing_and_the_first_invocation_builds_the_engine() {
    let wire = Tripwire::start();
    let base = format!("https://127.0.0.1:{}/", wire.port);
    let toml = format!(
        "[state]\nkind = \"table\"\ntable = \"galbridge\"\nauth = {{ connection_string_env = \"GALBRIDGE_TEST_TABLE\" }}\n\
         [key_vault]\nurl = \"{base}\"\n\
         [tenants.acme]\ntenant_id = \"acme.onmicrosoft.com\"\nclient_id = \"11111111-1111-4111-8111-111111111111\"\n\
         credential = {{ key_vault_secret = \"acme-secret\" }}\n\
         endpoints = {{ login = \"{base}\", graph = \"{base}\", exchange = \"{base}\" }}\n\
         [tenants.northern]\ntenant_id = \"northern.onmicrosoft.com\"\nclient_id = \"22222222-2222-4222-8222-222222222222\"\n\
         credential = {{ key_vault_secret = \"northern-secret\" }}\n\
         endpoints = {{ login = \"{base}\", graph = \"{base}\", exchange = \"{base}\" }}\n{ONE_LINK}"
    );
    // Plain http on loopback, so that a contact is a complete request, not only a failed TLS handshake.
    let table = format!(
        "DefaultEndpointsProtocol=http;AccountName=tripwire;AccountKey=dHJpcHdpcmU=;\
         TableEndpoint=http://127.0.0.1:{}/tripwire;",
        wire.port
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let app = spawn_app(dir, &toml, &[("GALBRIDGE_TEST_TABLE".to_owned(), table)]);

    assert_eq!(request(app.port, "GET", "/", "").0, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        wire.accepted(),
        0,
        "nothing is contacted before or soon after readiness"
    );

    // The first invocation that needs the engine builds it (and opens Table Storage): the tripwire sees it.
    let port = app.port;
    std::thread::spawn(move || invoke(port, "Status", &handler_support::status_payload()));
    let started = Instant::now();
    while wire.accepted() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the Status invocation never opened the state store"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn timer_envelopes_in_every_shape_the_host_sends() {
    // The link is disabled, so every tick parses, finds nothing due and says so (runs: handler_runs.rs).
    let sim = Sim::start(2, m365_sim::Knobs::default());
    let app = spawn_with_sim(
        &sim,
        &ONE_LINK.replace("[links.source]", "enabled = false\n[links.source]"),
    );
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
        let (status, envelope) = invoke(app.port, "SyncTimer", payload);

        assert_eq!(status, 200, "{payload}");
        assert_eq!(envelope["Outputs"], json!({}), "{payload}");
        assert_eq!(envelope["ReturnValue"], Value::Null);
        assert_eq!(envelope["Logs"], json!(["no link is due"]), "{payload}");
        assert_eq!(
            envelope.as_object().map(|o| o.len()),
            Some(3),
            "exactly Outputs, Logs, ReturnValue"
        );
    }
}

#[test]
fn sync_of_an_unknown_link_is_404() {
    let (_sim, app) = spawn();

    let answer = invoke(
        app.port,
        "SyncHttp",
        &http_payload(
            "POST",
            "https://app.azurewebsites.net/api/sync/acme-to-northen",
            Some("acme-to-northen"),
            json!({}),
        ),
    );

    let message = "no link named \"acme-to-northen\" (did you mean \"acme-to-northern\"?)";
    assert_http_answer(&answer, 404, &json!({ "error": message }), &[], &[message]);
}

#[test]
fn link_is_taken_from_the_url_when_params_are_missing_and_query_may_be_a_string() {
    let (_sim, app) = spawn();

    let answer = invoke(
        app.port,
        "SyncHttp",
        &http_payload(
            "POST",
            "https://app/api/sync/acme-to-northen?dry_run=true",
            None,
            json!("{\"dry_run\":\"true\"}"),
        ),
    );

    // The link came from the URL (Params is empty) and the string Query parsed (else: 400).
    let message = "no link named \"acme-to-northen\" (did you mean \"acme-to-northern\"?)";
    assert_http_answer(&answer, 404, &json!({ "error": message }), &[], &[message]);
}

#[test]
fn wrong_methods_are_405() {
    let (_sim, app) = spawn();

    let sync = invoke(
        app.port,
        "SyncHttp",
        &http_payload("GET", "https://app/api/sync", None, json!({})),
    );
    let status = invoke(
        app.port,
        "Status",
        &http_payload("POST", "https://app/api/status", None, json!({})),
    );

    let message = "method GET is not allowed here; use POST";
    assert_http_answer(
        &sync,
        405,
        &json!({ "error": message }),
        &[("Allow", "POST")],
        &[message],
    );
    let message = "method POST is not allowed here; use GET";
    assert_http_answer(
        &status,
        405,
        &json!({ "error": message }),
        &[("Allow", "GET")],
        &[message],
    );
}

#[test]
fn bad_query_value_is_400() {
    let (sim, app) = spawn();

    let answer = invoke(
        app.port,
        "SyncHttp",
        &http_payload(
            "POST",
            "https://app/api/sync/acme-to-northern",
            Some("acme-to-northern"),
            json!({ "allow_deletes": "sure" }),
        ),
    );

    let message = "query parameter allow_deletes must be true or false; got \"sure\"";
    assert_http_answer(&answer, 400, &json!({ "error": message }), &[], &[message]);
    assert_eq!(sim.contacts("northern").0.len(), 0, "nothing ran");
}

#[test]
fn status_lists_every_configured_link() {
    let (_sim, app) = spawn();
    let before = chrono::Utc::now();

    let (status, mut envelope) = invoke(
        app.port,
        "Status",
        &http_payload("GET", "https://app/api/status", None, json!({})),
    );

    let after = chrono::Utc::now();
    assert_eq!(status, 200);
    let (code, mut body) = res(&envelope);
    assert_eq!(code, 200);
    // A link that never ran is due now (the moment of the request).
    let next_due = body["links"][0]["next_due"].take();
    let next_due =
        chrono::DateTime::parse_from_rfc3339(next_due.as_str().expect("a time")).expect("RFC 3339");
    assert!(before <= next_due && next_due <= after, "{next_due}");
    assert_eq!(
        body,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "links": [{
                "link": "acme-to-northern", "source_tenant": "acme", "target_tenant": "northern",
                "target_kind": "mail_contact", "last_run": null, "next_due": null,
                "managed_objects": 0, "quarantine": null, "running": null, "mesh": null,
                "health": "never_run", "last_success": null, "recent_runs": [], "failing_objects": [],
                "failing_objects_total": 0
            }]
        })
    );
    envelope["Outputs"]["res"]["body"].take();
    assert_eq!(
        envelope,
        json!({
            "Outputs": { "res": {
                "statusCode": 200, "body": null, "headers": { "Content-Type": "application/json" }
            }},
            "Logs": ["status of 1 link"],
            "ReturnValue": null
        })
    );
}

#[test]
fn malformed_envelopes_and_unknown_functions_fail_the_invocation() {
    let (_sim, app) = spawn();

    let (status, envelope) = invoke(app.port, "SyncHttp", "[1, 2, 3]");
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

    let (status, envelope) = invoke(app.port, "Cleanup", r#"{"Data":{},"Metadata":{}}"#);
    assert_eq!(status, 404);
    assert_eq!(
        res(&envelope),
        (
            404,
            json!({ "error": "no function named \"Cleanup\"; this handler serves SyncTimer, SyncHttp, Status, Notify, PhonesShard" })
        )
    );
}

#[test]
fn sigterm_stops_the_process_cleanly() {
    let (_sim, mut app) = spawn();
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

#[test]
fn a_failed_engine_build_is_a_500_and_the_next_invocation_retries() {
    let sim = Sim::start(2, m365_sim::Knobs::default());
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The state folder cannot be created: a plain file stands where its parent should be.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "not a folder").expect("the blocker is written");
    let (toml, env) = sim.config(&blocker.join("state"), ONE_LINK);
    let app = spawn_app(dir, &toml, &env);
    assert_eq!(
        request(app.port, "GET", "/", "").0,
        200,
        "ready all the same"
    );

    let answer = invoke(app.port, "Status", &handler_support::status_payload());

    // The caller gets an opaque 500; the host's log gets the cause.
    let cause = format!(
        "internal error: state: state store I/O error: creating state directory {}: Not a directory (os error 20)",
        blocker.join("state").display()
    );
    assert_http_answer(
        &answer,
        500,
        &json!({ "error": "internal error; see the function app's logs" }),
        &[],
        &[&cause],
    );

    // Once the cause is gone, the next invocation builds the engine: no restart needed.
    std::fs::remove_file(&blocker).expect("the blocker is removed");
    let (status, envelope) = invoke(app.port, "Status", &handler_support::status_payload());
    assert_eq!((status, res(&envelope).0), (200, 200), "{envelope}");
    assert_eq!(res(&envelope).1["links"][0]["link"], "acme-to-northern");
}
