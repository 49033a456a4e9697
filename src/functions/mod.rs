//! The Azure Functions custom handler (`galbridge serve`): an HTTP server on `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`
//! that answers the host's readiness probe on `/` and its invocations on `POST /{FunctionName}`
//! (docs/microsoft-facts.md §7). Payload parsing lives in [`envelope`], per-function behaviour in [`handlers`].
//!
//! Runs execute in their own task, so a caller that hangs up does not cancel a run half-way; on SIGTERM the server
//! stops accepting, then waits (up to a grace period) for in-flight runs to finish and checkpoint.

pub mod envelope;
pub mod handlers;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use tokio::sync::Notify;
use tracing::{Instrument, error, info, info_span, warn};

use crate::sync_service::SyncService;
use handlers::HostAnswer;

/// The header carrying the host's invocation id.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// Counts invocations in flight so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held while an invocation runs.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight, or `limit` passes; returns whether it became idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

struct App<S> {
    service: Arc<S>,
    in_flight: Arc<InFlight>,
}

impl<S> Clone for App<S> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

/// The handler's routes, for `serve` and for tests (`tower::ServiceExt::oneshot`).
pub fn router<S: SyncService>(service: Arc<S>, in_flight: Arc<InFlight>) -> Router {
    Router::new()
        .route("/", any(ready))
        .route("/{function}", post(invoke::<S>))
        .with_state(App { service, in_flight })
}

/// The host's readiness probe.
async fn ready() -> &'static str {
    "ready"
}

async fn invoke<S: SyncService>(
    State(app): State<App<S>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let invocation_id = headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span = info_span!("invocation", invocation_id = %invocation_id, function = %function);
    let guard = app.in_flight.enter();
    let service = Arc::clone(&app.service);
    let task = tokio::spawn(
        async move {
            let _guard = guard;
            let started = std::time::Instant::now();
            let answer = dispatch(service, &function, &body).await;
            info!(
                host_status = answer.host_status,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "Invocation done."
            );
            answer
        }
        .instrument(span),
    );
    match task.await {
        Ok(answer) => answer_to_host(answer),
        Err(join_error) => {
            error!(invocation_id = %invocation_id, error = %join_error, "Invocation task failed.");
            (StatusCode::INTERNAL_SERVER_ERROR, "invocation failed").into_response()
        }
    }
}

/// Function names are matched ignoring case, as the host treats them.
async fn dispatch<S: SyncService>(service: Arc<S>, function: &str, body: &[u8]) -> HostAnswer {
    if function.eq_ignore_ascii_case("SyncTimer") {
        handlers::sync_timer(service, body).await
    } else if function.eq_ignore_ascii_case("SyncHttp") {
        handlers::sync_http(service, body).await
    } else if function.eq_ignore_ascii_case("Status") {
        handlers::status(service, body).await
    } else if function.eq_ignore_ascii_case("Notify") {
        handlers::notify(service, body).await
    } else if function.eq_ignore_ascii_case("PhonesShard") {
        handlers::phones_shard(service, body).await
    } else {
        handlers::unknown_function(function)
    }
}

fn answer_to_host(answer: HostAnswer) -> Response {
    let status =
        StatusCode::from_u16(answer.host_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(answer.response)).into_response()
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// 0 picks a free port (printed on stdout as `listening on http://127.0.0.1:PORT`).
    pub port: u16,
    /// After SIGTERM, how long in-flight runs may take to finish before the process exits anyway.
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Server(#[source] std::io::Error),
}

/// Serves until `shutdown` resolves, then shuts down gracefully (bounded by `options.shutdown_grace`).
pub async fn serve<S: SyncService>(
    service: S,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)))
            .await
            .map_err(|source| ServeError::Bind {
                port: options.port,
                source,
            })?;
    let address = listener.local_addr().map_err(ServeError::Server)?;
    let in_flight = Arc::new(InFlight::default());
    let service = Arc::new(service);
    let app = router(Arc::clone(&service), Arc::clone(&in_flight));
    let stopping = Arc::new(AtomicBool::new(false));
    if service.notifications_enabled() {
        tokio::spawn(run_notified_loop(
            Arc::clone(&service),
            Arc::clone(&in_flight),
            Arc::clone(&stopping),
        ));
    }
    let stop = Arc::new(Notify::new());
    let stop_signal = Arc::clone(&stop);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop_signal.notified().await });
    let mut server = std::pin::pin!(server.into_future());
    // Tests and operators read this line to find the port (port 0 = any free port).
    println!("listening on http://{address}");
    info!(%address, "Custom handler listening.");

    tokio::select! {
        result = &mut server => return result.map_err(ServeError::Server),
        () = shutdown => {}
    }
    info!(
        in_flight = in_flight.count(),
        grace_secs = options.shutdown_grace.as_secs(),
        "Shutting down: no new invocations."
    );
    stopping.store(true, Ordering::SeqCst);
    stop.notify_one();
    let deadline = tokio::time::Instant::now() + options.shutdown_grace;
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(result) => result.map_err(ServeError::Server)?,
        Err(_) => warn!("Grace period over with connections still open."),
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !in_flight.wait_idle(remaining).await {
        warn!(
            in_flight = in_flight.count(),
            "Grace period over with runs in flight; they resume from their checkpoint next time."
        );
    }
    info!("Stopped.");
    Ok(())
}

/// The serving process's half of change notifications: once a second, run the links that notifications marked
/// due once their debounce has passed (`SyncService::run_notified`, which returns at once when nothing is due).
/// A pass counts as in flight, so shutdown waits for a run it started; no pass starts after shutdown began.
async fn run_notified_loop<S: SyncService>(
    service: Arc<S>,
    in_flight: Arc<InFlight>,
    stopping: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let _guard = in_flight.enter();
        let runs = service.run_notified(chrono::Utc::now(), false).await;
        for line in &runs.lines {
            info!(line = %line, "Subscription maintenance.");
        }
        for result in &runs.reports {
            match result {
                Ok(report) => {
                    info!(link = %report.link, summary = %report.summary, "Notified run done.")
                }
                Err(error) => warn!(error = %error, "Notified run refused."),
            }
        }
    }
}

/// Resolves on SIGTERM (how the Functions host and most supervisors stop a process) or Ctrl-C.
///
/// The SIGTERM handler is installed when this is *called*, not when the future is first polled: `serve` answers
/// the readiness probe from other tasks as soon as it listens, and a supervisor that stops the process right after
/// readiness must not find the default action (immediate death, no checkpoint) still in place. Call it inside the
/// runtime, before `serve`.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        {
            match terminate {
                Ok(mut terminate) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(error) => {
                    warn!(error = %error, "Cannot watch SIGTERM; only Ctrl-C stops the server.");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
