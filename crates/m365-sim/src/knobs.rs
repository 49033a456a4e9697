//! Every tunable of the simulator: latency, Microsoft's limits, delays, delta behaviour and injected faults.
//! Settable at start (`SimConfig::knobs`) and later through `Control::set_knobs` or `PUT /_control/knobs`.

use serde::{Deserialize, Serialize};

/// Which Microsoft service a request belongs to (decided by path; the paths of the real services never collide).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Login,
    Graph,
    Exchange,
    KeyVault,
    ManagedIdentity,
    Control,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Login => "login",
            Service::Graph => "graph",
            Service::Exchange => "exchange",
            Service::KeyVault => "keyvault",
            Service::ManagedIdentity => "managed_identity",
            Service::Control => "control",
        }
    }

    pub(crate) fn of_path(path: &str) -> Service {
        if path.starts_with("/v1.0/") || path == "/v1.0" {
            Service::Graph
        } else if path.starts_with("/adminapi/") {
            Service::Exchange
        } else if path.starts_with("/secrets") {
            Service::KeyVault
        } else if path.starts_with("/msi/") {
            Service::ManagedIdentity
        } else if path.starts_with("/_control") {
            Service::Control
        } else {
            Service::Login
        }
    }
}

/// Fixed delay plus uniform jitter added to each request of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    pub fixed_ms: u64,
    pub jitter_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyModel {
    pub login: Latency,
    pub graph: Latency,
    pub exchange: Latency,
    pub keyvault: Latency,
    pub managed_identity: Latency,
}

impl LatencyModel {
    pub(crate) fn for_service(&self, service: Service) -> Latency {
        match service {
            Service::Login => self.login,
            Service::Graph => self.graph,
            Service::Exchange => self.exchange,
            Service::KeyVault => self.keyvault,
            Service::ManagedIdentity => self.managed_identity,
            Service::Control => Latency::default(),
        }
    }
}

/// How an expired delta token is answered. Microsoft documents both: `410 Gone` with a `Location` for a fresh
/// sync (delta query overview), and `400 syncStateNotFound` for directory objects (Graph blog, July 2020).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaExpiryStyle {
    #[default]
    Gone410,
    SyncStateNotFound400,
}

/// Where an Exchange `InvokeCommand` error names its exception. `InvokeCommand`'s error shape is not documented; both
/// variants appear in public material (crate README, "Exchange InvokeCommand") [guess: neither is known to be the
/// real one, clients must handle both].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeErrorShape {
    /// `error.message` = `|{exception type}|{text}`, `error.innererror.type` = the exception type.
    #[default]
    Message,
    /// `error.message` = "Error executing cmdlet", `error.innererror.type` =
    /// `Microsoft.Exchange.Admin.OData.Core.ODataServiceException`; the exception only in `error.details[0].message`
    /// (`ExNNNNNN|{exception type}|{text}`) and `error.innererror.internalexception.{type,message}`.
    Details,
}

