//! Table store behaviour beyond the shared conformance suite: Entra bearer tokens and retries (against a loopback
//! capture server), and against a real Azurite: continuation tokens past one page, oversize entities refused before
//! anything is written, stale checkpoint writers refused by ETag, bad keys reported without the key.

#[path = "support/azurite.rs"]
mod azurite;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::{Duration as AzDuration, OffsetDateTime};
use chrono::Utc;
use galbridge::state::{
    LINK_SCOPE, LinkCheckpoint, ObjectRecord, RetryPolicy, StateError, StateStore, TableAuth,
    TableStore, TableStoreConfig,
};

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn record(anchor: &str, data: Option<serde_json::Value>) -> ObjectRecord {
    ObjectRecord {
        anchor: anchor.to_owned(),
        target_id: format!("id-{anchor}"),
        hash: "h".to_owned(),
        data,
        updated_at: Utc::now(),
    }
}

async fn azurite_store() -> Option<TableStore> {
    let azurite = azurite::shared()?;
    install_crypto();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let table = format!(
        "tbl{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let config = TableStoreConfig::from_connection_string(&azurite.connection_string(), &table)
        .expect("config");
    Some(TableStore::open(config).await.expect("open table store"))
}

#[derive(Debug)]
struct FakeCredential {
    scopes_asked: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl TokenCredential for FakeCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes_asked
            .lock()
            .expect("lock")
            .extend(scopes.iter().map(|s| s.to_string()));
        Ok(AccessToken::new(
            "fake-token-123",
            OffsetDateTime::now_utc() + AzDuration::hours(1),
        ))
    }
}

#[derive(Default)]
struct Captured {
    requests: Mutex<Vec<(String, String, axum::http::HeaderMap)>>,
    create_calls: AtomicUsize,
}

/// A loopback stand-in for the table endpoint: the first create-table is throttled (503, Retry-After: 0),
/// then it succeeds; entity reads find nothing.
async fn capture_server() -> (String, Arc<Captured>) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let captured = Arc::new(Captured::default());
    let state = captured.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let state = state.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            state.requests.lock().expect("lock").push((
                method.clone(),
                path.clone(),
                request.headers().clone(),
            ));
            if method == "POST" && path.ends_with("/Tables") {
                if state.create_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        "{}",
                    )
                        .into_response();
                }
                return StatusCode::NO_CONTENT.into_response();
            }
            let body = r#"{"odata.error":{"code":"ResourceNotFound","message":{"value":"nope"}}}"#;
            (StatusCode::NOT_FOUND, body).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/acct"), captured)
}

#[tokio::test]
async fn bearer_tokens_are_sent_cached_and_throttling_is_retried() {
    install_crypto();
    let (endpoint, captured) = capture_server().await;
    let credential = Arc::new(FakeCredential {
        scopes_asked: Mutex::new(Vec::new()),
    });
    let config = TableStoreConfig {
        endpoint: endpoint.parse().unwrap(),
        table: "galbridge".to_owned(),
        auth: TableAuth::Token(credential.clone()),
        retry: RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        },
    };

    let store = TableStore::open(config)
        .await
        .expect("the throttled create-table is retried");
    assert_eq!(store.current_lease("link-a").await.unwrap(), None);

    let requests = captured.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(
        requests[2].1,
        "/acct/galbridge(PartitionKey='link-a',RowKey='lease')"
    );
    for (_, _, headers) in &requests {
        assert_eq!(headers["authorization"], "Bearer fake-token-123");
        assert_eq!(headers["x-ms-version"], "2019-02-02");
        assert_eq!(headers["accept"], "application/json;odata=nometadata");
    }
    assert_eq!(
        *credential.scopes_asked.lock().unwrap(),
        vec!["https://storage.azure.com/.default".to_owned()]
    );
    assert_eq!(store.request_counts(), (3, 1));
    assert!(!format!("{store:?}").contains("fake-token"));
}

#[tokio::test]
async fn queries_follow_continuation_tokens_past_one_page() {
    let Some(store) = azurite_store().await else {
        return;
    };
    // The service returns at most 1,000 entities per page.
    let records: Vec<_> = (0..1234)
        .map(|n| record(&format!("galbridge:t:{n:05}"), None))
        .collect();
    store
        .put_objects("paged", LINK_SCOPE, &records)
        .await
        .unwrap();
    assert_eq!(
        store.list_objects("paged", LINK_SCOPE).await.unwrap(),
        records
    );
    let (requests, _) = store.request_counts();
    assert!(
        requests >= 1 + 13 + 2,
        "13 batches and at least 2 query pages, got {requests} requests"
    );
}

