//! Exchange Online's `InvokeCommand` REST endpoint (what ExchangeOnlineManagement v3 uses):
//! `POST /adminapi/beta/{tenant}/InvokeCommand` with `{"CmdletInput":{"CmdletName","Parameters"}}`, answered with
//! `{"@odata.context","value":[…]}` and `@odata.nextLink` pages (POST the same body to it). Errors use the shape the
//! module sees: `{"error":{"code","message","details":[…],"innererror":{"type"}}}` with the exception type name.

mod cmdlets;
pub(crate) mod opath;
mod recipients;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value, json};

use crate::auth::AUDIENCE_EXCHANGE;
use crate::auth::tokens::bearer;
use crate::knobs::{ExchangeErrorShape, Fault, Service};
use crate::respond::{DropConnection, EndpointLabel, json_response};
use crate::state::SimState;
use crate::tenant::Tenant;

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/adminapi/beta/{tenant}/InvokeCommand", post(invoke))
}

/// A cmdlet failure: HTTP status, .NET exception type, message.
pub(crate) struct CmdletError {
    pub(crate) status: StatusCode,
    pub(crate) exception: String,
    pub(crate) message: String,
}

impl CmdletError {
    pub(crate) fn bad(exception: &str, message: impl Into<String>) -> Self {
        CmdletError {
            status: StatusCode::BAD_REQUEST,
            exception: exception.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(identity: &str, tenant: &Tenant) -> Self {
        CmdletError::bad(
            NOT_FOUND,
            format!(
                "The operation couldn't be performed because object '{identity}' couldn't be found on '{}'.",
                server_name(tenant)
            ),
        )
    }
}

pub(crate) fn server_name(tenant: &Tenant) -> String {
    format!(
        "{}A01DC001.{}",
        tenant.name.to_ascii_uppercase(),
        "PROD.OUTLOOK.COM"
    )
}

pub(crate) const NOT_FOUND: &str =
    "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException";
/// The generic exception the `details` error shape puts where the real one would be.
pub(crate) const ODATA_SERVICE_EXCEPTION: &str =
    "Microsoft.Exchange.Admin.OData.Core.ODataServiceException";
const ERROR_EXECUTING_CMDLET: &str = "Error executing cmdlet";

/// Every Exchange error answer, in the shape the knobs select (`exchange_error_shape`); not-found answers take the
/// status of `exchange_not_found_status` (400 or 404).
pub(crate) fn exchange_error(
    state: &SimState,
    status: StatusCode,
    exception: &str,
    message: &str,
) -> Response {
    let (shape, not_found_status) = {
        let k = state.knobs.read();
        (k.exchange_error_shape, k.exchange_not_found_status)
    };
    let status = if exception == NOT_FOUND && status == StatusCode::BAD_REQUEST {
        StatusCode::from_u16(not_found_status).unwrap_or(StatusCode::BAD_REQUEST)
    } else {
        status
    };
    json_response(status, &error_body(shape, status, exception, message))
}

fn error_body(
    shape: ExchangeErrorShape,
    status: StatusCode,
    exception: &str,
    message: &str,
) -> Value {
    let short = exception.rsplit('.').next().unwrap_or(exception);
    let code = if status.is_server_error() {
        "InternalServerError"
    } else {
        "BadRequest"
    };
    let detail = format!(
        "Ex{:06X}|{exception}|{message}",
        rand::random::<u32>() & 0xFF_FFFF
    );
    match shape {
        ExchangeErrorShape::Message => json!({
            "error": {
                "code": code,
                "message": format!("|{exception}|{message}"),
                "details": [{"code": "Context", "target": "", "message": detail}],
                "innererror": {"message": message, "type": exception, "@Microsoft.ExchangeService.error.details": [{"code": short}]}
            }
        }),
        ExchangeErrorShape::Details => json!({
            "error": {
                "code": code,
                "message": ERROR_EXECUTING_CMDLET,
                "details": [{"code": "Context", "target": "", "message": detail}],
                "innererror": {
                    "message": ERROR_EXECUTING_CMDLET,
                    "type": ODATA_SERVICE_EXCEPTION,
                    "stacktrace": "",
                    "internalexception": {"message": message, "type": exception, "stacktrace": ""}
                }
            }
        }),
    }
}

/// The exception named by rate-limit and concurrency refusals [guess: EXO's is unpublished].
pub(crate) const THROTTLING: &str = "Microsoft.Exchange.Net.ThrottlingException";

/// Exchange's limits per (app, tenant), in this order: concurrency (`exchange_concurrency_per_tenant`; the slot is
/// held until the response is ready, modelled latency included), the fixed-window rate limit
/// (`exchange_rate_limit`), the sliding 10 s budget (`exchange_commands_per_10_s`). A request refused by one limit
/// is not counted by the later ones.
fn admit(state: &SimState, key: &str) -> Result<(), Response> {
    let (concurrency, rate, per_10_s, retry_after) = {
        let k = state.knobs.read();
        (
            k.exchange_concurrency_per_tenant,
            k.exchange_rate_limit,
            k.exchange_commands_per_10_s,
            k.retry_after_secs,
        )
    };
    let refuse = |exception: &str, message: &str, retry_after_secs: u64| {
        let mut r = exchange_error(state, StatusCode::TOO_MANY_REQUESTS, exception, message);
        r.headers_mut()
            .insert(header::RETRY_AFTER, retry_after_secs.into());
        r
    };
    match state
        .limits
        .acquire_concurrent("exchange-concurrency", key, concurrency, retry_after)
    {
        Ok(Some(permit)) => crate::server::hold_permit(permit),
        Ok(None) => {}
        Err(t) => {
            return Err(refuse(
                THROTTLING,
                "Too many concurrent requests. Retry later.",
                t.retry_after_secs,
            ));
        }
    }
    let now = state.clock.now_ms();
    if let Some(rate) = rate {
        let window_ms =
            i64::try_from(rate.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        if let Err(t) =
            state
                .limits
                .admit_fixed("exchange-rate", key, now, window_ms.max(1), rate.commands)
        {
            return Err(refuse(
                THROTTLING,
                "Too many requests. Retry later.",
                t.retry_after_secs,
            ));
        }
    }
    if let Err(t) = state.limits.admit("exchange", key, now, 10_000, per_10_s) {
        return Err(refuse(
            "Microsoft.Exchange.Net.ServerBusyException",
            "The server is busy: the application is over its command budget.",
            t.retry_after_secs,
        ));
    }
    Ok(())
}

/// A page of cmdlet output for a tenant.
pub(crate) struct Output {
    pub(crate) values: Vec<Value>,
    pub(crate) next_skip: Option<String>,
}

async fn invoke(
    State(state): State<Arc<SimState>>,
    Path(tenant_key): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let parsed: Option<(String, Map<String, Value>)> =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
            let input = v.get("CmdletInput")?;
            let name = input.get("CmdletName")?.as_str()?.to_string();
            let params = input
                .get("Parameters")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            Some((name, params))
        });
    let label = parsed
        .as_ref()
        .map_or_else(|| "(malformed)".to_string(), |(n, _)| n.clone());
    let mut resp = run(&state, &tenant_key, &headers, raw.as_deref(), parsed).await;
    resp.extensions_mut().insert(EndpointLabel(label));
    resp
}

async fn run(
    state: &SimState,
    tenant_key: &str,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    parsed: Option<(String, Map<String, Value>)>,
) -> Response {
    let unauthorized = |msg: &str| {
        let mut r = exchange_error(
            state,
            StatusCode::UNAUTHORIZED,
            "System.UnauthorizedAccessException",
            msg,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer authorization_uri=\"https://login.microsoftonline.com/common\"",
            ),
        );
        r
    };
    let Some(token) = bearer(headers) else {
        return unauthorized("Access token is missing.");
    };
    let claims = match state
        .signer
        .verify(token, AUDIENCE_EXCHANGE, state.clock.now_secs())
    {
        Ok(c) => c,
        Err(e) => return unauthorized(&e.to_string()),
    };
    let Some(tenant) = state.tenant(tenant_key).cloned() else {
        return exchange_error(
            state,
            StatusCode::NOT_FOUND,
            "Microsoft.Exchange.Data.Directory.TenantNotFoundException",
            &format!("Tenant '{tenant_key}' was not found."),
        );
    };
    if tenant.id != claims.tid || claims.appid != tenant.app.client_id {
        return unauthorized("The token is not valid for this organization.");
    }
    if !tenant.app.has_permission(&["Exchange.ManageAsApp"]) {
        return exchange_error(
            state,
            StatusCode::FORBIDDEN,
            "System.UnauthorizedAccessException",
            "The role assigned to application isn't supported in this scenario.",
        );
    }
    let Some((cmdlet, params)) = parsed else {
        return exchange_error(
            state,
            StatusCode::BAD_REQUEST,
            "System.ArgumentException",
            "The request body must be {\"CmdletInput\":{\"CmdletName\":…,\"Parameters\":{…}}}.",
        );
    };

