//! Listeners and the request pipeline every service shares: latency model, injected faults, the directory
//! resource-unit budget and the per-app request limit (Graph), request counters.
//! One HTTPS listener serves all services (their real paths never collide); a plain-HTTP one serves the managed
//! identity endpoint, as App Service does on http://localhost.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::knobs::{Fault, Service};
use crate::respond::{DropConnection, EndpointLabel, graph_error, throttled};
use crate::state::SimState;

tokio::task_local! {
    static HELD_PERMITS: RefCell<Vec<Box<dyn Send>>>;
}

/// Keeps a slot (Outlook mailbox, Exchange concurrency) until the current request's response is ready, modelled
/// latency included (dropped at once outside a request).
pub(crate) fn hold_permit(permit: impl Send + 'static) {
    let _ = HELD_PERMITS.try_with(|held| held.borrow_mut().push(Box::new(permit)));
}

/// Latency, faults and counting, applied to every routed request (inner `$batch` requests included).
pub(crate) async fn pipeline(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let service = Service::of_path(&path);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let is_batch_inner = req
        .extensions()
        .get::<crate::graph::batch::InnerRequest>()
        .is_some();

    let latency = if service == Service::Control {
        crate::knobs::Latency::default()
    } else {
        state.knobs.read().latency.for_service(service)
    };
    let jitter = if latency.jitter_ms > 0 {
        rand::rng().random_range(0..=latency.jitter_ms)
    } else {
        0
    };
    let delay = Duration::from_millis(latency.fixed_ms + jitter);

    // Exchange picks its faults by cmdlet name, inside the handler.
    let fault = if matches!(service, Service::Control | Service::Exchange) {
        None
    } else {
        state.faults.pick(service, &method, &path)
    };
    let response = match fault {
        Some(Fault::Throttle { retry_after_secs }) => throttled(retry_after_secs, "Application"),
        Some(Fault::ServiceUnavailable { retry_after_secs }) => {
            let mut r = graph_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                "The service is temporarily unavailable.",
            );
            if let Some(secs) = retry_after_secs {
                r.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            r
        }
        Some(Fault::GatewayTimeout) => graph_error(
            StatusCode::GATEWAY_TIMEOUT,
            "UnknownError",
            "Gateway timeout.",
        ),
        // Inside `$batch` there is no connection of its own to drop: Graph reports the lost backend call as an
        // inner 500 (status and code are a guess; the outer response stays 200).
        Some(Fault::DropConnection) if is_batch_inner => graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UnknownError",
            "The backend connection was closed.",
        ),
        Some(Fault::DropConnection) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.extensions_mut().insert(DropConnection);
            r
        }
        other => 'served: {
            if let Some(Fault::Slow { delay_ms }) = other {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            if service == Service::Graph
                && let Err(refused) =
                    state
                        .app_budget
                        .admit(&state, route.as_deref(), req.headers())
            {
                break 'served refused;
            }
            let charged = if service == Service::Graph && state.knobs.read().directory_budget {
                match state.directory_budget.charge(
                    &state,
                    req.method(),
                    route.as_deref(),
                    req.uri().query(),
                    req.headers(),
                ) {
                    Ok(charged) => charged,
                    Err(refused) => break 'served refused,
                }
            } else {
                None
            };
            // The handler's Outlook slots stay held while the modelled service time elapses.
            let mut response = HELD_PERMITS
                .scope(RefCell::new(Vec::new()), async move {
                    let response = next.run(req).await;
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    response
                })
                .await;
            if let Some(charged) = &charged {
                crate::graph::budget::annotate(&mut response, charged);
            }
            if matches!(other, Some(Fault::Malformed)) {
                // The body is cut in half: a client sees invalid JSON (or a short image) with a success status.
                let (parts, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let cut = bytes.len() / 2;
                Response::from_parts(parts, Body::from(bytes.slice(..cut)))
            } else {
                response
            }
        }
    };

    let endpoint = match response.extensions().get::<EndpointLabel>() {
        Some(label) => label.0.clone(),
        None => format!("{method} {}", route.as_deref().unwrap_or("(unrouted)")),
    };
    state
        .counters
        .record(service, &endpoint, response.status().as_u16());
    response
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        let response = router
                            .oneshot(req.map(Body::new))
                            .await
                            .unwrap_or_else(|never| match never {});
                        if response.extensions().get::<DropConnection>().is_some() {
                            return Err(DroppedByFault);
                        }
                        Ok::<_, DroppedByFault>(response)
                    }
                });
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! { _ = conn => {}, _ = conn_shutdown.changed() => {} }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! { _ = conn => {}, _ = conn_shutdown.changed() => {} }
                }
            }
        });
    }
}

/// The error that makes hyper close a connection mid-request (an injected dropped connection).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub(crate) struct DroppedByFault;
