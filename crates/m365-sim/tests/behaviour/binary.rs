//! The standalone binary: `m365-sim --tenants acme:550,northern:160` serves both seeded tenants over HTTPS and
//! prints its base URL and CA path (issue 3, "Done when").

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("PEM cert")).expect("CA parses");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .expect("client")
}

#[tokio::test]
async fn binary_serves_two_seeded_tenants_and_prints_base_url_and_ca_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_m365-sim"))
        .args(["--tenants", "acme:550,northern:160", "--state-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let read_banner = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.starts_with("serving");
            printed.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_banner)
        .await
        .expect("the binary prints its banner");
    let field = |key: &str| {
        printed
            .iter()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("'{key}' printed: {printed:?}"))
    };
    let base_url = field("base_url");
    let ca_path = std::path::PathBuf::from(field("ca_pem"));
    assert!(base_url.starts_with("https://127.0.0.1:"), "{base_url}");
    assert!(ca_path.starts_with(dir.path()), "CA written to --state-dir");
    let banner = printed.join("\n");
    assert!(banner.contains("tenant acme ") && banner.contains("tenant northern "));

    // The CA it printed is the one its HTTPS listener chains to, and both tenants are seeded at the asked size.
    let http = client_trusting(&std::fs::read(&ca_path).unwrap());
    let tenants: Vec<Value> = http
        .get(format!("{base_url}_control/tenants"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (name, size) in [("acme", 550), ("northern", 160)] {
        let t = tenants.iter().find(|t| t["name"] == name).unwrap();
        assert!(
            !banner.contains(t["client_secret"].as_str().unwrap()),
            "client secrets stay off the console"
        );
        let token: Value = http
            .post(format!(
                "{base_url}{}/oauth2/v2.0/token",
                t["tenant_id"].as_str().unwrap()
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", t["client_id"].as_str().unwrap()),
                ("client_secret", t["client_secret"].as_str().unwrap()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut url = format!("{base_url}v1.0/users?$select=id&$top=999");
        let mut count = 0;
        loop {
            let resp = http
                .get(&url)
                .bearer_auth(token["access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let page: Value = resp.json().await.unwrap();
            count += page["value"].as_array().unwrap().len();
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => break,
            }
        }
        assert_eq!(count, size, "{name} seeded with {size} users");
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
