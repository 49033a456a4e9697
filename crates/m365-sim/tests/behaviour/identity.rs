//! Login, managed identity, Key Vault.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{EXCHANGE, GRAPH, spawn};

#[tokio::test]
async fn login_issues_tokens_bound_to_tenant_app_and_audience() {
    // [§1, §2] A token for one tenant and audience is refused by another service and another tenant.
    let t = spawn(&[("acme", 5), ("northern", 5)]).await;
    let graph_acme = t.token("acme", GRAPH).await;
    let (status, body, _) = t.get(&graph_acme, "/v1.0/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"].as_array().map(Vec::len), Some(5));

    let (status, body) = t
        .exo(
            "acme",
            &graph_acme,
            "Get-MailContact",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "Graph token must not open Exchange: {body}"
    );

    let exo_northern = t.token("northern", EXCHANGE).await;
    let (status, _) = t
        .exo(
            "acme",
            &exo_northern,
            "Get-MailContact",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a northern token must not open acme's Exchange"
    );
}

#[tokio::test]
async fn login_errors_come_in_entra_aadsts_shape() {
    // Entra answers invalid_client / AADSTS7000215 for a wrong secret, invalid_scope for a non-.default scope.
    let t = spawn(&[("acme", 1)]).await;
    let info = t.sim.tenant("acme").expect("tenant");
    let resp = t
        .http
        .post(info.token_url.clone())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", "wrong"),
            ("scope", GRAPH),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215:")
    );
    assert!(
        !body.to_string().contains(&info.client_secret),
        "errors never echo secrets"
    );

    let resp = t
        .http
        .post(info.token_url.clone())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", "User.Read.All"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn expired_token_is_refused_after_the_clock_moves() {
    // Access tokens live ~1 hour; Graph answers 401 InvalidAuthenticationToken after that.
    let t = spawn(&[("acme", 2)]).await;
    let token = t.token("acme", GRAPH).await;
    t.sim
        .control()
        .advance_clock(std::time::Duration::from_secs(3700));
    let (status, body, _) = t.get(&token, "/v1.0/users").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs an RS256 client assertion with the app certificate, as MSAL does (certificate named by `x5t#S256`).
fn client_assertion(pem: &str, client_id: &str, audience: &str, exp_in: i64) -> String {
    signed_assertion(pem, client_id, audience, exp_in, "x5t#S256", false)
}

/// `thumbprint_header` is `x5t#S256` (SHA-256, MSAL today) or `x5t` (SHA-1, older MSAL and most other clients);
/// `sha1` picks the digest put in it (a mismatch names a certificate that is not registered).
fn signed_assertion(
    pem: &str,
    client_id: &str,
    audience: &str,
    exp_in: i64,
    thumbprint_header: &str,
    sha1: bool,
) -> String {
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate in the PEM")
        .expect("certificate PEM parses");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .expect("test key material is valid");
    let algorithm = if sha1 {
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
    } else {
        &ring::digest::SHA256
    };
    let thumb = ring::digest::digest(algorithm, cert.as_ref());
    let header =
        serde_json::json!({"alg": "RS256", "typ": "JWT", thumbprint_header: b64(thumb.as_ref())});
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"aud": audience, "iss": client_id, "sub": client_id, "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "exp": now + exp_in});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let pair = ring::signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der())
        .expect("test key material is valid");
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("test key material is valid");
    format!("{input}.{}", b64(&sig))
}

#[tokio::test]
async fn certificate_client_assertion_is_verified_signature_audience_and_lifetime() {
    // Entra: RS256 client assertion naming the cert by x5t#S256 or x5t; aud = token endpoint; iss = sub = client id.
    let t = spawn(&[("acme", 1)]).await;
    let info = t.sim.tenant("acme").unwrap();
    let pem = t.sim.control().app_certificate_pem("acme").await.unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("BEGIN PRIVATE KEY"));
    let post = |assertion: String| {
        t.http
            .post(info.token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", info.client_id.as_str()),
                ("scope", EXCHANGE),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
    };
    let good = client_assertion(&pem, &info.client_id, info.token_url.as_str(), 600);
    let resp = post(good.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = t
        .exo("acme", &token, "Get-MailContact", serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let resp = post(tampered).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error_codes"][0],
        700027
    );

    let wrong_aud = client_assertion(&pem, &info.client_id, "https://example.invalid/token", 600);
    assert_eq!(
        post(wrong_aud).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // The SHA-1 thumbprint (`x5t`) names the same certificate; a wrong thumbprint is an unregistered certificate.
    let sha1 = signed_assertion(
        &pem,
        &info.client_id,
        info.token_url.as_str(),
        600,
        "x5t",
        true,
    );
    assert_eq!(post(sha1).await.unwrap().status(), StatusCode::OK);
    let mismatched = signed_assertion(
        &pem,
        &info.client_id,
        info.token_url.as_str(),
        600,
        "x5t#S256",
        true,
    );
    let resp = post(mismatched).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = resp.json::<Value>().await.unwrap();
    assert_eq!(body["error_codes"][0], 700027);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{body}"
    );
    // iss/sub must be the client id the request names.
    let other_subject = client_assertion(
        &pem,
        "11111111-2222-3333-4444-555555555555",
        info.token_url.as_str(),
        600,
    );
    let resp = post(other_subject).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error_codes"][0],
        700021
    );
    let expired = client_assertion(&pem, &info.client_id, info.token_url.as_str(), -10);
    let resp = post(expired).await.unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error_codes"][0],
        700024
    );
}

