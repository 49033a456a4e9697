//! What each function does with its invocation: `SyncTimer` keeps notification subscriptions alive and runs the due
//! links, `SyncHttp` runs one link or all, `Status` reports, `Notify` receives Graph's change notifications. Every handled outcome is answered to the host with HTTP 200 and the real status in the
//! `res` output; only payloads the host should never send (malformed JSON, unknown functions) get a non-2xx,
//! which marks that invocation failed.

use std::sync::Arc;

use serde::Serialize;
use tracing::{error, info, warn};

use super::envelope::{HttpRequestData, Invocation, InvocationResponse};
use crate::report::{RunOptions, RunOutcome, RunReport};
use crate::sync_service::{ServiceError, SyncService};

/// Binding names, as in `functions/*/function.json`.
pub const TIMER_BINDING: &str = "timer";
pub const HTTP_BINDING: &str = "req";
/// The queue-trigger binding of `PhonesShard` (`Data.shard` holds the message text).
pub const SHARD_BINDING: &str = "shard";

/// The functions this handler serves (folder names under `functions/`).
pub const FUNCTION_NAMES: [&str; 5] = ["SyncTimer", "SyncHttp", "Status", "Notify", "PhonesShard"];

/// The longest validation token echoed back (Graph's are a few hundred characters).
const MAX_VALIDATION_TOKEN: usize = 4096;

/// An answer for the host: the HTTP status *to the host* and the envelope.
pub struct HostAnswer {
    pub host_status: u16,
    pub response: InvocationResponse,
}

impl HostAnswer {
    fn handled(response: InvocationResponse) -> Self {
        Self {
            host_status: 200,
            response,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
}

fn error_body(message: &str) -> ErrorBody<'_> {
    ErrorBody {
        error: message,
        holder: None,
        until: None,
    }
}

/// An invocation payload that could not be parsed: answered with HTTP 400 to the host (a failed invocation; the
/// host should never send it), still in the envelope shape so any caller sees a clear 400.
pub fn malformed(function: &str, reason: &str) -> HostAnswer {
    let message = format!("malformed invocation of {function}: {reason}");
    warn!(function, reason, "Malformed invocation payload.");
    HostAnswer {
        host_status: 400,
        response: InvocationResponse::http(400, &error_body(&message), &[], vec![message.clone()]),
    }
}

/// A function this handler does not serve: HTTP 404 to the host.
pub fn unknown_function(function: &str) -> HostAnswer {
    let message = format!(
        "no function named {function:?}; this handler serves {}",
        FUNCTION_NAMES.join(", ")
    );
    warn!(function, "Invocation of an unknown function.");
    HostAnswer {
        host_status: 404,
        response: InvocationResponse::http(404, &error_body(&message), &[], vec![message.clone()]),
    }
}

/// `SyncTimer`: runs every link that is due. The Logs carry one summary line per run.
pub async fn sync_timer<S: SyncService>(service: Arc<S>, body: &[u8]) -> HostAnswer {
    let invocation = match Invocation::parse(body) {
        Ok(invocation) => invocation,
        Err(reason) => return malformed("SyncTimer", &reason.to_string()),
    };
    let timer = match invocation.timer(TIMER_BINDING) {
        Ok(timer) => timer,
        Err(reason) => return malformed("SyncTimer", &reason.to_string()),
    };
    if timer.is_past_due {
        info!(last = ?timer.last, "Timer is past due; running what is due now.");
    }
    // Subscriptions first (created, renewed), then links marked by notifications, then the links whose interval
    // elapsed (a link a notification just ran is not due again).
    let notified = service.run_notified(chrono::Utc::now(), true).await;
    let mut logs = notified.lines;
    for result in &notified.reports {
        match result {
            Ok(report) => logs.push(report.summary.clone()),
            Err(error) => logs.push(log_service_error(error)),
        }
    }
    let results = service.run_due(chrono::Utc::now()).await;
    if results.is_empty() && notified.reports.is_empty() {
        logs.push("no link is due".to_owned());
    }
    for result in &results {
        match result {
            Ok(report) => logs.push(report.summary.clone()),
            Err(error) => logs.push(log_service_error(error)),
        }
    }
    HostAnswer::handled(InvocationResponse::logs_only(logs))
}

/// `SyncHttp`: `POST /api/sync[/{link}]?dry_run=&full=&allow_deletes=`.
pub async fn sync_http<S: SyncService>(service: Arc<S>, body: &[u8]) -> HostAnswer {
    let request = match Invocation::parse(body)
        .and_then(|invocation| invocation.http_request(HTTP_BINDING))
    {
        Ok(request) => request,
        Err(reason) => return malformed("SyncHttp", &reason.to_string()),
    };
    if request.method != "POST" {
        return method_not_allowed(&request, "POST");
    }
    let options = match run_options(&request) {
        Ok(options) => options,
        Err(message) => return http_answer(400, &error_body(&message), vec![message.clone()]),
    };
    match link_of(&request) {
        Some(link) => match service.run_link(&link, options).await {
            Ok(report) => {
                let status = if report.outcome == RunOutcome::Failed {
                    500
                } else {
                    200
                };
                let logs = vec![report.summary.clone()];
                http_answer(status, &report, logs)
            }
            Err(error) => service_error_answer(&error),
        },
        None => {
            let results = service.run_all(options).await;
            run_all_answer(&results)
        }
    }
}

/// Whether the caller prefers HTML to JSON (`Accept`, with q-values): a browser does (`text/html,…,*/*;q=0.8`),
/// curl (`*/*`) and API clients (`application/json`) do not; a tie goes to JSON.
pub fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    // Weights in thousandths; `None` until a media range names the type exactly.
    let (mut html, mut json): (Option<u16>, Option<u16>) = (None, None);
    let (mut html_wild, mut json_wild) = (0_u16, 0_u16);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                (name.trim() == "q").then(|| q_thousandths(value.trim()))
            })
            .next()
            .unwrap_or(Some(1000))
            .unwrap_or(0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = Some(html.unwrap_or(0).max(q)),
            "application/json" => json = Some(json.unwrap_or(0).max(q)),
            "text/*" => html_wild = html_wild.max(q),
            "application/*" => json_wild = json_wild.max(q),
            "*/*" => {
                html_wild = html_wild.max(q);
                json_wild = json_wild.max(q);
            }
            _ => {}
        }
    }
    // Only an explicit `text/html` asks for the page; JSON may be accepted explicitly or through a wildcard.
    html.is_some_and(|html| html > json.unwrap_or(json_wild))
}

