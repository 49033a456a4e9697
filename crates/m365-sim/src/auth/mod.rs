//! Entra ID, simulated: access tokens bound to (tenant, app, audience), the token endpoint (client secret, certificate
//! assertion, federated managed-identity assertion), the managed identity endpoint, and app certificates.

pub mod certs;
pub(crate) mod device_code;
pub(crate) mod login;
pub(crate) mod msi;
pub(crate) mod tokens;

pub const AUDIENCE_GRAPH: &str = "https://graph.microsoft.com";
pub const AUDIENCE_EXCHANGE: &str = "https://outlook.office365.com";
pub const AUDIENCE_KEYVAULT: &str = "https://vault.azure.net";
pub const AUDIENCE_STORAGE: &str = "https://storage.azure.com";
pub const AUDIENCE_TOKEN_EXCHANGE: &str = "api://AzureADTokenExchange";

/// Resources the login and managed identity endpoints issue tokens for.
pub(crate) const KNOWN_AUDIENCES: &[&str] = &[
    AUDIENCE_GRAPH,
    AUDIENCE_EXCHANGE,
    AUDIENCE_KEYVAULT,
    AUDIENCE_STORAGE,
    AUDIENCE_TOKEN_EXCHANGE,
];

/// `https://graph.microsoft.com/.default` → `https://graph.microsoft.com`; also accepts a bare resource.
pub(crate) fn audience_of_scope(scope: &str) -> Option<&'static str> {
    let resource = scope
        .strip_suffix("/.default")
        .unwrap_or(scope)
        .trim_end_matches('/');
    KNOWN_AUDIENCES
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(resource))
}
