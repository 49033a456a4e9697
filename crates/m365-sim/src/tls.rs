//! TLS material for the simulator: a CA generated at start-up (written out as PEM so clients can trust it) and the
//! server certificate it signs for `localhost` and `127.0.0.1`. ECDSA P-256 keeps start-up fast (ring generates it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SimError;

/// The generated CA and the rustls server configuration that presents a certificate signed by it.
pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

pub(crate) fn generate() -> Result<TlsMaterial, SimError> {
    let tls_err = |what: &'static str| move |e: rcgen::Error| SimError::Tls(format!("{what}: {e}"));

    let ca_key = KeyPair::generate().map_err(tls_err("CA key"))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA params"))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "m365-sim local CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "m365-sim");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(tls_err("CA certificate"))?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls_err("server key"))?;
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string()]).map_err(tls_err("server params"))?;
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V6(
            std::net::Ipv6Addr::LOCALHOST,
        )));
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(tls_err("server certificate"))?;

    let chain = vec![
        CertificateDer::from(server_cert.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| SimError::Tls(format!("server certificate rejected: {e}")))?;
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem,
        server_config: Arc::new(server_config),
    })
}

/// Where the CA PEM lives; a temp dir we created is removed when the simulator is dropped.
pub(crate) struct StateDir {
    pub(crate) path: PathBuf,
    owned_temp: bool,
}

impl StateDir {
    pub(crate) fn open(requested: Option<&Path>) -> Result<Self, SimError> {
        match requested {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| SimError::Io {
                    what: format!("create {}", dir.display()),
                    source: e,
                })?;
                Ok(StateDir {
                    path: dir.to_path_buf(),
                    owned_temp: false,
                })
            }
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "m365-sim-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ));
                std::fs::create_dir_all(&dir).map_err(|e| SimError::Io {
                    what: format!("create {}", dir.display()),
                    source: e,
                })?;
                Ok(StateDir {
                    path: dir,
                    owned_temp: true,
                })
            }
        }
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.owned_temp {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
