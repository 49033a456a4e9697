//! Test helpers: start a simulator, a reqwest client that trusts its CA, token and request shortcuts.

use std::sync::Arc;

use m365_sim::{Knobs, SimConfig, SimHandle, TenantSeed};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const GRAPH: &str = "https://graph.microsoft.com/.default";
pub const EXCHANGE: &str = "https://outlook.office365.com/.default";

pub struct TestSim {
    pub sim: SimHandle,
    pub http: reqwest::Client,
}

pub fn client_for(sim: &SimHandle) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(sim.ca_pem_path()).expect("CA PEM written");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types_certs(&pem) {
        roots.add(cert).expect("CA parses");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

fn rustls_pki_types_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("PEM cert"))
        .collect()
}

pub async fn spawn(tenants: &[(&str, usize)]) -> TestSim {
    spawn_with(tenants, Knobs::default()).await
}

pub async fn spawn_with(tenants: &[(&str, usize)], knobs: Knobs) -> TestSim {
    let config = SimConfig {
        tenants: tenants
            .iter()
            .map(|(n, u)| TenantSeed::new(n, *u))
            .collect(),
        knobs,
        ..SimConfig::default()
    };
    let sim = m365_sim::start(config).await.expect("simulator starts");
    let http = client_for(&sim);
    TestSim { sim, http }
}

impl TestSim {
    /// Id of the first seeded user of acme with a REST-enabled user mailbox.
    pub fn rest_mailbox(&self) -> String {
        let users = self.sim.control().users("acme").expect("tenant");
        users
            .iter()
            .find(|u| u["mailbox"] == "user" && u["restEnabled"] == true)
            .and_then(|u| u["id"].as_str())
            .expect("a REST mailbox")
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.sim.base_url().as_str().trim_end_matches('/'),
            path
        )
    }

    pub async fn token(&self, tenant: &str, scope: &str) -> String {
        let t = self.sim.tenant(tenant).expect("tenant");
        let resp = self
            .http
            .post(t.token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &t.client_id),
                ("client_secret", &t.client_secret),
                ("scope", scope),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(resp.status(), StatusCode::OK, "token for {tenant}");
        let body: Value = resp.json().await.expect("json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn get(
        &self,
        token: &str,
        url: &str,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        self.get_with(token, url, &[]).await
    }

    pub async fn get_with(
        &self,
        token: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let url = if url.starts_with("https://") {
            url.to_string()
        } else {
            self.url(url)
        };
        let mut req = self.http.get(url).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    pub async fn send_json(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let resp = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Runs a cmdlet through InvokeCommand; returns status and body.
    pub async fn exo(
        &self,
        tenant: &str,
        token: &str,
        cmdlet: &str,
        params: Value,
    ) -> (StatusCode, Value) {
        let t = self.sim.tenant(tenant).expect("tenant");
        let resp = self
            .http
            .post(self.url(&format!(
                "/adminapi/beta/{}/InvokeCommand",
                t.initial_domain
            )))
            .bearer_auth(token)
            .header("X-ResponseFormat", "json")
            .json(&json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}))
            .send()
            .await
            .expect("InvokeCommand");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Runs a cmdlet through InvokeCommand with extra headers; returns status, headers and body.
    pub async fn exo_with(
        &self,
        tenant: &str,
        token: &str,
        cmdlet: &str,
        params: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let t = self.sim.tenant(tenant).expect("tenant");
        let mut req = self
            .http
            .post(self.url(&format!(
                "/adminapi/beta/{}/InvokeCommand",
                t.initial_domain
            )))
            .bearer_auth(token)
            .header("X-ResponseFormat", "json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .json(&json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}))
            .send()
            .await
            .expect("InvokeCommand");
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    /// Runs a cmdlet and POSTs the same body to every `@odata.nextLink` (with `Prefer: odata.maxpagesize=N`);
    /// returns every value and the number of requests made.
    pub async fn exo_all(
        &self,
        tenant: &str,
        token: &str,
        cmdlet: &str,
        params: Value,
        page_size: usize,
    ) -> (Vec<Value>, usize) {
        let t = self.sim.tenant(tenant).expect("tenant");
        let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}});
        let prefer = format!("odata.maxpagesize={page_size}");
        let mut url = self.url(&format!(
            "/adminapi/beta/{}/InvokeCommand",
            t.initial_domain
        ));
        let (mut all, mut requests) = (Vec::new(), 0);
        loop {
            requests += 1;
            let resp = self
                .http
                .post(&url)
                .bearer_auth(token)
                .header("Prefer", prefer.as_str())
                .json(&body)
                .send()
                .await
                .expect("InvokeCommand");
            assert_eq!(resp.status(), StatusCode::OK, "{cmdlet} page {requests}");
            let page: Value = resp.json().await.expect("json");
            let values = page["value"].as_array().cloned().unwrap_or_default();
            assert!(
                values.len() <= page_size,
                "a page holds at most {page_size}"
            );
            all.extend(values);
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return (all, requests),
            }
        }
    }

    /// Follows `@odata.nextLink` to the end; returns all values and the final body.
    pub async fn get_all(
        &self,
        token: &str,
        first: &str,
        headers: &[(&str, &str)],
    ) -> (Vec<Value>, Value) {
        let mut url = first.to_string();
        let mut all = Vec::new();
        loop {
            let (status, body, _) = self.get_with(token, &url, headers).await;
            assert_eq!(status, StatusCode::OK, "page {url}: {body}");
            all.extend(body["value"].as_array().cloned().unwrap_or_default());
            match body["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return (all, body),
            }
        }
    }
}