    match state.faults.pick(Service::Exchange, "POST", &cmdlet) {
        Some(Fault::ExchangeTransient { status, exception }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return exchange_error(
                state,
                status,
                &format!("Microsoft.Exchange.Data.Storage.{exception}"),
                &format!(
                    "{exception}: the server is busy or a backend is unavailable. Retry later."
                ),
            );
        }
        Some(Fault::Throttle { retry_after_secs }) => {
            let mut r = exchange_error(
                state,
                StatusCode::TOO_MANY_REQUESTS,
                "Microsoft.Exchange.Net.ServerBusyException",
                "The server is busy. Retry later.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
            return r;
        }
        Some(Fault::ServiceUnavailable { .. }) => {
            return exchange_error(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Microsoft.Exchange.Net.ServerBusyException",
                "Service unavailable.",
            );
        }
        Some(Fault::GatewayTimeout) => {
            return exchange_error(
                state,
                StatusCode::GATEWAY_TIMEOUT,
                "System.TimeoutException",
                "Gateway timeout.",
            );
        }
        Some(Fault::DropConnection) => {
            let mut r = Response::new(Body::empty());
            r.extensions_mut().insert(DropConnection);
            return r;
        }
        Some(Fault::Slow { delay_ms }) => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await
        }
        Some(Fault::Malformed) => {
            return Response::new(Body::from(
                "{\"@odata.context\":\"https://outlook.office365.com/adminapi/beta/$metadata#",
            ));
        }
        None => {}
    }
    if let Err(r) = admit(state, &format!("{}|{}", claims.appid, tenant.id)) {
        return r;
    }
    let page_size = crate::graph::prefer_value(headers, "odata.maxpagesize")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let skip = crate::graph::odata::query_options(raw_query)
        .get("skiptoken")
        .cloned();
    match cmdlets::dispatch(state, &tenant, &cmdlet, &params, page_size, skip.as_deref()) {
        Ok(out) => {
            let mut m = Map::new();
            m.insert(
                "@odata.context".into(),
                json!(state.url("/adminapi/beta/$metadata#Collection(Exchange.GenericHashTable)")),
            );
            if let Some(skip) = out.next_skip {
                m.insert(
                    "@odata.nextLink".into(),
                    json!(state.url(&format!(
                        "/adminapi/beta/{tenant_key}/InvokeCommand?$skiptoken={skip}"
                    ))),
                );
            }
            m.insert("value".into(), Value::Array(out.values));
            json_response(StatusCode::OK, &Value::Object(m))
        }
        Err(e) => exchange_error(state, e.status, &e.exception, &e.message),
    }
}
