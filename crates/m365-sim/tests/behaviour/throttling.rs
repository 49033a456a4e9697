//! Limits, $batch and faults [§4].

use std::time::Duration;

use m365_sim::{Fault, FaultRule, Service};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{EXCHANGE, GRAPH, spawn, spawn_with};

#[tokio::test]
async fn outlook_allows_four_concurrent_requests_per_mailbox_then_429_with_retry_after() {
    // [§4] Outlook: 4 concurrent requests per (app, mailbox); beyond that 429 + Retry-After.
    let mut knobs = m365_sim::Knobs::default();
    // Long enough that all 8 requests (each opening its own TLS connection) overlap even on a loaded machine.
    knobs.latency.graph = m365_sim::Latency {
        fixed_ms: 2_000,
        jitter_ms: 0,
    };
    let t = spawn_with(&[("acme", 20)], knobs).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let url = t.url(&format!("/v1.0/users/{user}/contactFolders"));
    let responses =
        futures::future::join_all((0..8).map(|_| t.http.get(&url).bearer_auth(&tok).send())).await;
    let statuses: Vec<StatusCode> = responses
        .iter()
        .map(|r| r.as_ref().unwrap().status())
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let throttled: Vec<_> = responses
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok, 4, "{statuses:?}");
    assert_eq!(throttled.len(), 4);
    assert!(
        throttled
            .iter()
            .all(|r| r.headers().contains_key("retry-after"))
    );
    let loads = t.sim.control().mailbox_loads();
    let load = loads.iter().find(|l| l.mailbox == user).unwrap();
    assert_eq!(load.peak_concurrency, 4);
    assert_eq!(t.sim.control().throttled_count(), 4);
}

