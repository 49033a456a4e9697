//! Injected faults and the latency model (issue 3, "Enforces and injects"): by rate or scripted, per service,
//! method and path or cmdlet; 429 with Retry-After, 503/504, dropped connections, slow and malformed responses.

use std::time::{Duration, Instant};

use m365_sim::{Fault, FaultRule, Service};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{EXCHANGE, GRAPH, spawn, spawn_with};

#[tokio::test]
async fn rated_throttle_fault_answers_429_with_retry_after_on_about_that_share_of_requests() {
    // [§4] On 429 Graph sends Retry-After (seconds) and the throttle scope; a rated rule hits ~rate of requests.
    let t = spawn(&[("acme", 3)]).await;
    let tok = t.token("acme", GRAPH).await;
    t.sim.control().add_fault(
        FaultRule::rated(
            Fault::Throttle {
                retry_after_secs: 7,
            },
            0.5,
        )
        .on_service(Service::Graph)
        .on_target("/v1.0/users"),
    );
    let mut throttled = 0;
    for _ in 0..200 {
        let (status, body, headers) = t.get(&tok, "/v1.0/users?$top=1").await;
        match status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                assert_eq!(headers["retry-after"], "7");
                assert!(headers.contains_key("x-ms-throttle-scope"));
                assert_eq!(body["error"]["code"], "TooManyRequests");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // Binomial(200, 0.5): 60..=140 holds with probability 1 - 2e-8.
    assert!((60..=140).contains(&throttled), "{throttled} of 200");
    assert_eq!(
        t.sim
            .control()
            .count(Service::Graph, "GET /v1.0/users", Some(429)),
        throttled
    );
    let (_, body, _) = t.get(&tok, "/v1.0/contacts").await;
    assert!(body["value"].is_array(), "other paths untouched");
}

#[tokio::test]
async fn faults_select_by_method_and_gateway_timeout_is_504() {
    // Faults target one method: a POST-only 504 leaves GETs alone.
    let t = spawn(&[("acme", 3)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    t.sim.control().add_fault(
        FaultRule::scripted(Fault::GatewayTimeout, 1)
            .on_service(Service::Graph)
            .on_method("post"),
    );
    assert_eq!(t.get(&tok, "/v1.0/users").await.0, StatusCode::OK);
    let (status, body) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contacts"),
            json!({"displayName": "Timed Out"}),
        )
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body["error"]["code"].is_string(), "Graph error shape");
    assert!(
        t.sim
            .control()
            .mailbox_contacts("acme", &user)
            .unwrap()
            .is_empty(),
        "a 504 fault is injected before the write happens"
    );
}

#[tokio::test]
async fn malformed_fault_cuts_the_body_and_slow_fault_delays_the_answer() {
    let t = spawn(&[("acme", 5)]).await;
    let tok = t.token("acme", GRAPH).await;
    let control = t.sim.control();
    control.add_fault(
        FaultRule::scripted(Fault::Malformed, 1)
            .on_service(Service::Graph)
            .on_target("/v1.0/users"),
    );
    let resp = t
        .http
        .get(t.url("/v1.0/users"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "malformed bodies come with a success status"
    );
    let text = resp.text().await.unwrap();
    assert!(!text.is_empty());
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "body is not valid JSON: {text}"
    );

    control.add_fault(
        FaultRule::scripted(Fault::Slow { delay_ms: 800 }, 1)
            .on_service(Service::Graph)
            .on_target("/v1.0/users"),
    );
    let started = Instant::now();
    let (status, _, _) = t.get(&tok, "/v1.0/users").await;
    assert_eq!(status, StatusCode::OK, "slow, then served normally");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let started = Instant::now();
    t.get(&tok, "/v1.0/users").await;
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "scripted: once"
    );
}

#[tokio::test]
async fn latency_model_adds_fixed_delay_and_jitter_per_service() {
    // Global latency model: fixed + jitter per service; other services keep their own.
    let mut knobs = m365_sim::Knobs::default();
    knobs.latency.graph = m365_sim::Latency {
        fixed_ms: 200,
        jitter_ms: 100,
    };
    let t = spawn_with(&[("acme", 2)], knobs).await;
    let started = Instant::now();
    let tok = t.token("acme", GRAPH).await;
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "login has no latency configured"
    );
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(t.get(&tok, "/v1.0/users").await.0, StatusCode::OK);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(3), "no runaway delay: {took:?}");
    }
}

#[tokio::test]
async fn faults_reach_batch_inner_requests_one_by_one() {
    // [§4] Inner requests meet faults on their own: scripted 429s hit the first inner writes (Retry-After in the
    // inner headers), a dropped connection becomes an inner 500, the rest land; the outer status stays 200.
    let t = spawn(&[("acme", 5)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let control = t.sim.control();
    control.add_fault(
        FaultRule::scripted(
            Fault::Throttle {
                retry_after_secs: 3,
            },
            2,
        )
        .on_target("/contacts"),
    );
    control.add_fault(FaultRule::scripted(Fault::DropConnection, 1).on_target("/contacts"));
    let requests: Vec<Value> = (0..5)
        .map(|i| json!({"id": i.to_string(), "method": "POST", "url": format!("/users/{user}/contacts"),
            "headers": {"Content-Type": "application/json"}, "body": {"displayName": format!("F{i}")}}))
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
    let with = |code: u64| responses.iter().filter(|r| r["status"] == code).count();
    assert_eq!((with(429), with(500), with(201)), (2, 1, 2), "{body}");
    assert!(
        responses
            .iter()
            .filter(|r| r["status"] == 429)
            .all(|r| r["headers"]["Retry-After"] == "3")
    );
    assert_eq!(control.mailbox_contacts("acme", &user).unwrap().len(), 2);
}

#[tokio::test]
async fn exchange_faults_are_picked_by_cmdlet_name() {
    // [§1] Exchange faults target a cmdlet, not a path (every cmdlet shares POST …/InvokeCommand).
    let t = spawn(&[("acme", 2)]).await;
    let tok = t.token("acme", EXCHANGE).await;
    t.sim.control().add_fault(
        FaultRule::scripted(
            Fault::Throttle {
                retry_after_secs: 2,
            },
            1,
        )
        .on_service(Service::Exchange)
        .on_target("Get-Recipient"),
    );
    let (status, _) = t
        .exo(
            "acme",
            &tok,
            "Get-MailContact",
            json!({"ResultSize": "Unlimited"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "other cmdlets pass");
    let (status, _) = t
        .exo("acme", &tok, "Get-Recipient", json!({"ResultSize": 5}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = t
        .exo("acme", &tok, "Get-Recipient", json!({"ResultSize": 5}))
        .await;
    assert_eq!(status, StatusCode::OK);
}
