//! Microsoft Graph v1.0 reads: users (delta, list, get), group transitive members, org contacts (delta), user photos,
//! and the paging every collection shares (`@odata.nextLink` until `@odata.deltaLink`).
//!
//! Shapes Microsoft leaves open stay `serde_json::Value` (the engine maps attributes by Graph name). Delta rules from
//! docs/microsoft-facts.md §2: query options live in the token, so a stored deltaLink is replayed as is; `$deltaToken=latest`
//! starts from now; an expired token answers `410 Gone` or a `syncStateNotFound`-style 40x, which becomes
//! [`GraphError::DeltaExpired`] so the engine falls back to a full read. Mailbox resources are in `mailbox.rs`,
//! `$batch` in `batch.rs`.

use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::Value;
use url::Url;

use super::http::{ApiClient, ApiRequest, ApiResponse, HttpError, redact_query};
use super::limiter::LimiterSet;
use super::pacer::{AppPacer, GRAPH_REQUESTS_PER_10_SECONDS, GraphAppPacing, SharedBudget};

/// Characters left as they are in one path segment (ids, UPNs).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// Error codes Graph uses, besides 410 Gone, for a delta or sync token it no longer knows.
const EXPIRED_TOKEN_CODES: [&str; 5] = [
    "syncstatenotfound",
    "syncstateinvalid",
    "resyncrequired",
    "fullsyncrequired",
    "badrequest_expiredsynctoken",
];

/// Errors of Graph calls.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("Graph {method} {path} answered {status}{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        method: String,
        path: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The delta (or sync) token expired: read everything again (docs/architecture.md, "One sync run", step 3).
    #[error("the delta token of {path} expired; a full read is needed")]
    DeltaExpired { path: String },
    /// Outlook refuses REST for this mailbox (on-premises, inactive, not licensed): report and skip it.
    #[error(
        "mailbox {mailbox} is not enabled for the REST API (MailboxNotEnabledForRESTAPI); skipped"
    )]
    MailboxNotEnabledForRest { mailbox: String },
    #[error("Graph {path}: unexpected response body: {message}")]
    Decode { path: String, message: String },
    #[error("invalid Graph URL {url}: {message}")]
    BadUrl { url: String, message: String },
}

impl GraphError {
    /// The HTTP status of an API error (404, 429, …), if it is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for a 404 (the object does not exist).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when the service was still throttling after every retry.
    pub fn is_throttled(&self) -> bool {
        matches!(self.status(), Some(429 | 503 | 504))
    }
}

/// Where a delta read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaStart {
    /// A full initial round: every object, then a deltaLink.
    Full,
    /// `$deltaToken=latest`: no objects, just a deltaLink from now.
    Latest,
    /// Resume from a stored `@odata.deltaLink`.
    Resume(String),
}

/// One page of a collection or delta read.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Value>,
    /// Set on the last page of a delta round: store it and resume from it next time.
    pub delta_link: Option<String>,
}

/// A paged read: call [`PageStream::next_page`] until it returns `None`. Memory stays bounded by one page.
#[derive(Debug)]
pub struct PageStream {
    client: GraphClient,
    next: Option<Url>,
    minimal: bool,
    mailbox: Option<String>,
    extra_headers: Vec<(&'static str, String)>,
}

impl PageStream {
    /// The next page, or `None` when the read is complete.
    pub async fn next_page(&mut self) -> Result<Option<Page>, GraphError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let mut request = ApiRequest::get(url.clone());
        for (name, value) in &self.extra_headers {
            request = request.header(name, value.clone());
        }
        if self.minimal {
            request = request.header("Prefer", "return=minimal");
        }
        let response = self
            .client
            .send_for(request, self.mailbox.as_deref())
            .await?;
        if is_expired_token(&response) {
            return Err(GraphError::DeltaExpired {
                path: url.path().to_owned(),
            });
        }
        let body: Value =
            self.client
                .expect_json(&Method::GET, &url, response, self.mailbox.as_deref())?;
        let items = match body.get("value") {
            Some(Value::Array(items)) => items.clone(),
            _ => {
                return Err(GraphError::Decode {
                    path: url.path().to_owned(),
                    message: "no \"value\" array".to_owned(),
                });
            }
        };
        if let Some(next) = body.get("@odata.nextLink").and_then(Value::as_str) {
            let next = Url::parse(next).map_err(|error| GraphError::BadUrl {
                url: next.chars().take(200).collect(),
                message: error.to_string(),
            })?;
            // A nextLink to a host we were not configured for is refused before anything is sent there.
            self.client.api.check_allowed(&next)?;
            self.next = Some(next);
        }
        let delta_link = body
            .get("@odata.deltaLink")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(link) = &delta_link {
            let parsed = Url::parse(link).map_err(|error| GraphError::BadUrl {
                url: link.chars().take(200).collect(),
                message: error.to_string(),
            })?;
            self.client.api.check_allowed(&parsed)?;
        }
        Ok(Some(Page { items, delta_link }))
    }