#[tokio::test]
async fn outlook_ten_thousand_requests_per_ten_minutes_window() {
    // [§4] 10,000 requests / 10 min per (app, mailbox); the sim lets tests lower the number.
    let t = spawn(&[("acme", 20)]).await;
    t.sim
        .control()
        .update_knobs(|k| k.outlook_requests_per_10_min = 3);
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    for _ in 0..3 {
        assert_eq!(
            t.get(&tok, &format!("/v1.0/users/{user}/contacts")).await.0,
            StatusCode::OK
        );
    }
    let (status, _, headers) = t.get(&tok, &format!("/v1.0/users/{user}/contacts")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 0 && wait <= 600);
    t.sim.control().advance_clock(Duration::from_secs(601));
    let tok = t.token("acme", GRAPH).await;
    assert_eq!(
        t.get(&tok, &format!("/v1.0/users/{user}/contacts")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn batch_limits_depends_on_and_failed_dependency() {
    // [§4] $batch ≤ 20; dependsOn orders; a failed dependency gives 424; the outer status stays 200.
    let t = spawn(&[("acme", 20)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users?$top=1"}))
        .collect();
    let (status, _) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            "/v1.0/$batch",
            json!({"requests": too_many}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            "/v1.0/$batch",
            json!({"requests": [
                {"id": "1", "method": "POST", "url": format!("/users/{user}/contacts"), "headers": {"Content-Type": "application/json"}, "body": {"displayName": "Batch One"}},
                {"id": "2", "method": "PATCH", "url": format!("/users/{user}/contacts/does-not-exist"), "headers": {"Content-Type": "application/json"}, "body": {"jobTitle": "x"}, "dependsOn": ["1"]},
                {"id": "3", "method": "GET", "url": "/users?$top=1", "dependsOn": ["2"]}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let by_id = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("1")["status"], 201);
    assert_eq!(by_id("2")["status"], 404);
    assert_eq!(by_id("3")["status"], 424);
    assert!(
        t.sim
            .control()
            .mailbox_contacts("acme", &user)
            .unwrap()
            .iter()
            .any(|c| c.fields["displayName"] == "Batch One")
    );
}

#[tokio::test]
async fn batch_inner_requests_are_throttled_on_their_own() {
    // [§4] Each inner request is throttled on its own: with 20 writes to one mailbox and a concurrency of 2,
    // some inner requests get 429 (with Retry-After) while the others land.
    let mut knobs = m365_sim::Knobs {
        outlook_concurrency_per_mailbox: 2,
        ..Default::default()
    };
    knobs.latency.graph = m365_sim::Latency {
        fixed_ms: 30,
        jitter_ms: 0,
    };
    let t = spawn_with(&[("acme", 20)], knobs).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let requests: Vec<Value> = (0..20)
        .map(|i| json!({"id": i.to_string(), "method": "POST", "url": format!("/users/{user}/contacts"), "headers": {"Content-Type": "application/json"}, "body": {"displayName": format!("B{i}")}}))
        .collect();
    let (status, body) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            "/v1.0/$batch",
            json!({"requests": requests}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let responses = body["responses"].as_array().unwrap();
    let created = responses.iter().filter(|r| r["status"] == 201).count();
    let throttled: Vec<&Value> = responses.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(created + throttled.len(), 20);
    assert!(
        !throttled.is_empty() && created > 0,
        "created {created}, throttled {}",
        throttled.len()
    );
    assert!(
        throttled
            .iter()
            .all(|r| r["headers"]["Retry-After"].is_string())
    );
    assert_eq!(
        t.sim
            .control()
            .mailbox_contacts("acme", &user)
            .unwrap()
            .len(),
        created
    );
}

#[tokio::test]
async fn scripted_faults_503_then_recovery_and_counters() {
    // Faults on demand: the next N matching requests fail with 503 + Retry-After; counters record each status.
    let t = spawn(&[("acme", 3)]).await;
    let tok = t.token("acme", GRAPH).await;
    t.sim.control().add_fault(
        FaultRule::scripted(
            Fault::ServiceUnavailable {
                retry_after_secs: Some(2),
            },
            2,
        )
        .on_service(Service::Graph)
        .on_target("/v1.0/users"),
    );
    assert_eq!(
        t.get(&tok, "/v1.0/users").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _, headers) = t.get(&tok, "/v1.0/users").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(t.get(&tok, "/v1.0/users").await.0, StatusCode::OK);
    let c = t.sim.control();
    assert_eq!(c.count(Service::Graph, "GET /v1.0/users", Some(503)), 2);
    assert_eq!(c.count(Service::Graph, "GET /v1.0/users", Some(200)), 1);
    assert!(c.faults().is_empty(), "scripted rule used up");
}

#[tokio::test]
async fn dropped_connection_fault_closes_without_response() {
    // Faults: dropped connections surface as transport errors, not HTTP statuses.
    let t = spawn(&[("acme", 3)]).await;
    let tok = t.token("acme", GRAPH).await;
    t.sim
        .control()
        .add_fault(FaultRule::scripted(Fault::DropConnection, 1).on_service(Service::Graph));
    let err = t
        .http
        .get(t.url("/v1.0/users"))
        .bearer_auth(&tok)
        .send()
        .await;
    assert!(err.is_err(), "connection must drop");
    assert_eq!(t.get(&tok, "/v1.0/users").await.0, StatusCode::OK);
}

#[tokio::test]
async fn exchange_transient_errors_name_server_busy_exception() {
    // [§1] Transient Exchange errors arrive as 400/5xx whose body names ServerBusyException etc.
    let t = spawn(&[("acme", 1)]).await;
    let tok = t.token("acme", EXCHANGE).await;
    t.sim.control().add_fault(
        FaultRule::scripted(
            Fault::ExchangeTransient {
                status: 400,
                exception: "ServerBusyException".into(),
            },
            1,
        )
        .on_service(Service::Exchange)
        .on_target("New-MailContact"),
    );
    let (status, body) = t
        .exo(
            "acme",
            &tok,
            "New-MailContact",
            json!({"Name": "A", "ExternalEmailAddress": "a@x.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("ServerBusyException"));
    let (status, _) = t
        .exo(
            "acme",
            &tok,
            "New-MailContact",
            json!({"Name": "A", "ExternalEmailAddress": "a@x.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t.sim
            .control()
            .count(Service::Exchange, "New-MailContact", Some(400)),
        1
    );
}

#[tokio::test]
async fn directory_write_budget_throttles_patches_per_app_and_tenant() {
    // [§4] Directory writes per (app, tenant) have a budget; beyond it 429 + Retry-After.
    let t = spawn(&[("acme", 5)]).await;
    t.sim
        .control()
        .update_knobs(|k| k.directory_writes_per_150_s = 2);
    let tok = t.token("acme", GRAPH).await;
    let id = t.sim.control().users("acme").unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        assert_eq!(
            t.send_json(
                &tok,
                reqwest::Method::PATCH,
                &format!("/v1.0/users/{id}"),
                json!({"jobTitle": "a"})
            )
            .await
            .0,
            StatusCode::NO_CONTENT
        );
    }
    let resp = t
        .http
        .patch(t.url(&format!("/v1.0/users/{id}")))
        .bearer_auth(&tok)
        .json(&json!({"jobTitle": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let scope = resp.headers()["x-ms-throttle-scope"].to_str().unwrap();
    assert!(scope.starts_with("Tenant_Application/Write/"), "{scope}");
    assert_eq!(
        resp.headers()["x-ms-throttle-information"],
        "WriteLimitExceeded"
    );
}

#[tokio::test]
async fn directory_resource_units_are_charged_per_app_and_tenant_then_429() {
    // Graph throttling-limits doc (identity and access): GET users costs 2 units, $select −1, other directory
    // paths 1; over the (app, tenant) budget per 10 s: 429 + Retry-After, scope Tenant_Application/Read/…,
    // ResourceUnitLimitExceeded. Outlook paths are not charged; $batch inner requests are charged one by one.
    let t = spawn_with(
        &[("acme", 10), ("northern", 3)],
        m365_sim::Knobs {
            directory_budget: true,
            directory_units_per_10_s: Some(10),
            ..Default::default()
        },
    )
    .await;
    let tok = t.token("acme", GRAPH).await;
    let (status, _, headers) = t.get(&tok, "/v1.0/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-ms-resource-unit"], "2");
    let (_, _, headers) = t.get(&tok, "/v1.0/users?$select=id").await;
    assert_eq!(
        headers["x-ms-resource-unit"], "1",
        "$select lowers the cost"
    );
    let user = t.rest_mailbox();
    for _ in 0..5 {
        let (status, _, headers) = t
            .get(&tok, &format!("/v1.0/users/{user}/contactFolders"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key("x-ms-resource-unit"), "Outlook path");
    }
    // 3 units spent; a batch of 4 inner GET users (2 each) spends 8 more: the last one does not fit.
    let requests: Vec<Value> = (0..4)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
        .collect();
    let (status, body) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            "/v1.0/$batch",
            json!({"requests": requests}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let statuses: Vec<u64> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );

    let (status, body, headers) = t.get(&tok, "/v1.0/users/delta").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    assert!(
        headers["x-ms-throttle-scope"]
            .to_str()
            .unwrap()
            .starts_with("Tenant_Application/Read/")
    );
    assert_eq!(
        headers["x-ms-throttle-information"],
        "ResourceUnitLimitExceeded"
    );

    // Another tenant's budget is its own; the window moves on with the clock.
    let northern = t.token("northern", GRAPH).await;
    assert_eq!(t.get(&northern, "/v1.0/users").await.0, StatusCode::OK);
    t.sim.control().advance_clock(Duration::from_secs(10));
    let tok = t.token("acme", GRAPH).await;
    assert_eq!(t.get(&tok, "/v1.0/users").await.0, StatusCode::OK);
}

#[tokio::test]
async fn batch_carries_binary_bodies_both_ways_and_reads_lenient_envelopes() {
    // [§4] Inside $batch a photo travels base64-encoded: a PUT with an image Content-Type is decoded before it
    // reaches the contact, and a non-JSON inner response (the JPEG) comes back as a base64 string. JSON bodies are
    // embedded as JSON. A numeric id is accepted (as its text); a request that is not an object is refused.
    use base64::Engine as _;
    let t = spawn(&[("acme", 20)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let (_, c) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contacts"),
            json!({"displayName": "Pic"}),
        )
        .await;
    let cid = c["id"].as_str().unwrap();
    let jpeg = m365_sim::jpeg::tiny_jpeg(90, b"batch photo");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    let (status, body) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            "/v1.0/$batch",
            json!({"requests": [
                {"id": "put", "method": "PUT", "url": format!("/users/{user}/contacts/{cid}/photo/$value"), "headers": {"Content-Type": "image/jpeg"}, "body": encoded},
                {"id": "get", "method": "GET", "url": format!("/users/{user}/contacts/{cid}/photo/$value"), "dependsOn": ["put"]},
                {"id": 7, "method": "post", "url": format!("users/{user}/contacts"), "body": {"displayName": "Seven", "categories": ["Batch"]}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let by_id = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no response {id} in {body}"))
    };
    let put = by_id("put");
    assert_eq!(put["status"], 204);
    assert!(put.get("body").is_none(), "{put}");
    let got = by_id("get");
    assert_eq!(got["status"], 200);
    assert_eq!(got["headers"]["Content-Type"], "image/jpeg");
    assert_eq!(got["body"], encoded.as_str());
    let seven = by_id("7");
    assert_eq!(seven["status"], 201);
    assert_eq!(seven["body"]["displayName"], "Seven");
    assert_eq!(seven["body"]["categories"], json!(["Batch"]));
    let view = t.sim.control().mailbox_contacts("acme", &user).unwrap();
    assert_eq!(
        view.iter()
            .find(|c| c.fields["id"] == cid)
            .unwrap()
            .photo_bytes,
        Some(jpeg.len())
    );
    assert!(view.iter().any(|c| c.fields["displayName"] == "Seven"));

    let (status, body) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            "/v1.0/$batch",
            json!({"requests": [["1", "GET", "/users"]]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "Each request needs an id.");
}

#[tokio::test]
async fn graph_limits_each_app_counting_inner_batch_requests_one_by_one() {
    // [§4] 130,000 requests per 10 s per app across all tenants; each inner `$batch` request counts. The knob
    // lowers the limit; the control API reports per app what it sent in any 10 s.
    let t = spawn(&[("acme", 20)]).await;
    let knobs = t
        .http
        .patch(t.url("/_control/knobs"))
        .json(&json!({"graph_app_requests_per_10_s": 25}))
        .send()
        .await
        .unwrap();
    assert_eq!(knobs.status(), StatusCode::OK);
    let tok = t.token("acme", GRAPH).await;
    let app = t.sim.tenant("acme").unwrap().client_id.to_ascii_lowercase();
    let inner: Vec<Value> = (0..20)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users?$top=1"}))
        .collect();
    let (status, body) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            "/v1.0/$batch",
            json!({"requests": inner}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let answered: Vec<&Value> = body["responses"].as_array().unwrap().iter().collect();
    assert!(answered.iter().all(|r| r["status"] == 200), "{body}");
    for _ in 0..5 {
        assert_eq!(t.get(&tok, "/v1.0/users?$top=1").await.0, StatusCode::OK);
    }
    // The 26th request within 10 s: refused for the app, with when to come back and the scope.
    let (status, _, headers) = t.get_with(&tok, "/v1.0/users?$top=1", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_eq!(
        headers["x-ms-throttle-scope"].to_str().unwrap(),
        format!("Application/All/{app}")
    );

    let load: Value = t
        .http
        .get(t.url("/_control/app-load"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine = load["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app_id"] == app.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        mine["requests"], 25,
        "20 inner requests + 5, the envelope not counted: {mine}"
    );
    assert_eq!(mine["throttled"], 1);
    assert_eq!(mine["max_in_any_10_s"], 25);

    // Once the window has passed, the app may send again.
    t.sim.control().advance_clock(Duration::from_secs(11));
    assert_eq!(t.get(&tok, "/v1.0/users?$top=1").await.0, StatusCode::OK);
    let mine = t
        .sim
        .control()
        .app_loads()
        .into_iter()
        .find(|a| a.app_id == app)
        .unwrap();
    assert_eq!((mine.requests, mine.max_in_any_10_s), (26, 25));
}
