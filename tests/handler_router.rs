//! The custom handler's router with a fake `SyncService`: every run outcome the engine can give, as the Functions
//! host would see it (HTTP status to the host, `Outputs.res`, `Logs`, `ReturnValue`).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use galbridge::functions::{InFlight, router};
use galbridge::report::{
    LinkStatus, PlanCounts, QuarantineInfo, RunMode, RunOptions, RunOutcome, RunReport,
    StatusReport,
};
use galbridge::sync_service::{ServiceError, SyncService};
use serde_json::{Value, json};
use tower::ServiceExt;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .expect("valid time")
}

fn report(link: &str, outcome: RunOutcome) -> RunReport {
    RunReport {
        link: link.to_owned(),
        run_id: "run-1".to_owned(),
        mode: RunMode::Incremental,
        outcome,
        started_at: at(),
        duration_ms: 1200,
        source_read: 3,
        source_changes: 3,
        planned: PlanCounts {
            creates: 2,
            updates: 1,
            ..PlanCounts::default()
        },
        applied: PlanCounts {
            creates: 2,
            updates: 1,
            ..PlanCounts::default()
        },
        failures: vec![],
        throttled_retries: 0,
        requests: Default::default(),
        quarantine: (outcome == RunOutcome::Quarantined).then(|| QuarantineInfo {
            since: at(),
            held_deletes: 60,
            threshold: "50 deletes".to_owned(),
            release_hint: "POST /api/sync/a-to-b?allow_deletes=true".to_owned(),
            held: Vec::new(),
        }),
        plan: None,
        summary: format!("{link}: {outcome:?}"),
    }
}

/// A scripted service: links "a-to-b" (succeeds), "busy" (lease held), "quarantined", "broken" (fails),
/// "crash" (internal error); records the options it was called with.
#[derive(Default)]
struct FakeService {
    calls: Mutex<Vec<(String, RunOptions)>>,
}

impl SyncService for FakeService {
    async fn run_link(&self, link: &str, options: RunOptions) -> Result<RunReport, ServiceError> {
        self.calls
            .lock()
            .expect("the calls lock is never poisoned")
            .push((link.to_owned(), options));
        match link {
            "a-to-b" => Ok(report(link, RunOutcome::Succeeded)),
            "quarantined" => Ok(report(link, RunOutcome::Quarantined)),
            "broken" => Ok(report(link, RunOutcome::Failed)),
            "busy" => Err(ServiceError::LeaseHeld {
                link: link.to_owned(),
                holder: "host-7:invocation-42".to_owned(),
                until: at(),
            }),
            "crash" => Err(ServiceError::Internal(
                "state store said: secret-ish detail".to_owned(),
            )),
            other => Err(ServiceError::UnknownLink {
                name: other.to_owned(),
                suggestion: Some("a-to-b".to_owned()),
            }),
        }
    }

    async fn run_all(&self, options: RunOptions) -> Vec<Result<RunReport, ServiceError>> {
        self.calls
            .lock()
            .expect("the calls lock is never poisoned")
            .push(("*".to_owned(), options));
        vec![
            Ok(report("a-to-b", RunOutcome::Succeeded)),
            Ok(report("quarantined", RunOutcome::Quarantined)),
        ]
    }

    async fn run_due(&self, _now: DateTime<Utc>) -> Vec<Result<RunReport, ServiceError>> {
        vec![Ok(report("a-to-b", RunOutcome::Succeeded))]
    }

    async fn status(&self) -> Result<StatusReport, ServiceError> {
        Ok(StatusReport {
            version: "test".to_owned(),
            links: vec![LinkStatus {
                link: "a-to-b".to_owned(),
                source_tenant: "a".to_owned(),
                target_tenant: "b".to_owned(),
                target_kind: "mail_contact".to_owned(),
                last_run: None,
                next_due: Some(at()),
                managed_objects: 12,
                quarantine: None,
                running: None,
                ..LinkStatus::default()
            }],
        })
    }
}

struct Answer {
    host_status: StatusCode,
    envelope: Value,
}

impl Answer {
    fn res_status(&self) -> u64 {
        self.envelope["Outputs"]["res"]["statusCode"]
            .as_u64()
            .expect("an HTTP output")
    }
    fn res_body(&self) -> Value {
        serde_json::from_str(
            self.envelope["Outputs"]["res"]["body"]
                .as_str()
                .expect("a string body"),
        )
        .expect("the body is JSON")
    }
}