/// An HTTP q-value (`0`, `0.8`, `1.000`) in thousandths; `None` if malformed.
fn q_thousandths(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(fraction),
        "1" if fraction == 0 => Some(1000),
        _ => None,
    }
}

/// `Status`: `GET /api/status`: the status report as JSON, or the status page for a browser (`Accept: text/html`).
pub async fn status<S: SyncService>(service: Arc<S>, body: &[u8]) -> HostAnswer {
    let request = match Invocation::parse(body)
        .and_then(|invocation| invocation.http_request(HTTP_BINDING))
    {
        Ok(request) => request,
        Err(reason) => return malformed("Status", &reason.to_string()),
    };
    if request.method != "GET" {
        return method_not_allowed(&request, "GET");
    }
    match service.status().await {
        Ok(report) => {
            let count = report.links.len();
            let line = format!(
                "status of {count} link{}",
                if count == 1 { "" } else { "s" }
            );
            if prefers_html(request.headers.get("accept").map(String::as_str)) {
                let page = crate::status_page::render(&report, chrono::Utc::now());
                HostAnswer::handled(InvocationResponse::http_text(
                    200,
                    page,
                    "text/html; charset=utf-8",
                    &[
                        (
                            "Content-Security-Policy",
                            crate::status_page::CONTENT_SECURITY_POLICY,
                        ),
                        ("X-Content-Type-Options", "nosniff"),
                        ("Referrer-Policy", "no-referrer"),
                        ("Cache-Control", "no-store"),
                        ("Vary", "Accept"),
                    ],
                    vec![format!("{line} (page)")],
                ))
            } else {
                http_answer(200, &report, vec![line])
            }
        }
        Err(error) => service_error_answer(&error),
    }
}

