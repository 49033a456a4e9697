//! Graceful shutdown of `serve`: after the stop signal no new connection is accepted, and a run in flight
//! finishes (and answers) before `serve` returns, within the grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use galbridge::functions::{ServeOptions, serve};
use galbridge::report::{RunOptions, RunReport, StatusReport};
use galbridge::sync_service::{ServiceError, SyncService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A service whose timer run takes a while, and which notes when it started and when it finished.
struct SlowService {
    started: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

impl SyncService for SlowService {
    async fn run_link(&self, _: &str, _: RunOptions) -> Result<RunReport, ServiceError> {
        Err(ServiceError::BadRequest("not used".to_owned()))
    }
    async fn run_all(&self, _: RunOptions) -> Vec<Result<RunReport, ServiceError>> {
        vec![]
    }
    async fn run_due(&self, _: DateTime<Utc>) -> Vec<Result<RunReport, ServiceError>> {
        self.started.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.finished.store(true, Ordering::SeqCst);
        vec![]
    }
    async fn status(&self) -> Result<StatusReport, ServiceError> {
        Err(ServiceError::BadRequest("not used".to_owned()))
    }
}

#[tokio::test]
async fn a_run_in_flight_finishes_before_serve_returns() {
    // Arrange: a free port, the server, a stop signal we control.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = SlowService {
        started: Arc::clone(&started),
        finished: Arc::clone(&finished),
    };
    let options = ServeOptions {
        port,
        shutdown_grace: Duration::from_secs(5),
    };
    let server = tokio::spawn(serve(service, options, async {
        let _ = stopped.await;
    }));
    let mut stream = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => break stream,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };

    // Act: start a timer invocation, then ask the server to stop while it runs.
    let body = r#"{"Data":{"timer":{"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{}}"#;
    let request = format!(
        "POST /SyncTimer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Stop only once the run is really in flight (a loaded machine may take a while to get there).
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();

    // Assert: the run completed and answered; the server stopped cleanly and refuses new connections.
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#""Logs":["no link is due"]"#),
        "{response}"
    );
    assert!(finished.load(Ordering::SeqCst));
    assert!(result.is_ok());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
}
