//! `--tls-cert` and `--tls-key`: the certificate the TLS listener presents, loaded at start
//! and swapped without a restart.
//!
//! rustls asks [`Certificates`] for the certificate at every handshake, so a reload is one
//! pointer swap: connections already open keep the key they agreed, new ones get the new
//! certificate. A reload happens on SIGHUP and when either file's modification time changes
//! (polled every [`POLL`]: a renewal tool writes the files and need not signal anyone). A pair
//! that does not load (half written, a key of another certificate) is logged and the one in use
//! stays; the next change is tried again.
//!
//! ALPN offers `h2` first, then `http/1.1`; a client that offers neither gets HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How often the files' modification times are compared with the loaded pair's.
const POLL: Duration = Duration::from_secs(2);

/// The certificate in use, and the files it came from.
#[derive(Debug)]
pub(crate) struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl Certificates {
    /// Loads the pair from `cert` and `key`.
    ///
    /// # Errors
    /// One line naming the flag and what is wrong: a file that cannot be read, holds no
    /// certificate or key in PEM, or a key that is not the certificate's.
    pub(crate) fn load(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = load_pair(&cert, &key, &provider)?;
        Ok(Certificates {
            cert,
            key,
            current: RwLock::new(Arc::new(current)),
            provider,
        })
    }

    /// The acceptor of the TLS listener: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, and the
    /// certificate asked of `self` at every handshake.
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("--tls-cert: {err}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Loads the files again; the new pair is used from the next handshake on, or, when it
    /// does not load, the old one stays and the reason is logged.
    fn reload(&self) {
        match load_pair(&self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
                info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(err) => error!(
                %err,
                "TLS certificate not reloaded; the one in use stays"
            ),
        }
    }

    /// The files' modification times, to notice a change.
    fn stamps(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        (modified(&self.cert), modified(&self.key))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Reloads `certificates` on SIGHUP and when the files change, until `cancel` fires.
///
/// # Errors
/// When the SIGHUP handler cannot be installed.
pub(crate) fn watch(
    certificates: Arc<Certificates>,
    cancel: CancellationToken,
) -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed now, not when the task first runs: a SIGHUP's default action ends the process.
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        let mut loaded = certificates.stamps();
        let mut every = tokio::time::interval(POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    info!("SIGHUP: reloading the TLS certificate");
                    loaded = certificates.stamps();
                    certificates.reload();
                }
                _ = every.tick() => {
                    let now = certificates.stamps();
                    if now != loaded {
                        loaded = now;
                        certificates.reload();
                    }
                }
                () = cancel.cancelled() => return,
            }
        }
    })
}

/// The chain of `cert` and the key of `key`, checked to belong together.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let named = |flag: &str, path: &Path, err: &dyn std::fmt::Display| {
        format!("{flag} {}: {err}", path.display())
    };
    let bytes = std::fs::read(cert).map_err(|err| named("--tls-cert", cert, &err))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| named("--tls-cert", cert, &err))?;
    if chain.is_empty() {
        return Err(named("--tls-cert", cert, &"no PEM certificate in it"));
    }
    let bytes = std::fs::read(key).map_err(|err| named("--tls-key", key, &err))?;
    let private = PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| {
        named(
            "--tls-key",
            key,
            &format!("no PEM private key in it ({err})"),
        )
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|err| {
        named(
            "--tls-key",
            key,
            &format!("does not go with --tls-cert's certificate ({err})"),
        )
    })
}