    /// A read of `url` whose requests run under `mailbox`'s limiter.
    pub(crate) fn for_mailbox(client: GraphClient, url: Url, mailbox: &str) -> Self {
        Self {
            client,
            next: Some(url),
            minimal: false,
            mailbox: Some(mailbox.to_owned()),
            extra_headers: Vec::new(),
        }
    }

    /// Adds a header sent with every page request.
    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.extra_headers.push((name, value.to_owned()));
        self
    }

    /// Reads every remaining page into one list (for small collections: folders, group members of a small group).
    pub async fn collect_all(mut self) -> Result<Vec<Value>, GraphError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page.items);
        }
        Ok(all)
    }
}

fn is_expired_token(response: &ApiResponse) -> bool {
    if response.status.as_u16() == 410 {
        return true;
    }
    if !response.status.is_client_error() {
        return false;
    }
    let (code, _) = response.odata_error();
    code.is_some_and(|code| EXPIRED_TOKEN_CODES.contains(&code.to_ascii_lowercase().as_str()))
}

/// A Graph client for one tenant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GraphClient {
    pub(crate) api: ApiClient,
    /// `{graph}/v1.0/`.
    pub(crate) root: Url,
    pub(crate) mailbox_limiters: LimiterSet,
    /// Graph's per-app request rate (shared by every client of the same app in this process)
    /// (and, when the state store keeps one, by every process of the deployment); applied to every attempt of a
    /// request once its limiter permits are held, right before it is sent.
    pub(crate) pacing: Arc<GraphAppPacing>,
}

impl GraphClient {
    /// A client for the Graph endpoint `graph_base` (e.g. `https://graph.microsoft.com/`), using `api` (whose allowlist
    /// must contain `graph_base`). Mailbox requests share `mailbox_limiters` (4 per mailbox).
    pub fn new(
        api: ApiClient,
        graph_base: &Url,
        mailbox_limiters: LimiterSet,
    ) -> Result<Self, GraphError> {
        let mut base = graph_base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let root = base.join("v1.0/").map_err(|error| GraphError::BadUrl {
            url: graph_base.to_string(),
            message: error.to_string(),
        })?;
        Ok(Self {
            api,
            root,
            mailbox_limiters,
            pacing: Arc::new(GraphAppPacing {
                local: Arc::new(AppPacer::new(GRAPH_REQUESTS_PER_10_SECONDS)),
                shared: None,
            }),
        })
    }

    /// This client paced with every other client of app registration `client_id` (Graph's limit is per app).
    pub fn for_app(mut self, client_id: &str) -> Self {
        self.pacing = Arc::new(GraphAppPacing {
            local: AppPacer::for_app(client_id),
            shared: None,
        });
        self
    }

    /// This client paced with every other client of app registration `client_id` at `per_10_seconds` requests per
    /// 10 s (`[service] graph_requests_per_10s`), and, when `shared` is given, within that app's budget shared by every
    /// process of the deployment.
    pub fn for_app_within(
        mut self,
        client_id: &str,
        per_10_seconds: u32,
        shared: Option<Arc<SharedBudget>>,
    ) -> Self {
        self.pacing = Arc::new(GraphAppPacing {
            local: AppPacer::for_app_with_limit(client_id, f64::from(per_10_seconds)),
            shared,
        });
        self
    }

    /// The app's pacing, for a request that counts as `requests` Graph requests (each inner request of a `$batch`).
    pub(crate) fn paced(&self, request: ApiRequest, requests: u32) -> ApiRequest {
        request.paced(self.pacing.clone(), requests)
    }

    /// The executor (for counters and the retry policy).
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// A clone counting into `counters`.
    pub fn with_counters(
        &self,
        counters: std::sync::Arc<super::counters::RequestCounters>,
    ) -> Self {
        let mut clone = self.clone();
        clone.api = clone.api.with_counters(counters);
        clone
    }

    /// The per-mailbox limiters (the engine may also size its fan-out by them).
    pub fn mailbox_limiters(&self) -> &LimiterSet {
        &self.mailbox_limiters
    }