/// `Notify`: `POST /api/notify`, Graph's change and lifecycle notifications (docs/microsoft-facts.md §11).
/// Anonymous (Graph cannot send a function key): every notification is checked against its subscription's
/// `clientState`, and a notification only ever marks links due, so a forged one can at most cause an early run.
pub async fn notify<S: SyncService>(service: Arc<S>, body: &[u8]) -> HostAnswer {
    let request = match Invocation::parse(body)
        .and_then(|invocation| invocation.http_request(HTTP_BINDING))
    {
        Ok(request) => request,
        Err(reason) => return malformed("Notify", &reason.to_string()),
    };
    if request.method != "POST" {
        return method_not_allowed(&request, "POST");
    }
    if !service.notifications_enabled() {
        let message = "change notifications are off in this configuration";
        return http_answer(404, &error_body(message), vec![message.to_owned()]);
    }
    if let Some(token) = validation_token(&request) {
        // Graph's handshake when a subscription is created: the decoded token back as text/plain with 200, within
        // 10 seconds (docs/microsoft-facts.md §11). No state is read and nothing is built for it.
        if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
            let message = "validationToken must be 1 to 4096 characters";
            return http_answer(400, &error_body(message), vec![message.to_owned()]);
        }
        return HostAnswer::handled(InvocationResponse::http_text(
            200,
            token,
            "text/plain; charset=utf-8",
            &[("X-Content-Type-Options", "nosniff")],
            vec!["validation handshake answered".to_owned()],
        ));
    }
    let Some(payload) = request
        .body
        .as_deref()
        .filter(|body| !body.trim().is_empty())
    else {
        let message = "a notification POST needs a body (or a validationToken query parameter)";
        return http_answer(400, &error_body(message), vec![message.to_owned()]);
    };
    match service.accept_notifications(payload).await {
        Ok(receipt) if receipt.accepted == 0 && receipt.refused > 0 => {
            let line = format!(
                "refused {} notification{}: unknown subscription or clientState mismatch",
                receipt.refused,
                if receipt.refused == 1 { "" } else { "s" }
            );
            http_answer(403, &error_body("refused"), vec![line])
        }
        Ok(receipt) => HostAnswer::handled(InvocationResponse::http_text(
            202,
            String::new(),
            "text/plain; charset=utf-8",
            &[],
            vec![format!(
                "accepted {} notification{}, refused {}",
                receipt.accepted,
                if receipt.accepted == 1 { "" } else { "s" },
                receipt.refused
            )],
        )),
        Err(error) => service_error_answer(&error),
    }
}

/// `validationToken` from the query the host passes (already decoded), else decoded from the URL.
fn validation_token(request: &HttpRequestData) -> Option<String> {
    if let Some(token) = request
        .query
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("validationToken"))
        .map(|(_, value)| value.clone())
    {
        return Some(token);
    }
    let url = url::Url::parse(&request.url).ok()?;
    url.query_pairs()
        .find(|(name, _)| name.eq_ignore_ascii_case("validationToken"))
        .map(|(_, value)| value.into_owned())
}

fn http_answer(status: u16, body: &impl Serialize, logs: Vec<String>) -> HostAnswer {
    HostAnswer::handled(InvocationResponse::http(status, body, &[], logs))
}

fn method_not_allowed(request: &HttpRequestData, allowed: &str) -> HostAnswer {
    let message = format!(
        "method {} is not allowed here; use {allowed}",
        request.method
    );
    HostAnswer::handled(InvocationResponse::http(
        405,
        &error_body(&message),
        &[("Allow", allowed)],
        vec![message.clone()],
    ))
}

/// The link named by the route: `Params.link`, else the last segment of `/api/sync/{link}` in `Url`.
fn link_of(request: &HttpRequestData) -> Option<String> {
    if let Some(link) = request.params.get("link").filter(|link| !link.is_empty()) {
        return Some(link.clone());
    }
    let path = request.path();
    let rest = path.trim_end_matches('/').split("/sync/").nth(1)?;
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8_lossy()
        .into_owned();
    (!decoded.is_empty()).then_some(decoded)
}

/// Query options. Unknown parameters are refused (a typo such as `dryrun=true` must not turn into a real run);
/// `code` is the function key the host already checked, and is ignored (never echoed).
fn run_options(request: &HttpRequestData) -> Result<RunOptions, String> {
    let mut options = RunOptions::default();
    for (name, value) in &request.query {
        let flag = match name.as_str() {
            "dry_run" => &mut options.dry_run,
            "full" => &mut options.full,
            "allow_deletes" => &mut options.allow_deletes,
            "code" => continue,
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}; expected dry_run, full or allow_deletes"
                ));
            }
        };
        *flag = match value.to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(format!(
                    "query parameter {name} must be true or false; got {value:?}"
                ));
            }
        };
    }
    Ok(options)
}

fn service_error_answer(error: &ServiceError) -> HostAnswer {
    let line = log_service_error(error);
    match error {
        ServiceError::UnknownLink { .. } => {
            http_answer(404, &error_body(&error.to_string()), vec![line])
        }
        ServiceError::LeaseHeld { holder, until, .. } => {
            let body = ErrorBody {
                error: &error.to_string(),
                holder: Some(holder),
                until: Some(until.to_rfc3339()),
            };
            http_answer(409, &body, vec![line])
        }
        ServiceError::BadRequest(_) => {
            http_answer(400, &error_body(&error.to_string()), vec![line])
        }
        ServiceError::Internal(_) => {
            // The cause is in the log (and Logs); the HTTP caller gets an opaque message.
            http_answer(
                500,
                &error_body("internal error; see the function app's logs"),
                vec![line],
            )
        }
    }
}

