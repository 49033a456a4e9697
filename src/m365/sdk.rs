//! The bridge to the Azure SDK crates (`azure_core`, `azure_identity`, `azure_security_keyvault_secrets`).
//!
//! Every SDK client gets our `reqwest::Client` as its transport (so the extra CA bundle is trusted and one connection
//! pool serves everything), wrapped to count its requests under a service name, and, where it authenticates, the
//! tenant's login endpoint as a custom cloud authority host.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{AsyncRawResponse, ClientOptions, HttpClient, Request, Transport};
use url::Url;

use super::counters::{RequestCounters, Service};

/// Our reqwest client as an SDK transport, counting every request (retries included) under `service`.
#[derive(Debug)]
pub struct CountingTransport {
    http: reqwest::Client,
    counters: Arc<RequestCounters>,
    service: Service,
}

#[async_trait::async_trait]
impl HttpClient for CountingTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        self.counters.count(self.service);
        self.http.execute_request(request).await
    }
}

/// SDK client options whose transport is `http`, counted as `service`.
pub fn client_options(
    http: &reqwest::Client,
    counters: &Arc<RequestCounters>,
    service: Service,
) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(CountingTransport {
            http: http.clone(),
            counters: counters.clone(),
            service,
        }))),
        ..ClientOptions::default()
    }
}

/// SDK client options for a credential that talks to the login endpoint `login_base` (the tenant's cloud authority,
/// or an override such as the simulator).
pub fn login_client_options(
    http: &reqwest::Client,
    counters: &Arc<RequestCounters>,
    login_base: &Url,
) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    // The SDK joins "/{tenant}/oauth2/v2.0/token" onto this, so only the origin matters (auth.rs refuses a path).
    cloud.authority_host = login_base.origin().ascii_serialization();
    let mut options = client_options(http, counters, Service::Login);
    options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
    options
}