/// A fixed-window rate limit on `InvokeCommand` per (app, tenant) [guess: EXO throttles, its windows are unpublished].
/// The first served request after a window ends starts the next window; within a window the first `commands`
/// requests are served and every further one gets 429 with `Retry-After` = the rest of the window (whole seconds,
/// rounded up, at least 1). Refused requests never start a window. `commands: 0` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRateLimit {
    pub commands: u32,
    pub window_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    pub latency: LatencyModel,
    /// Outlook: concurrent requests per (app, mailbox); docs/microsoft-facts.md §4 says 4.
    pub outlook_concurrency_per_mailbox: usize,
    /// Outlook: requests per (app, mailbox) per 10 minutes.
    pub outlook_requests_per_10_min: u32,
    /// Directory writes per (app, tenant) per 150 s.
    pub directory_writes_per_150_s: u32,
    /// Charge directory requests in resource units per (app, tenant): S 3,500 / M 5,000 / L 8,000 per 10 s by
    /// tenant size (Graph throttling-limits doc). On by default; the simulator's own throughput bench turns it off
    /// to measure the server rather than Microsoft's limit.
    pub directory_budget: bool,
    /// Overrides the size-based budget above (units per 10 s per (app, tenant)); None: S/M/L by tenant size.
    pub directory_units_per_10_s: Option<u32>,
    /// Graph requests per app across all tenants per 10 s (Graph: 130,000); more get 429 with `Retry-After` and
    /// `x-ms-throttle-scope: Application/All/{app}`. Inner `$batch` requests count one by one. None: not enforced
    /// (the requests are counted either way: `GET /_control/app-load`).
    pub graph_app_requests_per_10_s: Option<u32>,
    /// Invitations per tenant per 5 s.
    pub invitations_per_5_s: u32,
    /// An invited guest is unknown to Exchange (Get-MailUser, Set-MailUser) this long [guess].
    pub guest_mail_user_delay_ms: u64,
    /// Exchange commands per (app, tenant) per 10 s (0 = unlimited) [guess: EXO has a per-app budget, size unpublished].
    pub exchange_commands_per_10_s: u32,
    /// Where Exchange errors name their exception (both shapes are plausible) [guess].
    pub exchange_error_shape: ExchangeErrorShape,
    /// HTTP status of `ManagementObjectNotFoundException` answers: 400 (default) or 404 [guess: both are seen].
    pub exchange_not_found_status: u16,
    /// Fixed-window `InvokeCommand` rate limit per (app, tenant); None = off [guess].
    pub exchange_rate_limit: Option<ExchangeRateLimit>,
    /// Concurrent `InvokeCommand` requests per (app, tenant); more get 429 with `Retry-After: retry_after_secs`.
    /// 0 = unlimited [guess: EXO limits concurrency, the number is unpublished].
    pub exchange_concurrency_per_tenant: usize,
    /// Exchange replication: a mail contact made by New-MailContact is missing from every Get-* cmdlet
    /// (Get-MailContact, Get-Contact, Get-Recipient; by Identity, by Filter and in lists) for this long, while its
    /// address and Name already conflict in New-MailContact and Set-*/Remove-* already find it [guess].
    /// Independent of `consistency_delay_ms` (which hides it from lists and filters only; the longer one wins).
    pub exchange_replication_delay_ms: u64,
    /// Retry-After (seconds) sent with concurrency 429s.
    pub retry_after_secs: u64,
    /// A mail contact appears as a Graph orgContact this long after Exchange created it.
    pub replication_delay_ms: u64,
    /// A created object (mail contact, personal contact, user) is missing from lists and filters this long.
    pub consistency_delay_ms: u64,
    /// Directory delta tokens live this long (Microsoft: 7 days).
    pub delta_token_ttl_secs: u64,
    pub delta_expiry_style: DeltaExpiryStyle,
    /// Re-send the last entry of each delta page at the start of the next one (Graph documents replays).
    pub delta_replays: bool,
    /// Send `@removed` entries in the first round of users/contacts delta too (delta overview: "The @removed object
    /// can be returned in the initial delta query response"); clients must not treat them as errors there.
    pub delta_removed_in_initial_round: bool,
    /// Default page size for lists and delta pages when the client sends no `$top` / `odata.maxpagesize`.
    pub default_page_size: usize,
    /// Access tokens live this long.
    pub token_lifetime_secs: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency: LatencyModel::default(),
            outlook_concurrency_per_mailbox: 4,
            outlook_requests_per_10_min: 10_000,
            directory_writes_per_150_s: 3_000,
            directory_budget: true,
            directory_units_per_10_s: None,
            graph_app_requests_per_10_s: None,
            invitations_per_5_s: 150,
            guest_mail_user_delay_ms: 0,
            exchange_commands_per_10_s: 0,
            exchange_error_shape: ExchangeErrorShape::Message,
            exchange_not_found_status: 400,
            exchange_rate_limit: None,
            exchange_concurrency_per_tenant: 0,
            exchange_replication_delay_ms: 0,
            retry_after_secs: 1,
            replication_delay_ms: 0,
            consistency_delay_ms: 0,
            delta_token_ttl_secs: 7 * 24 * 3600,
            delta_expiry_style: DeltaExpiryStyle::Gone410,
            delta_replays: false,
            delta_removed_in_initial_round: true,
            default_page_size: 100,
            token_lifetime_secs: 3599,
        }
    }
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// 429 with `Retry-After`.
    Throttle { retry_after_secs: u64 },
    /// 503 Service Unavailable (with `Retry-After` when given).
    ServiceUnavailable { retry_after_secs: Option<u64> },
    /// 504 Gateway Timeout.
    GatewayTimeout,
    /// The connection is closed without a response.
    DropConnection,
    /// The request is delayed, then served normally.
    Slow { delay_ms: u64 },
    /// 200 with a truncated JSON body.
    Malformed,
    /// Exchange's transient failure: HTTP `status` whose body names `exception` (e.g. ServerBusyException).
    ExchangeTransient { status: u16, exception: String },
}

