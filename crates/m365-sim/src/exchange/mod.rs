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
use crate::knobs::{Fault, Service};
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
            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
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

pub(crate) fn exchange_error(status: StatusCode, exception: &str, message: &str) -> Response {
    let short = exception.rsplit('.').next().unwrap_or(exception);
    let code = if status.is_server_error() {
        "InternalServerError"
    } else {
        "BadRequest"
    };
    json_response(
        status,
        &json!({
            "error": {
                "code": code,
                "message": format!("|{exception}|{message}"),
                "details": [{"code": "Context", "target": "", "message": format!("Ex{:06X}|{exception}|{message}", rand::random::<u32>() & 0xFF_FFFF)}],
                "innererror": {"message": message, "type": exception, "@Microsoft.ExchangeService.error.details": [{"code": short}]}
            }
        }),
    )
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
            StatusCode::FORBIDDEN,
            "System.UnauthorizedAccessException",
            "The role assigned to application isn't supported in this scenario.",
        );
    }
    let Some((cmdlet, params)) = parsed else {
        return exchange_error(
            StatusCode::BAD_REQUEST,
            "System.ArgumentException",
            "The request body must be {\"CmdletInput\":{\"CmdletName\":…,\"Parameters\":{…}}}.",
        );
    };

    match state.faults.pick(Service::Exchange, "POST", &cmdlet) {
        Some(Fault::ExchangeTransient { status, exception }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return exchange_error(
                status,
                &format!("Microsoft.Exchange.Data.Storage.{exception}"),
                &format!(
                    "{exception}: the server is busy or a backend is unavailable. Retry later."
                ),
            );
        }
        Some(Fault::Throttle { retry_after_secs }) => {
            let mut r = exchange_error(
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
                StatusCode::SERVICE_UNAVAILABLE,
                "Microsoft.Exchange.Net.ServerBusyException",
                "Service unavailable.",
            );
        }
        Some(Fault::GatewayTimeout) => {
            return exchange_error(
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
    let limit = state.knobs.read().exchange_commands_per_10_s;
    if let Err(t) = state.limits.admit(
        "exchange",
        &format!("{}|{}", claims.appid, tenant.id),
        state.clock.now_ms(),
        10_000,
        limit,
    ) {
        let mut r = exchange_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Microsoft.Exchange.Net.ServerBusyException",
            "The server is busy: the application is over its command budget.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, t.retry_after_secs.into());
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
        Err(e) => exchange_error(e.status, &e.exception, &e.message),
    }
}