/// `PhonesShard` (queue trigger): one shard of a `personal_contacts` run. Answers 200 when the shard is done (or
/// belongs to a run that is no longer the link's latest), and 500 when it is not (some mailboxes failed, another try
/// holds it, the state store failed): the host then delivers the message again, and after its last try moves it to
/// the poison queue, which `status` reports.
pub async fn phones_shard<S: SyncService>(service: Arc<S>, body: &[u8]) -> HostAnswer {
    let delivery = match Invocation::parse(body) {
        Ok(invocation) => invocation.queue_message(SHARD_BINDING),
        Err(reason) => return malformed("PhonesShard", &reason.to_string()),
    };
    let Some(delivery) = delivery else {
        return malformed(
            "PhonesShard",
            &format!("no `{SHARD_BINDING}` message in Data"),
        );
    };
    // The host counts this delivery; a host that leaves the count out is taken as a first try.
    let (text, dequeue_count) = (delivery.text, delivery.dequeue_count.max(1));
    match service.run_shard(&text, dequeue_count).await {
        Ok(report) => {
            let settled = matches!(report.end.as_str(), "done" | "superseded");
            if settled {
                info!(link = %report.link, shard = report.shard, end = %report.end, "{}", report.summary);
            } else {
                warn!(link = %report.link, shard = report.shard, end = %report.end, "{}", report.summary);
            }
            let mut logs = vec![report.summary.clone()];
            logs.extend(
                report
                    .failures
                    .iter()
                    .take(20)
                    .map(|failure| format!("{}: {}", failure.kind, failure.reason)),
            );
            HostAnswer {
                host_status: if settled { 200 } else { 500 },
                response: InvocationResponse {
                    outputs: Default::default(),
                    logs,
                    return_value: serde_json::to_value(&report).ok(),
                },
            }
        }
        Err(error) => {
            let line = log_service_error(&error);
            HostAnswer {
                host_status: 500,
                response: InvocationResponse::logs_only(vec![line]),
            }
        }
    }
}

fn log_service_error(error: &ServiceError) -> String {
    match error {
        ServiceError::Internal(_) => error!(error = %error, "Run failed to start."),
        _ => warn!(error = %error, "Run refused."),
    }
    error.to_string()
}

#[derive(Serialize)]
struct RunAllBody<'a> {
    reports: Vec<&'a RunReport>,
    errors: Vec<ErrorBody<'a>>,
}