/// A fault applied to requests that match every given selector, at `rate` (0..=1), for at most `remaining` requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default)]
    pub service: Option<Service>,
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the path (Graph, Key Vault, login) or the cmdlet name (Exchange `InvokeCommand`).
    #[serde(default)]
    pub target_contains: Option<String>,
    pub fault: Fault,
    #[serde(default = "one")]
    pub rate: f64,
    /// Scripted faults: hit only the next N matching requests (None: forever).
    #[serde(default)]
    pub remaining: Option<u64>,
}

fn one() -> f64 {
    1.0
}

impl FaultRule {
    /// A fault on the next `count` matching requests.
    pub fn scripted(fault: Fault, count: u64) -> Self {
        FaultRule {
            service: None,
            method: None,
            target_contains: None,
            fault,
            rate: 1.0,
            remaining: Some(count),
        }
    }

    /// A fault on a fraction of matching requests, forever.
    pub fn rated(fault: Fault, rate: f64) -> Self {
        FaultRule {
            service: None,
            method: None,
            target_contains: None,
            fault,
            rate,
            remaining: None,
        }
    }

    pub fn on_service(mut self, service: Service) -> Self {
        self.service = Some(service);
        self
    }

    pub fn on_method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    pub fn on_target(mut self, target_contains: &str) -> Self {
        self.target_contains = Some(target_contains.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_variance_knobs_have_snake_case_json_names_and_defaults() {
        let k: Knobs = serde_json::from_value(serde_json::json!({
            "exchange_error_shape": "details",
            "exchange_not_found_status": 404,
            "exchange_rate_limit": {"commands": 400, "window_secs": 10},
            "exchange_concurrency_per_tenant": 4,
            "exchange_replication_delay_ms": 20000
        }))
        .expect("knobs parse");
        assert_eq!(k.exchange_error_shape, ExchangeErrorShape::Details);
        assert_eq!(k.exchange_not_found_status, 404);
        assert_eq!(
            k.exchange_rate_limit,
            Some(ExchangeRateLimit {
                commands: 400,
                window_secs: 10
            })
        );
        assert_eq!(k.exchange_concurrency_per_tenant, 4);
        assert_eq!(k.exchange_replication_delay_ms, 20_000);
        let d: Knobs = serde_json::from_value(serde_json::json!({})).expect("defaults");
        assert_eq!(d.exchange_error_shape, ExchangeErrorShape::Message);
        assert_eq!(d.exchange_not_found_status, 400);
        assert_eq!(d.exchange_rate_limit, None);
        assert_eq!(d.exchange_concurrency_per_tenant, 0);
        assert_eq!(d.exchange_replication_delay_ms, 0);
        assert_eq!(
            serde_json::to_value(ExchangeErrorShape::Message).expect("json"),
            "message"
        );
    }
}