async fn invoke(service: Arc<FakeService>, function: &str, payload: Value) -> Answer {
    let request = Request::post(format!("/{function}"))
        .header("X-Azure-Functions-InvocationId", "0f3e2c1a-invocation")
        .header("content-type", "application/json")
        .body(Body::from(payload.to_string()))
        .expect("a valid request");
    let response = router(service, Arc::new(InFlight::default()))
        .oneshot(request)
        .await
        .expect("the router never fails");
    let host_status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body is readable");
    Answer {
        host_status,
        envelope: serde_json::from_slice(&bytes).expect("the envelope is JSON"),
    }
}

fn http(method: &str, url: &str, link: Option<&str>, query: Value) -> Value {
    let params = match link {
        Some(link) => json!({ "link": link }),
        None => json!({}),
    };
    json!({
        "Data": { "req": {
            "Url": url, "Method": method, "Query": query,
            "Headers": { "Content-Type": ["application/json"] },
            "Params": params, "Body": "", "Identities": []
        }},
        "Metadata": { "sys": { "MethodName": "SyncHttp" } }
    })
}

#[tokio::test]
async fn sync_of_one_link_answers_200_with_the_report() {
    let service = Arc::new(FakeService::default());

    let answer = invoke(
        service,
        "SyncHttp",
        http(
            "POST",
            "https://app/api/sync/a-to-b",
            Some("a-to-b"),
            json!({}),
        ),
    )
    .await;

    assert_eq!(answer.host_status, StatusCode::OK);
    assert_eq!(answer.res_status(), 200);
    assert_eq!(
        answer.res_body(),
        serde_json::to_value(report("a-to-b", RunOutcome::Succeeded)).unwrap()
    );
    assert_eq!(
        answer.envelope["Outputs"]["res"]["headers"],
        json!({ "Content-Type": "application/json" })
    );
    assert_eq!(answer.envelope["Logs"], json!(["a-to-b: Succeeded"]));
    assert_eq!(answer.envelope["ReturnValue"], Value::Null);
}

#[tokio::test]
async fn query_sent_as_a_json_string_sets_the_run_options() {
    let service = Arc::new(FakeService::default());
    let query = json!("{\"dry_run\":\"true\",\"full\":\"true\",\"code\":\"function-key\"}");

    let answer = invoke(
        Arc::clone(&service),
        "SyncHttp",
        http("POST", "https://app/api/sync/a-to-b", None, query),
    )
    .await;

    assert_eq!(answer.res_status(), 200);
    let calls = service.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [(
            "a-to-b".to_owned(),
            RunOptions {
                dry_run: true,
                full: true,
                allow_deletes: false
            }
        )]
    );
    assert!(
        !answer.envelope.to_string().contains("function-key"),
        "the function key is never echoed"
    );
}

#[tokio::test]
async fn a_run_in_progress_is_409_naming_the_holder() {
    let answer = invoke(
        Arc::default(),
        "SyncHttp",
        http("POST", "https://app/api/sync/busy", Some("busy"), json!({})),
    )
    .await;

    assert_eq!(answer.host_status, StatusCode::OK);
    assert_eq!(answer.res_status(), 409);
    assert_eq!(
        answer.res_body(),
        json!({
            "error": "link \"busy\" is already running (lease held by host-7:invocation-42 until 2026-11-23 10:00:00 UTC)",
            "holder": "host-7:invocation-42",
            "until": "2026-11-23T10:00:00+00:00"
        })
    );
}

#[tokio::test]
async fn unknown_link_is_404_with_a_suggestion() {
    let answer = invoke(
        Arc::default(),
        "SyncHttp",
        http(
            "POST",
            "https://app/api/sync/a-to-c",
            Some("a-to-c"),
            json!({}),
        ),
    )
    .await;

    assert_eq!(answer.res_status(), 404);
    assert_eq!(
        answer.res_body(),
        json!({ "error": "no link named \"a-to-c\" (did you mean \"a-to-b\"?)" })
    );
}