#[tokio::test]
async fn oversize_records_are_refused_before_anything_is_written() {
    let Some(store) = azurite_store().await else {
        return;
    };
    let fine = record("galbridge:t:fine", Some(serde_json::json!({ "n": 1 })));
    let huge = record(
        "galbridge:t:huge",
        Some(serde_json::json!({ "blob": "x".repeat(600_000) })),
    );
    let err = store
        .put_objects("link", "mbx", &[fine.clone(), huge])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StateError::TooLarge { what, size, .. } if what.contains("galbridge:t:huge") && *size > 1_048_576),
        "{err:?}"
    );
    assert!(
        store.list_objects("link", "mbx").await.unwrap().is_empty(),
        "nothing of a refused call is written"
    );
    store
        .put_objects("link", "mbx", std::slice::from_ref(&fine))
        .await
        .unwrap();
    assert_eq!(store.list_objects("link", "mbx").await.unwrap(), vec![fine]);
}

#[tokio::test]
async fn a_stale_checkpoint_writer_is_refused() {
    let Some(azurite) = azurite::shared() else {
        return;
    };
    install_crypto();
    let config =
        TableStoreConfig::from_connection_string(&azurite.connection_string(), "stalecheck")
            .unwrap();
    let first = TableStore::open(config.clone()).await.unwrap();
    let second = TableStore::open(config).await.unwrap();

    first.load_checkpoint("link").await.unwrap();
    second.load_checkpoint("link").await.unwrap();
    let newer = LinkCheckpoint {
        delta_link: Some("newer".into()),
        ..Default::default()
    };
    second.save_checkpoint("link", &newer).await.unwrap();

    let stale = LinkCheckpoint {
        delta_link: Some("stale".into()),
        ..Default::default()
    };
    let err = first.save_checkpoint("link", &stale).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict { .. }), "{err:?}");
    assert_eq!(first.load_checkpoint("link").await.unwrap(), newer);
    // Having re-read, the first writer may write again.
    first.save_checkpoint("link", &stale).await.unwrap();
    assert_eq!(second.load_checkpoint("link").await.unwrap(), stale);
}

#[tokio::test]
async fn a_wrong_account_key_is_reported_without_the_key() {
    let Some(azurite) = azurite::shared() else {
        return;
    };
    install_crypto();
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={wrong_key};TableEndpoint={}",
        azurite::ACCOUNT,
        azurite.endpoint()
    );
    let config = TableStoreConfig::from_connection_string(&connection, "wrongkey").unwrap();
    let err = TableStore::open(config).await.unwrap_err();
    assert!(
        matches!(&err, StateError::Service { status: 403, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(wrong_key) && !format!("{err:?}").contains(wrong_key));
}

/// A loopback table endpoint that refuses create-table with 403 (as Azure does when the identity's role is scoped
/// to the one table) and answers reads of the table with `read_status`.
async fn table_scoped_role_server(read_status: u16) -> (String, Arc<Captured>) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let captured = Arc::new(Captured::default());
    let state = captured.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let state = state.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            state.requests.lock().expect("lock").push((
                method.clone(),
                path.clone(),
                request.headers().clone(),
            ));
            let refused = r#"{"odata.error":{"code":"AuthorizationPermissionMismatch","message":{"value":"This request is not authorized to perform this operation using this permission."}}}"#;
            if method == "POST" && path.ends_with("/Tables") {
                return (StatusCode::FORBIDDEN, refused).into_response();
            }
            let status = StatusCode::from_u16(read_status).expect("status");
            if status.is_success() {
                (status, r#"{"value":[]}"#).into_response()
            } else {
                (status, refused).into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/acct"), captured)
}

fn token_config(endpoint: &str) -> TableStoreConfig {
    TableStoreConfig {
        endpoint: endpoint.parse().expect("endpoint"),
        table: "galbridge".to_owned(),
        auth: TableAuth::Token(Arc::new(FakeCredential {
            scopes_asked: Mutex::new(Vec::new()),
        })),
        retry: RetryPolicy::default(),
    }
}

#[tokio::test]
async fn a_role_scoped_to_the_table_opens_although_create_table_is_refused() {
    install_crypto();
    let (endpoint, captured) = table_scoped_role_server(200).await;
    TableStore::open(token_config(&endpoint))
        .await
        .expect("the table is readable, so a refused create-table is not an error");
    let requests = captured.requests.lock().unwrap().clone();
    let calls: Vec<(&str, &str)> = requests
        .iter()
        .map(|(method, path, _)| (method.as_str(), path.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![("POST", "/acct/Tables"), ("GET", "/acct/galbridge()")]
    );
}

#[tokio::test]
async fn an_identity_without_access_still_gets_the_403() {
    install_crypto();
    let (endpoint, _captured) = table_scoped_role_server(403).await;
    let err = TableStore::open(token_config(&endpoint)).await.unwrap_err();
    assert!(
        matches!(&err, StateError::Service { status: 403, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("create table"), "{err}");
}
