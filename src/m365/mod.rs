//! Thin clients for the Microsoft services galbridge talks to, and the credentials they authenticate with.
//!
//! - [`http`]: the shared `reqwest` client factory and the request executor (allowlist, retries, counters, limits).
//! - [`retry`], [`limiter`], [`pacer`], [`counters`], [`budget`]: retry policy, adaptive concurrency (AIMD), Graph's
//!   per-app request rate, request counting, the run's time budget and `Retry-After` pauses.
//! - [`auth`], [`assertion`], [`keyvault`], [`sdk`]: tokens per (tenant, audience) from the official Azure identity
//!   crates; certificate assertions signed with ring; Key Vault reads; the bridge to the SDK's transport.
//! - [`graph`], [`batch`], [`mailbox`]: Microsoft Graph reads (users delta, groups, org contacts, photos), `$batch`
//!   writes, and personal contacts in mailboxes.
//! - [`exchange`]: Exchange Online `InvokeCommand` for mail contacts.
//! - [`secret`]: the string type that never prints.
//!
//! Clients take base URLs; the config room resolves them per cloud (docs/microsoft-facts.md §6).

pub mod assertion;
pub mod auth;
pub mod batch;
pub mod budget;
pub mod counters;
pub mod delegated;
pub mod exchange;
pub mod graph;
pub mod http;
pub mod keyvault;
pub mod limiter;
pub mod mailbox;
pub mod pacer;
pub mod retry;
pub mod sdk;
pub mod secret;
pub mod subscriptions;
pub mod vault_token_store;

pub use auth::{
    AuthError, CredentialSource, PlatformIdentity, TenantAuth, TokenProvider, TokenSource,
};
pub use batch::{BatchRequest, BatchResponse};
pub use counters::{RequestCounters, Service};
pub use exchange::{ExchangeClient, ExchangeError, ExchangeErrorKind};
pub use graph::{DeltaStart, GraphClient, GraphError, Page, PageStream};
pub use http::{ApiClient, ApiRequest, ApiResponse, HttpError, HttpSettings, build_http_client};
pub use limiter::{AdaptiveLimiter, LimiterPermit, LimiterSet};
pub use retry::RetryPolicy;
pub use secret::Secret;