#[tokio::test]
async fn quarantine_is_200_with_the_quarantine_in_the_report_and_failure_is_500() {
    let service: Arc<FakeService> = Arc::default();

    let held = invoke(
        Arc::clone(&service),
        "SyncHttp",
        http("POST", "https://app/api/sync/quarantined", None, json!({})),
    )
    .await;
    let failed = invoke(
        service,
        "SyncHttp",
        http("POST", "https://app/api/sync/broken", None, json!({})),
    )
    .await;

    assert_eq!(held.res_status(), 200);
    assert_eq!(held.res_body()["quarantine"]["held_deletes"], 60);
    assert_eq!(held.res_body()["outcome"], "quarantined");
    assert_eq!(failed.res_status(), 500);
    assert_eq!(failed.res_body()["outcome"], "failed");
}

#[tokio::test]
async fn internal_errors_are_opaque_to_the_caller() {
    let answer = invoke(
        Arc::default(),
        "SyncHttp",
        http("POST", "https://app/api/sync/crash", None, json!({})),
    )
    .await;

    assert_eq!(answer.res_status(), 500);
    assert_eq!(
        answer.res_body(),
        json!({ "error": "internal error; see the function app's logs" })
    );
    assert_eq!(
        answer.envelope["Logs"],
        json!(["internal error: state store said: secret-ish detail"])
    );
}

#[tokio::test]
async fn sync_without_a_link_runs_all() {
    let answer = invoke(
        Arc::default(),
        "SyncHttp",
        http("POST", "https://app/api/sync", None, json!({})),
    )
    .await;

    assert_eq!(answer.res_status(), 200);
    let body = answer.res_body();
    let links: Vec<&str> = body["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["link"].as_str().unwrap())
        .collect();
    assert_eq!(links, ["a-to-b", "quarantined"]);
    assert_eq!(body["errors"], json!([]));
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let sync = invoke(
        Arc::default(),
        "SyncHttp",
        http("GET", "https://app/api/sync/a-to-b", None, json!({})),
    )
    .await;
    let status = invoke(
        Arc::default(),
        "Status",
        http("DELETE", "https://app/api/status", None, json!({})),
    )
    .await;

    assert_eq!(sync.res_status(), 405);
    assert_eq!(sync.envelope["Outputs"]["res"]["headers"]["Allow"], "POST");
    assert_eq!(
        sync.res_body(),
        json!({ "error": "method GET is not allowed here; use POST" })
    );
    assert_eq!(status.res_status(), 405);
    assert_eq!(status.envelope["Outputs"]["res"]["headers"]["Allow"], "GET");
}

#[tokio::test]
async fn bad_or_unknown_query_values_are_400() {
    let bad = invoke(
        Arc::default(),
        "SyncHttp",
        http(
            "POST",
            "https://app/api/sync/a-to-b",
            None,
            json!({ "full": "often" }),
        ),
    )
    .await;
    let typo = invoke(
        Arc::default(),
        "SyncHttp",
        http(
            "POST",
            "https://app/api/sync/a-to-b",
            None,
            json!({ "dryrun": "true" }),
        ),
    )
    .await;

    assert_eq!(bad.res_status(), 400);
    assert_eq!(
        bad.res_body(),
        json!({ "error": "query parameter full must be true or false; got \"often\"" })
    );
    assert_eq!(typo.res_status(), 400);
    assert_eq!(
        typo.res_body(),
        json!({ "error": "unknown query parameter \"dryrun\"; expected dry_run, full or allow_deletes" })
    );
}

#[tokio::test]
async fn status_answers_the_status_report() {
    let answer = invoke(
        Arc::default(),
        "Status",
        http("GET", "https://app/api/status", None, json!({})),
    )
    .await;

    assert_eq!(answer.res_status(), 200);
    assert_eq!(answer.res_body()["links"][0]["managed_objects"], 12);
    assert_eq!(
        answer.res_body()["links"][0]["next_due"],
        "2026-11-23T10:00:00Z"
    );
    assert_eq!(answer.envelope["Logs"], json!(["status of 1 link"]));
}

#[tokio::test]
async fn status_answers_a_browser_with_the_page_and_everyone_else_with_json() {
    let with_accept = |accept: &str| {
        let mut payload = http("GET", "https://app/api/status", None, json!({}));
        payload["Data"]["req"]["Headers"]["Accept"] = json!([accept]);
        payload
    };

    let page = invoke(
        Arc::default(),
        "Status",
        with_accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    )
    .await;
    let curl = invoke(Arc::default(), "Status", with_accept("*/*")).await;

    let res = &page.envelope["Outputs"]["res"];
    assert_eq!(
        (page.host_status, res["statusCode"].as_u64()),
        (StatusCode::OK, Some(200))
    );
    assert_eq!(
        res["headers"],
        json!({
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": galbridge::status_page::CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "Vary": "Accept"
        })
    );
    let body = res["body"].as_str().expect("a text body");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains("data-link=\"a-to-b\""));
    assert_eq!(page.envelope["Logs"], json!(["status of 1 link (page)"]));
    assert_eq!(curl.res_body()["links"][0]["managed_objects"], 12);
    assert_eq!(curl.res_body()["links"][0]["health"], "never_run");
}

