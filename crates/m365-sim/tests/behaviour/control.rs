//! The control API over HTTP (`/_control/…`, issue 3): people, mail contacts, mailboxes, counters, delta tokens,
//! clock, knobs and faults, as a test in another language would drive them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{GRAPH, TestSim, spawn};

async fn call(
    t: &TestSim,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = t.http.request(method, t.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("control request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn control_api_changes_people_and_graph_sees_it() {
    use reqwest::Method;
    let t = spawn(&[("acme", 4)]).await;
    let (status, tenants) = call(&t, Method::GET, "/_control/tenants", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenants[0]["name"], "acme");
    let (_, identity) = call(&t, Method::GET, "/_control/identity", None).await;
    assert_eq!(identity["header"], t.sim.identity().header.as_str());

    let (status, made) = call(
        &t,
        Method::POST,
        "/_control/tenants/acme/users",
        Some(json!({"displayName": "Grace Hopper", "department": "Navy"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        &t,
        Method::PATCH,
        &format!("/_control/tenants/acme/users/{id}"),
        Some(json!({"jobTitle": "Rear Admiral"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let tok = t.token("acme", GRAPH).await;
    let (status, user, _) = t
        .get(
            &tok,
            &format!("/v1.0/users/{id}?$select=displayName,jobTitle"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["jobTitle"], "Rear Admiral");

    let (status, _) = call(
        &t,
        Method::DELETE,
        &format!("/_control/tenants/acme/users/{id}?soft=true"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t.get(&tok, &format!("/v1.0/users/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = call(
        &t,
        Method::POST,
        &format!("/_control/tenants/acme/users/{id}/restore"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, users) = call(&t, Method::GET, "/_control/tenants/acme/users", None).await;
    assert_eq!(users.as_array().unwrap().len(), 5);
    let (status, err) = call(&t, Method::GET, "/_control/tenants/nowhere/users", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    // Mail contacts made by hand and mailbox contacts, inspectable per tenant and mailbox.
    let (status, _) = call(
        &t,
        Method::POST,
        "/_control/tenants/acme/mail-contacts",
        Some(json!({"name": "Supplier Desk", "email": "desk@supplier.example"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, contacts) = call(
        &t,
        Method::GET,
        "/_control/tenants/acme/mail-contacts",
        None,
    )
    .await;
    assert_eq!(contacts.as_array().unwrap().len(), 1);
    let owner = t.rest_mailbox();
    let (status, _) = call(
        &t,
        Method::POST,
        &format!("/_control/tenants/acme/mailboxes/{owner}/contacts"),
        Some(json!({"displayName": "Mum"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, held) = call(
        &t,
        Method::GET,
        &format!("/_control/tenants/acme/mailboxes/{owner}/contacts"),
        None,
    )
    .await;
    assert_eq!(held.as_array().unwrap().len(), 1);
    let (_, folders) = call(
        &t,
        Method::GET,
        &format!("/_control/tenants/acme/mailboxes/{owner}/folders"),
        None,
    )
    .await;
    assert!(
        !folders.as_array().unwrap().is_empty(),
        "the default Contacts folder"
    );
}

#[tokio::test]
async fn control_api_sets_knobs_faults_clock_counters_and_consent() {
    use reqwest::Method;
    let t = spawn(&[("acme", 2)]).await;
    let (status, knobs) = call(
        &t,
        Method::PATCH,
        "/_control/knobs",
        Some(json!({"default_page_size": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{knobs}");
    assert_eq!(knobs["default_page_size"], 1);
    assert_eq!(
        knobs["outlook_concurrency_per_mailbox"], 4,
        "PATCH keeps the rest"
    );
    let (status, _) = call(
        &t,
        Method::PATCH,
        "/_control/knobs",
        Some(json!({"no_such_knob": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown knobs are refused");

    let tok = t.token("acme", GRAPH).await;
    let (_, page, _) = t.get(&tok, "/v1.0/users").await;
    assert_eq!(
        page["value"].as_array().unwrap().len(),
        1,
        "page size knob applied"
    );

    let (status, _) = call(
        &t,
        Method::POST,
        "/_control/faults",
        Some(json!({"service": "graph", "target_contains": "/v1.0/users", "fault": {"kind": "throttle", "retry_after_secs": 9}, "remaining": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, headers) = t.get(&tok, "/v1.0/users").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "9");
    let (_, counters) = call(&t, Method::GET, "/_control/counters", None).await;
    let rows = counters["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["service"] == "graph" && r["status"] == 429),
        "{counters}"
    );
    assert_eq!(counters["throttled"], 1);
    call(&t, Method::DELETE, "/_control/counters", None).await;
    let (_, counters) = call(&t, Method::GET, "/_control/counters", None).await;
    assert_eq!(counters["throttled"], 0);

    // Delta tokens expire on demand and with the clock.
    let (_, first, _) = t.get(&tok, "/v1.0/users/delta?$deltaToken=latest").await;
    let link = first["@odata.deltaLink"].as_str().unwrap().to_string();
    let (status, _) = call(
        &t,
        Method::POST,
        "/_control/tenants/acme/expire-delta-tokens",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.get(&tok, &link).await.0, StatusCode::GONE);
    let (status, _) = call(
        &t,
        Method::POST,
        "/_control/clock/advance",
        Some(json!({"secs": 3600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t.get(&tok, "/v1.0/users").await.0,
        StatusCode::UNAUTHORIZED,
        "a 3599 s token has expired an hour later"
    );

    // Consent: without User.Read.All the app is refused.
    let (status, _) = call(
        &t,
        Method::PUT,
        "/_control/tenants/acme/permissions",
        Some(json!(["Contacts.ReadWrite"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let tok = t.token("acme", GRAPH).await;
    let (status, body, _) = t.get(&tok, "/v1.0/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "Authorization_RequestDenied");
}
