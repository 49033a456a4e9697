//! Login, managed identity, Key Vault.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{EXCHANGE, GRAPH, spawn};

#[tokio::test]
async fn login_issues_tokens_bound_to_tenant_app_and_audience() {
    // [§1, §2] A token for one tenant and audience is refused by another service and another tenant.
    let t = spawn(&[("acme", 5), ("northern", 5)]).await;
    let graph_acme = t.token("acme", GRAPH).await;
    let (status, body, _) = t.get(&graph_acme, "/v1.0/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"].as_array().map(Vec::len), Some(5));

    let (status, body) = t
        .exo(
            "acme",
            &graph_acme,
            "Get-MailContact",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "Graph token must not open Exchange: {body}"
    );

    let exo_northern = t.token("northern", EXCHANGE).await;
    let (status, _) = t
        .exo(
            "acme",
            &exo_northern,
            "Get-MailContact",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a northern token must not open acme's Exchange"
    );
}

#[tokio::test]
async fn login_errors_come_in_entra_aadsts_shape() {
    // Entra answers invalid_client / AADSTS7000215 for a wrong secret, invalid_scope for a non-.default scope.
    let t = spawn(&[("acme", 1)]).await;
    let info = t.sim.tenant("acme").expect("tenant");
    let resp = t
        .http
        .post(info.token_url.clone())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", "wrong"),
            ("scope", GRAPH),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215:")
    );
    assert!(
        !body.to_string().contains(&info.client_secret),
        "errors never echo secrets"
    );

    let resp = t
        .http
        .post(info.token_url.clone())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", "User.Read.All"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn expired_token_is_refused_after_the_clock_moves() {
    // Access tokens live ~1 hour; Graph answers 401 InvalidAuthenticationToken after that.
    let t = spawn(&[("acme", 2)]).await;
    let token = t.token("acme", GRAPH).await;
    t.sim
        .control()
        .advance_clock(std::time::Duration::from_secs(3700));
    let (status, body, _) = t.get(&token, "/v1.0/users").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
}