    /// `{root}{path}` with `query` pairs; `path` is relative to `/v1.0/` (no leading slash).
    pub(crate) fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, GraphError> {
        let mut url = self.root.join(path).map_err(|error| GraphError::BadUrl {
            url: path.to_owned(),
            message: error.to_string(),
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// Sends a request, under the mailbox's limiter when it concerns a mailbox.
    pub(crate) async fn send_for(
        &self,
        request: ApiRequest,
        mailbox: Option<&str>,
    ) -> Result<ApiResponse, GraphError> {
        let request = match mailbox {
            Some(mailbox) => request.limited(self.mailbox_limiters.get(mailbox), 1),
            None => request,
        };
        Ok(self.api.send(self.paced(request, 1)).await?)
    }

    /// Maps a non-2xx response to an error (recognising `MailboxNotEnabledForRESTAPI`); parses a 2xx body as JSON.
    pub(crate) fn expect_json(
        &self,
        method: &Method,
        url: &Url,
        response: ApiResponse,
        mailbox: Option<&str>,
    ) -> Result<Value, GraphError> {
        let response = self.expect_success(method, url, response, mailbox)?;
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        response.json().map_err(|error| GraphError::Decode {
            path: url.path().to_owned(),
            message: error.to_string(),
        })
    }

    pub(crate) fn expect_success(
        &self,
        method: &Method,
        url: &Url,
        response: ApiResponse,
        mailbox: Option<&str>,
    ) -> Result<ApiResponse, GraphError> {
        if response.is_success() {
            return Ok(response);
        }
        Err(api_error(method, url, &response, mailbox))
    }

    fn stream(&self, url: Url, minimal: bool, mailbox: Option<&str>) -> PageStream {
        PageStream {
            client: self.clone(),
            next: Some(url),
            minimal,
            mailbox: mailbox.map(str::to_owned),
            extra_headers: Vec::new(),
        }
    }

    fn delta_stream(
        &self,
        path: &str,
        select: &[&str],
        start: &DeltaStart,
        minimal: bool,
        mailbox: Option<&str>,
    ) -> Result<PageStream, GraphError> {
        let select = select.join(",");
        let url = match start {
            DeltaStart::Full => self.url(path, &[("$select", &select)])?,
            DeltaStart::Latest => {
                self.url(path, &[("$select", &select), ("$deltaToken", "latest")])?
            }
            DeltaStart::Resume(link) => {
                let url = Url::parse(link).map_err(|error| GraphError::BadUrl {
                    url: link.chars().take(200).collect(),
                    message: error.to_string(),
                })?;
                self.api.check_allowed(&url)?;
                url
            }
        };
        Ok(self.stream(url, minimal, mailbox))
    }

    /// `GET /users/delta?$select=…` from `start`; `minimal` sends `Prefer: return=minimal` (only changed properties).
    pub fn users_delta(
        &self,
        select: &[&str],
        start: &DeltaStart,
        minimal: bool,
    ) -> Result<PageStream, GraphError> {
        self.delta_stream("users/delta", select, start, minimal, None)
    }

    /// `GET /contacts/delta?$select=…`: the tenant's organisational contacts (read-only in Graph, docs/microsoft-facts.md §1).
    pub fn org_contacts_delta(
        &self,
        select: &[&str],
        start: &DeltaStart,
    ) -> Result<PageStream, GraphError> {
        self.delta_stream("contacts/delta", select, start, false, None)
    }

    /// `GET /users?$select=…[&$filter=…]`, paged.
    pub fn list_users(
        &self,
        select: &[&str],
        filter: Option<&str>,
    ) -> Result<PageStream, GraphError> {
        let select = select.join(",");
        let mut query = vec![("$select", select.as_str()), ("$top", "999")];
        if let Some(filter) = filter {
            query.push(("$filter", filter));
        }
        Ok(self.stream(self.url("users", &query)?, false, None))
    }

    /// `GET /users/{id or UPN}?$select=…`; `None` when the user does not exist.
    pub async fn get_user(&self, id: &str, select: &[&str]) -> Result<Option<Value>, GraphError> {
        let url = self.url(
            &format!("users/{}", segment(id)),
            &[("$select", &select.join(","))],
        )?;
        let response = self.send_for(ApiRequest::get(url.clone()), None).await?;
        if response.status.as_u16() == 404 {
            return Ok(None);
        }
        self.expect_json(&Method::GET, &url, response, None)
            .map(Some)
    }

    /// `POST /invitations` without an invitation mail (`sendInvitationMessage: false`, docs/microsoft-facts.md §5);
    /// returns the invited user's id. Inviting an address that already has a guest returns that guest.
    pub async fn invite_guest(
        &self,
        address: &str,
        display_name: &str,
        redirect_url: &str,
    ) -> Result<String, GraphError> {
        let url = self.url("invitations", &[])?;
        let body = serde_json::json!({
            "invitedUserEmailAddress": address,
            "invitedUserDisplayName": display_name,
            "inviteRedirectUrl": redirect_url,
            "sendInvitationMessage": false,
        });
        // Resending is safe: a second invitation of the same address answers with the same user.
        let request = ApiRequest::new(Method::POST, url.clone())
            .json(&body)
            .idempotent(true);
        let response = self.send_for(request, None).await?;
        let value = self.expect_json(&Method::POST, &url, response, None)?;
        value
            .pointer("/invitedUser/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| GraphError::Decode {
                path: url.path().to_owned(),
                message: "no invitedUser.id in the invitation".into(),
            })
    }

    /// `PATCH /users/{id}` with `body` (Graph property names).
    pub async fn patch_user(&self, id: &str, body: &Value) -> Result<(), GraphError> {
        let url = self.url(&format!("users/{}", segment(id)), &[])?;
        let request = ApiRequest::new(Method::PATCH, url.clone())
            .json(body)
            .idempotent(true);
        let response = self.send_for(request, None).await?;
        self.expect_success(&Method::PATCH, &url, response, None)
            .map(|_| ())
    }

    /// `DELETE /users/{id}`: Entra keeps the user restorable for 30 days. A user already gone is not an error.
    pub async fn delete_user(&self, id: &str) -> Result<(), GraphError> {
        let url = self.url(&format!("users/{}", segment(id)), &[])?;
        let request = ApiRequest::new(Method::DELETE, url.clone()).idempotent(true);
        let response = self.send_for(request, None).await?;
        if response.status.as_u16() == 404 {
            return Ok(());
        }
        self.expect_success(&Method::DELETE, &url, response, None)
            .map(|_| ())
    }

    /// `GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=…`: users in the group, nested groups expanded.
    pub fn group_user_members(
        &self,
        group_id: &str,
        select: &[&str],
    ) -> Result<PageStream, GraphError> {
        let url = self.url(
            &format!(
                "groups/{}/transitiveMembers/microsoft.graph.user",
                segment(group_id)
            ),
            &[("$select", &select.join(",")), ("$top", "999")],
        )?;
        Ok(self.stream(url, false, None))
    }

    /// `GET /users/{id}/photo/$value`: the photo bytes, or `None` when the user has no photo or no mailbox
    /// (Graph answers 404 `ImageNotFound` / `ErrorNonExistentMailbox`, docs/microsoft-facts.md §2).
    pub async fn user_photo(&self, user_id: &str) -> Result<Option<Vec<u8>>, GraphError> {
        let url = self.url(&format!("users/{}/photo/$value", segment(user_id)), &[])?;
        // Photos live in the user's mailbox: Outlook's per-mailbox limit applies.
        let response = self
            .send_for(ApiRequest::get(url.clone()), Some(user_id))
            .await?;
        if response.status.as_u16() == 404 {
            return Ok(None);
        }
        let (code, _) = response.odata_error();
        if code.as_deref().is_some_and(|code| {
            code.eq_ignore_ascii_case("ErrorNonExistentMailbox")
                || code.eq_ignore_ascii_case("MailboxNotEnabledForRESTAPI")
        }) {
            return Ok(None);
        }
        let response = self.expect_success(&Method::GET, &url, response, None)?;
        Ok(Some(response.body))
    }
}

/// Percent-encodes one path segment (an id or a UPN).
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// The error for a failed Graph response.
pub(crate) fn api_error(
    method: &Method,
    url: &Url,
    response: &ApiResponse,
    mailbox: Option<&str>,
) -> GraphError {
    let (code, message) = response.odata_error();
    if code
        .as_deref()
        .is_some_and(|code| code.eq_ignore_ascii_case("MailboxNotEnabledForRESTAPI"))
    {
        return GraphError::MailboxNotEnabledForRest {
            mailbox: mailbox.unwrap_or("(unknown)").to_owned(),
        };
    }
    GraphError::Api {
        method: method.to_string(),
        path: redact_query(url),
        status: response.status.as_u16(),
        code,
        message: message.unwrap_or_else(|| response.body_excerpt()),
    }
}
