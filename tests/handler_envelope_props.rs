//! Whatever the host (or anyone on the port) sends, the envelope parser answers Ok or Err: it never panics; and the
//! whole handler (router, handlers, query and link parsing) answers every invocation with a well-formed envelope
//! `{Outputs, Logs, ReturnValue}` and a host status of 200 (handled), 400 (malformed) or 404 (unknown function).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Utc};
use galbridge::functions::envelope::Invocation;
use galbridge::functions::{InFlight, router};
use galbridge::report::{RunMode, RunOptions, RunOutcome, RunReport, StatusReport};
use galbridge::sync_service::{ServiceError, SyncService};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Arbitrary JSON, biased towards the keys and shapes the host uses (so nested parsing paths are exercised).
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Data".to_owned()),
        Just("timer".to_owned()),
        Just("req".to_owned()),
        Just("Method".to_owned()),
        Just("Query".to_owned()),
        Just("Headers".to_owned()),
        Just("Params".to_owned()),
        Just("Body".to_owned()),
        Just("ScheduleStatus".to_owned()),
        Just("IsPastDue".to_owned()),
        Just("Url".to_owned()),
        "[a-zA-Z]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String(
            "{\"Last\":null,\"Method\":\"POST\"}".to_owned()
        )),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner.clone(), 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            // Objects sent as JSON strings, as old hosts do.
            prop::collection::btree_map(key.clone(), inner, 0..4).prop_map(|map| Value::String(
                Value::Object(map.into_iter().collect()).to_string()
            )),
        ]
    })
}

fn exercise(body: &[u8]) {
    if let Ok(invocation) = Invocation::parse(body) {
        let _ = invocation.timer("timer");
        if let Ok(request) = invocation.http_request("req") {
            let _ = request.path();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        exercise(value.to_string().as_bytes());
        let wrapped = serde_json::json!({ "Data": { "timer": value.clone(), "req": value } });
        exercise(wrapped.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }
}

/// A service with one link, "a-to-b", whose runs succeed at once.
struct OneLink;

fn report(link: &str, options: &RunOptions) -> RunReport {
    RunReport {
        link: link.to_owned(),
        run_id: "run".to_owned(),
        mode: if options.dry_run {
            RunMode::DryRun
        } else {
            RunMode::Incremental
        },
        outcome: if options.dry_run {
            RunOutcome::Planned
        } else {
            RunOutcome::Succeeded
        },
        started_at: DateTime::<Utc>::UNIX_EPOCH,
        duration_ms: 0,
        source_read: 0,
        source_changes: 0,
        planned: Default::default(),
        applied: Default::default(),
        failures: vec![],
        throttled_retries: 0,
        requests: Default::default(),
        quarantine: None,
        plan: None,
        summary: format!("{link}: ok"),
    }
}

impl SyncService for OneLink {
    async fn run_link(&self, link: &str, options: RunOptions) -> Result<RunReport, ServiceError> {
        if link == "a-to-b" {
            Ok(report(link, &options))
        } else {
            Err(ServiceError::UnknownLink {
                name: link.to_owned(),
                suggestion: None,
            })
        }
    }
    async fn run_all(&self, options: RunOptions) -> Vec<Result<RunReport, ServiceError>> {
        vec![Ok(report("a-to-b", &options))]
    }
    async fn run_due(&self, _now: DateTime<Utc>) -> Vec<Result<RunReport, ServiceError>> {
        vec![]
    }
    async fn status(&self) -> Result<StatusReport, ServiceError> {
        Ok(StatusReport {
            version: "test".to_owned(),
            links: vec![],
        })
    }
}

/// HTTP requests shaped like the host's, with arbitrary methods, URLs (percent escapes included), link params and
/// query values, so that the method check, link lookup and query parsing are reached, not only the parser.
fn http_request() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just("POST".to_owned()),
        Just("GET".to_owned()),
        "[A-Za-z]{0,7}"
    ];
    let segment = prop_oneof![Just("a-to-b".to_owned()), "[a-z0-9%./-]{0,12}", ".{0,8}"];
    let url = (segment.clone(), ".{0,6}").prop_map(|(segment, tail)| {
        format!("https://app.azurewebsites.net/api/sync/{segment}?{tail}")
    });
    let query_value = prop_oneof![
        Just(json!("true")),
        Just(json!("false")),
        ".{0,5}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    let query_key = prop_oneof![
        Just("dry_run".to_owned()),
        Just("full".to_owned()),
        Just("allow_deletes".to_owned()),
        Just("code".to_owned()),
        "[a-z_]{0,8}"
    ];
    let query = prop::collection::btree_map(query_key, query_value, 0..4)
        .prop_map(|map| Value::Object(map.into_iter().collect()));
    let query = prop_oneof![
        query.clone(),
        query.prop_map(|query| Value::String(query.to_string()))
    ];
    let params = prop_oneof![
        Just(json!({})),
        segment.prop_map(|link| json!({ "link": link })),
        Just(json!(null)),
    ];
    (method, url, query, params).prop_map(|(method, url, query, params)| {
        json!({ "Url": url, "Method": method, "Query": query, "Params": params, "Headers": {}, "Body": "" })
    })
}

fn function_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("SyncTimer".to_owned()),
        Just("SyncHttp".to_owned()),
        Just("Status".to_owned()),
        Just("synchttp".to_owned()),
        "[A-Za-z]{1,10}"
    ]
}

/// Posts `body` to `/{function}` through the router; checks the answer is a well-formed envelope.
fn invoke_checked(runtime: &tokio::runtime::Runtime, function: &str, body: String) {
    let app = router(Arc::new(OneLink), Arc::new(InFlight::default()));
    let request = Request::post(format!("/{function}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let (status, bytes) = runtime.block_on(async {
        let response = app.oneshot(request).await.expect("the router answers");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        (status, bytes)
    });
    assert!(matches!(status, 200 | 400 | 404), "host status {status}");
    let envelope: Value = serde_json::from_slice(&bytes).expect("the answer is JSON");
    let object = envelope.as_object().expect("an envelope object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["Logs", "Outputs", "ReturnValue"], "{envelope}");
    assert!(
        object["Logs"]
            .as_array()
            .is_some_and(|logs| logs.iter().all(Value::is_string)),
        "{envelope}"
    );
    if let Some(res) = object["Outputs"].get("res") {
        let code = res["statusCode"].as_u64().expect("a status code");
        assert!((200..600).contains(&code), "{envelope}");
        let body: Value =
            serde_json::from_str(res["body"].as_str().expect("a string body")).expect("JSON");
        if code >= 400 {
            assert!(body["error"].is_string(), "errors carry a message: {body}");
        }
    } else {
        assert_eq!(
            (status, function.eq_ignore_ascii_case("SyncTimer")),
            (200, true),
            "only a handled timer answers without an HTTP output: {envelope}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_handler_answers_every_invocation_with_a_well_formed_envelope(
        function in function_name(),
        request in http_request(),
        other in json_value(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let shaped = json!({ "Data": { "req": request, "timer": other.clone() }, "Metadata": {} });
        invoke_checked(&runtime, &function, shaped.to_string());
        invoke_checked(&runtime, &function, other.to_string());
    }
}