#[tokio::test]
async fn timer_runs_what_is_due_whatever_shape_the_timer_has() {
    let payloads = [
        json!({ "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } }, "Metadata": {} }),
        json!({ "Data": { "timer": "{\"Schedule\":{},\"ScheduleStatus\":{\"Last\":\"2026-11-23T09:45:00Z\",\"Next\":\"2026-11-23T10:00:00Z\",\"LastUpdated\":\"2026-11-23T09:45:00Z\"},\"IsPastDue\":true}" }, "Metadata": {} }),
        json!({ "Data": { "myTimer": { "Schedule": {}, "IsPastDue": false } } }),
    ];
    for payload in payloads {
        let answer = invoke(Arc::default(), "SyncTimer", payload.clone()).await;

        assert_eq!(answer.host_status, StatusCode::OK, "{payload}");
        assert_eq!(
            answer.envelope,
            json!({ "Outputs": {}, "Logs": ["a-to-b: Succeeded"], "ReturnValue": null })
        );
    }
}

#[tokio::test]
async fn malformed_envelopes_fail_the_invocation_with_a_clear_error() {
    let not_json = Request::post("/SyncTimer")
        .body(Body::from("{not json"))
        .unwrap();
    let response = router(Arc::new(FakeService::default()), Arc::default())
        .oneshot(not_json)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let timer_garbage = invoke(
        Arc::default(),
        "SyncTimer",
        json!({ "Data": { "timer": "not json at all" } }),
    )
    .await;
    assert_eq!(timer_garbage.host_status, StatusCode::BAD_REQUEST);
    assert_eq!(timer_garbage.res_status(), 400);
    assert!(
        timer_garbage.envelope["Logs"][0]
            .as_str()
            .unwrap()
            .starts_with("malformed invocation of SyncTimer: binding `timer` is malformed: a string that is not JSON")
    );

    let no_request = invoke(Arc::default(), "SyncHttp", json!({ "Data": {} })).await;
    assert_eq!(no_request.host_status, StatusCode::BAD_REQUEST);
    assert_eq!(
        no_request.res_body(),
        json!({ "error": "malformed invocation of SyncHttp: the HTTP trigger data has no request (no `req` binding with a Method)" })
    );
}

#[tokio::test]
async fn unknown_function_is_404_to_the_host() {
    let answer = invoke(Arc::default(), "Purge", json!({ "Data": {} })).await;

    assert_eq!(answer.host_status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.res_body(),
        json!({ "error": "no function named \"Purge\"; this handler serves SyncTimer, SyncHttp, Status, Notify, PhonesShard" })
    );
}

#[tokio::test]
async fn readiness_probe_answers_on_root() {
    let response = router(Arc::new(FakeService::default()), Arc::default())
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn notify_is_404_when_notifications_are_off() {
    let payload = json!({ "Data": { "req": {
        "Url": "https://app.azurewebsites.net/api/notify?validationToken=abc", "Method": "POST",
        "Query": { "validationToken": "abc" }, "Headers": {}, "Params": {}, "Body": "" } } });

    let answer = invoke(Arc::default(), "Notify", payload).await;

    assert_eq!(answer.host_status, StatusCode::OK);
    assert_eq!(
        answer.res_status(),
        404,
        "no echo: a handshake for a configuration without notifications fails"
    );
    assert_eq!(
        answer.res_body(),
        json!({ "error": "change notifications are off in this configuration" })
    );
}