#[tokio::test]
async fn managed_identity_tokens_and_federated_assertion_sign_in() {
    // [§7, §8] App Service MSI endpoint (api-version 2019-08-01, X-IDENTITY-HEADER); a token for
    // api://AzureADTokenExchange is accepted as client_assertion by tenants whose app trusts the identity.
    let t = spawn(&[("acme", 1), ("northern", 1)]).await;
    let id = t.sim.identity();
    let resp = t
        .http
        .get(id.endpoint.clone())
        .query(&[
            ("resource", "api://AzureADTokenExchange"),
            ("api-version", "2019-08-01"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "header required");
    let resp = t
        .http
        .get(id.endpoint.clone())
        .header("X-IDENTITY-HEADER", &id.header)
        .query(&[
            ("resource", "api://AzureADTokenExchange"),
            ("api-version", "2019-08-01"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert!(body["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
    let assertion = body["access_token"].as_str().unwrap().to_string();

    let northern = t.sim.tenant("northern").unwrap();
    let sign_in = |assertion: String| {
        t.http
            .post(northern.token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", northern.client_id.as_str()),
                ("scope", GRAPH),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
    };
    assert_eq!(
        sign_in(assertion.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    t.sim
        .control()
        .set_federation_trusted("northern", false)
        .unwrap();
    let resp = sign_in(assertion).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error_codes"][0], 70021);
}

#[tokio::test]
async fn key_vault_challenge_handshake_works_with_the_real_azure_sdk() {
    // Key Vault: 401 challenge → token for https://vault.azure.net → secret; the SDK's trailing-slash path;
    // certificate secrets as PEM. The SDK's challenge-resource check must be off for a 127.0.0.1 vault.
    use azure_core::http::{ClientOptions, Transport};
    use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
    use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

    let t = spawn(&[("acme", 1)]).await;
    let info = t.sim.tenant("acme").unwrap();
    let mut cloud = azure_core::cloud::CustomConfiguration::default();
    cloud.authority_host = t.sim.base_url().to_string();
    let client_options = ClientOptions {
        transport: Some(Transport::new(std::sync::Arc::new(
            crate::common::client_for(&t.sim),
        ))),
        cloud: Some(std::sync::Arc::new(cloud.into())),
        ..Default::default()
    };
    let credential = ClientSecretCredential::new(
        &info.tenant_id,
        info.client_id.clone(),
        info.client_secret.clone().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options.clone(),
        }),
    )
    .unwrap();
    let client = SecretClient::new(
        t.sim.base_url().as_str(),
        credential,
        Some(SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .unwrap();
    let secret = client
        .get_secret(&info.secret_name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some(info.client_secret.as_str()));
    let cert = client
        .get_secret(&info.certificate_secret_name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(cert.value.unwrap().contains("BEGIN PRIVATE KEY"));
    assert_eq!(cert.content_type.as_deref(), Some("application/x-pem-file"));
    assert!(client.get_secret("nope", None).await.is_err());
    let challenges = t
        .sim
        .control()
        .count(m365_sim::Service::KeyVault, "/secrets", Some(401));
    assert_eq!(
        challenges, 1,
        "one challenge, then the cached scope is used"
    );
}

#[tokio::test]
async fn key_vault_answers_the_challenge_checks_audience_and_serves_versions() {
    // Key Vault auth doc: an unauthenticated GET gets 401 with `WWW-Authenticate: Bearer authorization=…,
    // resource=…`; tokens for another audience are refused; `id` names the version, readable at /secrets/{n}/{v};
    // unknown names or versions 404 SecretNotFound; api-version is required.
    let t = spawn(&[("acme", 1)]).await;
    let info = t.sim.tenant("acme").unwrap();
    let path = format!("/secrets/{}?api-version=7.5", info.secret_name);
    let resp = t.http.get(t.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer authorization=\"")
            && challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );
    let graph = t.token("acme", GRAPH).await;
    assert_eq!(
        t.get(&graph, &path).await.0,
        StatusCode::UNAUTHORIZED,
        "wrong audience"
    );

    let vault = t.token("acme", "https://vault.azure.net/.default").await;
    let (status, secret, _) = t.get(&vault, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(secret["value"], info.client_secret.as_str());
    let id = secret["id"].as_str().unwrap();
    let version = id.rsplit('/').next().unwrap();
    assert!(id.ends_with(&format!("/secrets/{}/{version}", info.secret_name)));
    let (status, same, _) = t.get(&vault, &format!("{id}?api-version=7.5")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["value"], secret["value"]);
    let (status, body, _) = t
        .get(
            &vault,
            &format!("/secrets/{}/0123abcd?api-version=7.5", info.secret_name),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SecretNotFound");
    let (status, body, _) = t
        .get(&vault, "/secrets/no-such-secret?api-version=7.5")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SecretNotFound");
    let (status, _, _) = t
        .get(&vault, &format!("/secrets/{}", info.secret_name))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "api-version is required");
}

#[tokio::test]
async fn managed_identity_serves_key_vault_and_storage_tokens_for_api_version_2019_08_01_only() {
    // [§7] App Service MSI: `resource` picks the audience (Key Vault, Storage); api-version must be 2019-08-01.
    let t = spawn(&[("acme", 1)]).await;
    let id = t.sim.identity();
    let msi = |resource: &'static str, version: &'static str| {
        t.http
            .get(id.endpoint.clone())
            .header("X-IDENTITY-HEADER", &id.header)
            .query(&[("resource", resource), ("api-version", version)])
            .send()
    };
    let resp = msi("https://vault.azure.net", "2017-09-01").await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "old api-version refused"
    );

    let vault: Value = msi("https://vault.azure.net", "2019-08-01")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(vault["resource"], "https://vault.azure.net");
    assert_eq!(vault["token_type"], "Bearer");
    assert_eq!(vault["client_id"], id.client_id.as_str());
    let vault_token = vault["access_token"].as_str().unwrap();
    let secret_path = format!(
        "/secrets/{}?api-version=7.5",
        t.sim.tenant("acme").unwrap().secret_name
    );
    let (status, _, _) = t.get(vault_token, &secret_path).await;
    assert_eq!(status, StatusCode::OK, "the identity reads the vault");

    let storage: Value = msi("https://storage.azure.com", "2019-08-01")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let storage_token = storage["access_token"].as_str().unwrap();
    assert_eq!(
        t.get(storage_token, &secret_path).await.0,
        StatusCode::UNAUTHORIZED,
        "a Storage token is not a Key Vault token"
    );
}

#[tokio::test]
async fn key_vault_set_secret_adds_a_version_that_becomes_the_latest() {
    // Key Vault Set Secret (`PUT /secrets/{name}`): same challenge and audience checks as reads; each set is a new
    // version, served as the latest; older versions stay readable by id; names are `[0-9a-zA-Z-]`, `value` required.
    let t = spawn(&[("acme", 1)]).await;
    let path = "/secrets/rt-acme-box?api-version=7.5";
    let unauthenticated = t
        .http
        .put(t.url(path))
        .json(&serde_json::json!({"value": "one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert!(unauthenticated.headers().contains_key("www-authenticate"));
    let graph = t.token("acme", GRAPH).await;
    let (status, _) = t
        .send_json(
            &graph,
            reqwest::Method::PUT,
            path,
            serde_json::json!({"value": "one"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong audience");

    let vault = t.token("acme", "https://vault.azure.net/.default").await;
    let (status, _, _) = t.get(&vault, path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing written yet");
    let (status, first) = t
        .send_json(
            &vault,
            reqwest::Method::PUT,
            path,
            serde_json::json!({"value": "one"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["value"], "one");
    let (status, second) = t
        .send_json(
            &vault,
            reqwest::Method::PUT,
            path,
            serde_json::json!({"value": "two"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let first_id = first["id"].as_str().unwrap();
    let second_id = second["id"].as_str().unwrap();
    assert_ne!(first_id, second_id, "each set is a new version");
    assert!(second_id.contains("/secrets/rt-acme-box/"), "{second_id}");
    let (status, latest, _) = t.get(&vault, path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["value"], "two");
    assert_eq!(latest["id"], second["id"]);
    let (status, old, _) = t.get(&vault, &format!("{first_id}?api-version=7.5")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["value"], "one", "the older version is kept");

    let (status, body) = t
        .send_json(
            &vault,
            reqwest::Method::PUT,
            "/secrets/bad_name?api-version=7.5",
            serde_json::json!({"value": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "BadParameter");
    let (status, _) = t
        .send_json(
            &vault,
            reqwest::Method::PUT,
            path,
            serde_json::json!({"contentType": "text/plain"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "value is required");
    let (status, _) = t
        .send_json(
            &vault,
            reqwest::Method::PUT,
            "/secrets/rt-acme-box",
            serde_json::json!({"value": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "api-version is required");
}
