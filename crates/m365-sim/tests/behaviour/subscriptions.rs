//! Change-notification subscriptions [§11]: the validation handshake before a create answers, notifications with the
//! subscription's clientState when a user changes, the 41,760-minute limit on users, expiry.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{GRAPH, spawn};

/// A notification endpoint: echoes validation tokens (with `suffix` appended, to play a broken endpoint) and keeps
/// every notification body it receives.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
struct Echo {
    suffix: &'static str,
    received: Arc<Mutex<Vec<Value>>>,
}

async fn endpoint(
    State(echo): State<Echo>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: String,
) -> axum::response::Response {
    if let Some(token) = query.get("validationToken") {
        return (
            AxumStatus::OK,
            [("content-type", "text/plain")],
            format!("{token}{}", echo.suffix),
        )
            .into_response();
    }
    echo.received
        .lock()
        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
    AxumStatus::ACCEPTED.into_response()
}

async fn receiver(suffix: &'static str) -> Receiver {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/api/notify", axum::routing::post(endpoint))
        .with_state(Echo {
            suffix,
            received: Arc::clone(&received),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("an address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://127.0.0.1:{port}/api/notify"),
        received,
    }
}

fn subscription(url: &str, minutes: i64, change_type: &str) -> Value {
    json!({
        "changeType": change_type, "notificationUrl": url, "lifecycleNotificationUrl": url,
        "resource": "/users", "clientState": "s3cret-state",
        "expirationDateTime": (chrono::Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339(),
    })
}

#[tokio::test]
async fn create_validates_the_endpoint_then_user_changes_are_notified_with_the_client_state() {
    let t = spawn(&[("acme", 3)]).await;
    let token = t.token("acme", GRAPH).await;
    let endpoint = receiver("").await;

    let (status, created) = t
        .send_json(
            &token,
            Method::POST,
            "/v1.0/subscriptions",
            subscription(&endpoint.url, 60, "updated,deleted"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let control = t.sim.control();
    let user = control.users("acme").expect("users").remove(0);
    let id = user["id"].as_str().expect("an id");
    control
        .update_user("acme", id, json!({ "jobTitle": "Notified" }))
        .expect("the user changes");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while endpoint.received.lock().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no notification");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let body = endpoint.received.lock()[0].clone();
    let item = &body["value"][0];
    assert_eq!(item["subscriptionId"], created["id"]);
    assert_eq!(item["clientState"], "s3cret-state");
    assert_eq!(item["changeType"], "updated");
    assert_eq!(item["resource"], format!("Users/{id}"));
    assert_eq!(
        item["tenantId"],
        t.sim.tenant("acme").expect("seeded").tenant_id
    );
}

#[tokio::test]
async fn a_wrong_echo_fails_the_create_and_users_refuse_created_and_long_lives() {
    let t = spawn(&[("acme", 2)]).await;
    let token = t.token("acme", GRAPH).await;
    let broken = receiver("-garbled").await;
    let good = receiver("").await;

    let (wrong_echo, body) = t
        .send_json(
            &token,
            Method::POST,
            "/v1.0/subscriptions",
            subscription(&broken.url, 60, "updated"),
        )
        .await;
    let (created, _) = t
        .send_json(
            &token,
            Method::POST,
            "/v1.0/subscriptions",
            subscription(&good.url, 60, "created,updated"),
        )
        .await;
    let (too_long, _) = t
        .send_json(
            &token,
            Method::POST,
            "/v1.0/subscriptions",
            subscription(&good.url, 41_761, "updated"),
        )
        .await;
    let (longest, _) = t
        .send_json(
            &token,
            Method::POST,
            "/v1.0/subscriptions",
            subscription(&good.url, 41_759, "updated"),
        )
        .await;

    assert_eq!(wrong_echo, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ValidationError");
    assert_eq!(created, StatusCode::BAD_REQUEST, "users take no `created`");
    assert_eq!(too_long, StatusCode::BAD_REQUEST);
    assert_eq!(longest, StatusCode::CREATED);
    assert_eq!(
        t.sim.control().subscriptions("acme").expect("acme").len(),
        1
    );
}

#[tokio::test]
async fn an_expired_subscription_is_gone_and_a_renewed_one_lives_on() {
    let t = spawn(&[("acme", 2)]).await;
    let token = t.token("acme", GRAPH).await;
    let endpoint = receiver("").await;
    let (_, short) = t
        .send_json(
            &token,
            Method::POST,
            "/v1.0/subscriptions",
            subscription(&endpoint.url, 10, "updated"),
        )
        .await;
    let (_, long) = t
        .send_json(
            &token,
            Method::POST,
            "/v1.0/subscriptions",
            subscription(&endpoint.url, 10, "updated"),
        )
        .await;
    let renew_to = (chrono::Utc::now() + chrono::Duration::minutes(60)).to_rfc3339();
    let path = |sub: &Value| format!("/v1.0/subscriptions/{}", sub["id"].as_str().expect("an id"));
    let (renewed, _) = t
        .send_json(
            &token,
            Method::PATCH,
            &path(&long),
            json!({ "expirationDateTime": renew_to }),
        )
        .await;
    assert_eq!(renewed, StatusCode::OK);

    t.sim
        .control()
        .advance_clock(std::time::Duration::from_secs(11 * 60));

    let (gone, _) = t
        .send_json(
            &token,
            Method::PATCH,
            &path(&short),
            json!({ "expirationDateTime": renew_to }),
        )
        .await;
    assert_eq!(gone, StatusCode::NOT_FOUND);
    let live = t.sim.control().subscriptions("acme").expect("acme");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["id"], long["id"]);
}