fn run_all_answer(results: &[Result<RunReport, ServiceError>]) -> HostAnswer {
    let mut logs = Vec::new();
    let mut failed = false;
    let mut error_texts = Vec::new();
    for result in results {
        match result {
            Ok(report) => {
                failed |= report.outcome == RunOutcome::Failed;
                logs.push(report.summary.clone());
            }
            Err(error) => {
                failed |= matches!(error, ServiceError::Internal(_));
                logs.push(log_service_error(error));
                error_texts.push(error.to_string());
            }
        }
    }
    let body = RunAllBody {
        reports: results
            .iter()
            .filter_map(|result| result.as_ref().ok())
            .collect(),
        errors: error_texts.iter().map(|text| error_body(text)).collect(),
    };
    http_answer(if failed { 500 } else { 200 }, &body, logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers shard deliveries with the `end` named by the message text.
    struct ShardEnds;

    impl SyncService for ShardEnds {
        async fn run_link(
            &self,
            _link: &str,
            _options: RunOptions,
        ) -> Result<RunReport, ServiceError> {
            Err(ServiceError::BadRequest("not here".into()))
        }
        async fn run_all(&self, _options: RunOptions) -> Vec<Result<RunReport, ServiceError>> {
            Vec::new()
        }
        async fn run_due(
            &self,
            _now: chrono::DateTime<chrono::Utc>,
        ) -> Vec<Result<RunReport, ServiceError>> {
            Vec::new()
        }
        async fn status(&self) -> Result<crate::report::StatusReport, ServiceError> {
            Err(ServiceError::BadRequest("not here".into()))
        }
        async fn run_shard(
            &self,
            message: &str,
            dequeue_count: u32,
        ) -> Result<crate::report::ShardReport, ServiceError> {
            if message == "unknown" {
                return Err(ServiceError::BadRequest("no link".into()));
            }
            Ok(crate::report::ShardReport {
                link: "l".into(),
                generation: "g".into(),
                shard: 0,
                end: message.to_owned(),
                dequeue_count,
                mailboxes: 1,
                mailboxes_done: 0,
                applied: Default::default(),
                failures: Vec::new(),
                summary: format!("l: shard 0: {message}"),
            })
        }
    }

    #[tokio::test]
    async fn a_shard_that_is_not_done_is_answered_with_a_failure_so_the_host_retries_it() {
        let service = Arc::new(ShardEnds);
        for (end, status) in [
            ("done", 200),
            ("superseded", 200),
            ("incomplete", 500),
            ("busy", 500),
            ("failed", 500),
            ("unknown", 500),
        ] {
            let body = serde_json::json!({"Data": {"shard": end}, "Metadata": {"DequeueCount": 1}});
            let answer = phones_shard(service.clone(), body.to_string().as_bytes()).await;
            assert_eq!(answer.host_status, status, "{end}");
        }
        assert_eq!(phones_shard(service, b"{}").await.host_status, 400);
    }

    fn request(url: &str, params: &[(&str, &str)], query: &[(&str, &str)]) -> HttpRequestData {
        HttpRequestData {
            url: url.to_owned(),
            method: "POST".to_owned(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..HttpRequestData::default()
        }
    }

    #[test]
    fn link_comes_from_params_then_from_the_url() {
        assert_eq!(
            link_of(&request("https://x/api/sync/other", &[("link", "a")], &[])).as_deref(),
            Some("a")
        );
        assert_eq!(
            link_of(&request("https://x/api/sync/acme-to-b?full=true", &[], &[])).as_deref(),
            Some("acme-to-b")
        );
        assert_eq!(
            link_of(&request(
                "https://x/api/sync/m.a-to-b/",
                &[("link", "")],
                &[]
            ))
            .as_deref(),
            Some("m.a-to-b")
        );
        assert_eq!(link_of(&request("https://x/api/sync", &[], &[])), None);
    }

    #[test]
    fn browsers_get_the_page_and_api_clients_json() {
        let chrome =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(prefers_html(Some(chrome)));
        assert!(prefers_html(Some("text/html")));
        assert!(prefers_html(Some("application/json;q=0.5, text/html")));
        assert!(!prefers_html(None));
        assert!(!prefers_html(Some("*/*")));
        assert!(!prefers_html(Some("application/json")));
        assert!(
            !prefers_html(Some("application/json, text/html")),
            "a tie is JSON"
        );
        assert!(!prefers_html(Some("text/html;q=0.2, */*")));
        assert!(!prefers_html(Some("text/*")));
        assert!(prefers_html(Some(
            "text/html;q=0.9, application/json;q=0.85"
        )));
        assert!(!prefers_html(Some("text/html;q=0, */*;q=0.1")));
        assert!(!prefers_html(Some("text/html;q=bogus, */*;q=0.1")));
        assert_eq!(q_thousandths("0.8"), Some(800));
        assert_eq!(q_thousandths("1"), Some(1000));
        assert_eq!(q_thousandths("0.125"), Some(125));
        assert_eq!(q_thousandths("1.5"), None);
    }

    #[test]
    fn the_validation_token_comes_from_the_decoded_query_else_from_the_url() {
        let from_query = request(
            "https://x/api/notify?validationToken=ignored",
            &[],
            &[("validationToken", "Validation: a b+c")],
        );
        assert_eq!(
            validation_token(&from_query).as_deref(),
            Some("Validation: a b+c")
        );
        let from_url = request(
            "https://x/api/notify?validationToken=Validation%3A%20a%20b%2Bc",
            &[],
            &[],
        );
        assert_eq!(
            validation_token(&from_url).as_deref(),
            Some("Validation: a b+c")
        );
        assert_eq!(
            validation_token(&request("https://x/api/notify", &[], &[])),
            None
        );
    }

    #[test]
    fn query_options_are_strict_booleans_and_ignore_the_function_key() {
        let options = run_options(&request(
            "",
            &[],
            &[("dry_run", "true"), ("full", "0"), ("code", "k3y")],
        ))
        .unwrap();
        assert_eq!(
            options,
            RunOptions {
                dry_run: true,
                full: false,
                allow_deletes: false
            }
        );
        assert_eq!(
            run_options(&request("", &[], &[("dry_run", "maybe")])).unwrap_err(),
            "query parameter dry_run must be true or false; got \"maybe\""
        );
        assert!(run_options(&request("", &[], &[("dryrun", "true")])).is_err());
    }
}
