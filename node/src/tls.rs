//! TLS for the node's port and for its calls to other members (rustls).
//!
//! The material is a directory laid out as a Kubernetes TLS Secret — `tls.crt` (the
//! member's certificate chain), `tls.key`, `ca.crt` (the cluster CA) — and is re-read
//! when the files change (a mounted Secret is updated in place), so a renewed
//! certificate or CA is used without a restart and without dropping connections.
//!
//! One certificate serves both sides: the node presents it as a server and, to other
//! members, as a client (mutual TLS). Client certificates are optional at the
//! handshake (public routes take users without one) but a presented certificate must
//! chain to the cluster CA or the connection is refused; internal routes then require
//! one (`http::auth`). A member connects to peers by pod IP, so the client side checks
//! that the peer's chain leads to the cluster's own CA ("verify-ca", as PostgreSQL
//! calls it) rather than a host name: the CA is per cluster and signs only its members
//! and the operator.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// File names inside the TLS directory (a `kubernetes.io/tls` Secret plus `ca.crt`).
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_FILE: &str = "ca.crt";

/// How often the files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One consistent reading of the directory.
struct Material {
    digest: [u8; 32],
    /// When the served certificate expires (Unix seconds).
    not_after: i64,
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// The node's TLS state: the current material, replaced when the files change.
pub struct Tls {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Material>>,
}

fn read(dir: &Path, file: &str) -> Result<(PathBuf, Vec<u8>), TlsError> {
    let path = dir.join(file);
    std::fs::read(&path)
        .map(|b| (path.clone(), b))
        .map_err(|source| TlsError::Read { path, source })
}

fn load(dir: &Path, provider: &Arc<CryptoProvider>) -> Result<Material, TlsError> {
    let (cert_path, cert_pem) = read(dir, CERT_FILE)?;
    let (key_path, key_pem) = read(dir, KEY_FILE)?;
    let (ca_path, ca_pem) = read(dir, CA_FILE)?;
    let invalid = |path: &PathBuf, what: String| TlsError::Invalid {
        path: path.clone(),
        what,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&cert_path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(&cert_path, "no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&key_path, format!("not a PEM private key: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(&key_path, format!("unusable key: {e}")))?;
    let not_after = x509_parser::parse_x509_certificate(&certs[0])
        .map(|(_, c)| c.validity().not_after.timestamp())
        .map_err(|e| invalid(&cert_path, format!("unreadable certificate: {e}")))?;
    let key = CertifiedKey::new(certs, signing);
    key.keys_match()
        .map_err(|e| invalid(&key_path, format!("does not match {CERT_FILE}: {e}")))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        let c = c.map_err(|e| invalid(&ca_path, format!("not PEM certificates: {e}")))?;
        roots
            .add(c)
            .map_err(|e| invalid(&ca_path, format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid(&ca_path, "no CA certificate".into()));
    }
    let roots = Arc::new(roots);
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid(&ca_path, format!("cannot verify clients with it: {e}")))?;
    let mut h = Sha256::new();
    for b in [&cert_pem, &key_pem, &ca_pem] {
        h.update(b);
        h.update([0u8]);
    }
    Ok(Material {
        digest: h.finalize().into(),
        not_after,
        key: Arc::new(key),
        roots,
        client_verifier,
    })
}

impl Tls {
    /// Reads the directory; fails (naming the file) if the material is unusable.
    pub fn load(dir: &Path) -> Result<Arc<Tls>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let m = load(dir, &provider)?;
        Ok(Arc::new(Tls {
            dir: dir.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(m)),
        }))
    }

    fn now(&self) -> Arc<Material> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the files; returns whether the material changed. A half-written or
    /// invalid update is an error and the current material stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let m = load(&self.dir, &self.provider)?;
        if m.digest == self.now().digest {
            return Ok(false);
        }
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(m),
            Err(p) => *p.into_inner() = Arc::new(m),
        }
        Ok(true)
    }

    /// When the certificate served now expires (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.now().not_after
    }

    /// Checks the files every [`RELOAD_EVERY`] (file reads on the blocking pool);
    /// `reloaded` gets the new certificate's expiry after each change.
    pub async fn reload_loop(self: Arc<Self>, reloaded: impl Fn(i64) + Send + 'static) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let tls = self.clone();
            match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(Ok(true)) => {
                    tracing::info!(dir = %self.dir.display(), "TLS certificate or CA reloaded");
                    reloaded(self.not_after());
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "TLS files not reloaded; the previous ones stay in use")
                }
                Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
            }
        }
    }

    /// The server side: serves the current certificate, verifies presented client
    /// certificates against the current CA.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut c = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(Dynamic(self.clone())))
            .with_cert_resolver(Arc::new(Dynamic(self.clone())));
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(c))
    }

    /// The client side (calls to other members): verify-ca against the current CA,
    /// the member's certificate presented.
    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, TlsError> {
        let mut c = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Dynamic(self.clone())))
            .with_client_cert_resolver(Arc::new(Dynamic(self.clone())));
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(c)
    }
}

/// Reads the current material at each handshake (so reloads take effect at once).
#[derive(Debug)]
struct Dynamic(Arc<Tls>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("dir", &self.dir).finish()
    }
}

impl ResolvesServerCert for Dynamic {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.now().key.clone())
    }
}

impl ResolvesClientCert for Dynamic {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.now().key.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for Dynamic {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA can change under us; members send their one certificate regardless.
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .now()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for Dynamic {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.0.now().roots,
            intermediates,
            now,
            self.0.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(self)
    }
}
