//! Certificates made by the test (rcgen: a CA, and server certificates it signs for
//! `localhost` and `127.0.0.1`), written where `--tls-cert` and `--tls-key` can read them, and
//! HTTPS clients that trust that CA alone and offer the ALPN protocols a test asks for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData,
    SerialNumber,
};
use sha2::{Digest, Sha256};

use super::WAIT;
use super::server::Endpoint;

/// A test CA and the files of the server certificate it signed last.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// `--tls-cert`'s file.
    pub cert: PathBuf,
    /// `--tls-key`'s file.
    pub key: PathBuf,
    /// The DER of the certificate in `cert`, to tell which one a server presented.
    pub der: Vec<u8>,
    /// Chromium's `--ignore-certificate-errors-spki-list` value for it: the SHA-256 of its
    /// public key, base64.
    pub spki_sha256: String,
}

impl TestCa {
    /// A new CA, and a server certificate with serial `1` and subject `server 1`, in a fresh
    /// temporary folder.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "switchboard test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir =
            std::env::temp_dir().join(format!("switchboard-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = TestCa {
            issuer,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            der: Vec::new(),
            spki_sha256: String::new(),
        };
        ca.renew(1);
        ca
    }

    /// Signs a new server certificate (serial `serial`, subject `server <serial>`, a new key)
    /// and writes it over the files, the key first.
    pub fn renew(&mut self, serial: u64) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("server {serial}"));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(&self.key, key.serialize_pem()).unwrap();
        std::fs::write(&self.cert, cert.pem()).unwrap();
        self.der = cert.der().to_vec();
        self.spki_sha256 = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(key.subject_public_key_info()));
    }

    /// `--tls-cert <cert> --tls-key <key>`.
    pub fn args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }

    /// A folder for files of the test's own (it goes when the CA does).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An HTTPS client trusting this CA alone, offering `alpn` (e.g. `["h2", "http/1.1"]`),
    /// reporting the certificate each response came over (`reqwest::tls::TlsInfo`).
    pub fn client(&self, alpn: &[&str]) -> reqwest::Client {
        let builder = reqwest::Client::builder()
            .connect_timeout(WAIT)
            .no_proxy()
            .tls_info(true)
            .tls_backend_preconfigured(self.client_config(alpn));
        let builder = if alpn.contains(&"h2") {
            builder
        } else {
            builder.http1_only()
        };
        builder.build().unwrap()
    }

    /// A TLS client's configuration trusting this CA alone, offering `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }

    /// The server at `addr` over HTTPS (its certificate names `127.0.0.1`), with [`TestCa::client`].
    pub fn endpoint(&self, label: &str, addr: std::net::SocketAddr, alpn: &[&str]) -> Endpoint {
        Endpoint::with_base_url(label, format!("https://{addr}"), self.client(alpn))
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The certificate (DER) a response came over.
pub fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS response with the server's certificate")
        .to_vec()
}
