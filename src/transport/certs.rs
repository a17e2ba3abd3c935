//! The office's TLS identity and whom outgoing TLS trusts, for SIP over TLS and the HTTPS
//! dashboard.
//!
//! The certificate is the one `[tls] cert`/`key` name, or else a self-signed one made with
//! rcgen on first start and kept beside the store (`<store dir>/tls/pasarela-cert.pem` and
//! `pasarela-key.pem`, the key readable by its owner only) so that phones that trusted it keep
//! trusting it after a restart. Outgoing connections check the server's certificate against the
//! system roots (webpki-roots) and `[tls] ca_files`, or, for a domain with a `[[tls.peer]]` (or a
//! trunk's `tls_ca`/`tls_pin`), against its own CA file or the SHA-256 pin of its certificate;
//! the name in the certificate must always be the SIP domain called (RFC 5922 §7.2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use super::config::{SipConfig, TlsConfig, TlsPeer, Transport};

/// Why the TLS identity or a trust setting could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS settings refused: {0}")]
    Tls(#[from] rustls::Error),
}

/// The office's certificate and what outgoing TLS trusts; cheap to clone.
#[derive(Clone)]
pub struct TlsContext {
    /// `None` for a context that only calls out ([`TlsContext::client_only`]).
    server: Option<Arc<ServerConfig>>,
    trust: Arc<Trust>,
    /// The certificate served (first of the chain), DER; empty without a server side.
    pub cert_der: CertificateDer<'static>,
    /// Its file.
    pub cert_path: PathBuf,
    /// Whether pasarela made it itself.
    pub self_signed: bool,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("cert_path", &self.cert_path)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

struct Trust {
    roots: Arc<RootCertStore>,
    peers: HashMap<String, PeerTrust>,
    /// Client configurations per domain, made on first use.
    cache: Mutex<HashMap<String, Arc<ClientConfig>>>,
}

#[derive(Clone)]
enum PeerTrust {
    Ca(Arc<RootCertStore>),
    Pin([u8; 32]),
}

/// The certificate and key files pasarela makes for itself beside the store at `store_path`.
pub fn self_signed_paths(store_path: &Path) -> (PathBuf, PathBuf) {
    let dir = match store_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = dir.join("tls");
    (dir.join("pasarela-cert.pem"), dir.join("pasarela-key.pem"))
}

/// The SHA-256 of a certificate (DER), as pins are written.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

impl TlsContext {
    /// Loads `[tls]` (or makes and keeps the self-signed certificate beside the store at
    /// `store_path`, naming `names`: the SIP domain, the machine, the listen addresses).
    pub fn load(
        tls: &TlsConfig,
        store_path: &Path,
        names: &[String],
    ) -> Result<TlsContext, CertError> {
        let (cert_path, key_path, self_signed) = match (&tls.cert, &tls.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), false),
            _ => {
                let (c, k) = self_signed_paths(store_path);
                if !c.exists() || !k.exists() {
                    generate(&c, &k, names)?;
                }
                (c, k, true)
            }
        };
        let chain = read_certs(&cert_path)?;
        let key = read_key(&key_path)?;
        let Some(first) = chain.first().cloned() else {
            return Err(CertError::Bad {
                path: cert_path,
                what: "no certificate in the file".into(),
            });
        };
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let mut ctx = TlsContext::client_only(tls)?;
        ctx.server = Some(Arc::new(server));
        ctx.cert_der = first;
        ctx.cert_path = cert_path;
        ctx.self_signed = self_signed;
        Ok(ctx)
    }

    /// A context that calls out over TLS but serves nothing (no listener needs a certificate,
    /// so none is made).
    pub fn client_only(tls: &TlsConfig) -> Result<TlsContext, CertError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for f in &tls.ca_files {
            for c in read_certs(f)? {
                roots.add(c).map_err(|e| CertError::Bad {
                    path: f.clone(),
                    what: e.to_string(),
                })?;
            }
        }
        let mut peers = HashMap::new();
        for p in &tls.peers {
            peers.insert(p.domain.clone(), peer_trust(p)?);
        }
        Ok(TlsContext {
            server: None,
            trust: Arc::new(Trust {
                roots: Arc::new(roots),
                peers,
                cache: Mutex::new(HashMap::new()),
            }),
            cert_der: CertificateDer::from(Vec::new()),
            cert_path: PathBuf::new(),
            self_signed: false,
        })
    }

    /// The server side (listeners); `None` for a client-only context.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.server.clone()
    }

    /// The server side offering `alpn` (`http/1.1` for the dashboard).
    pub fn server_config_alpn(&self, alpn: &[&[u8]]) -> Option<Arc<ServerConfig>> {
        let mut c = (**self.server.as_ref()?).clone();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Some(Arc::new(c))
    }

    /// The client side for a connection to the SIP domain `domain`: its own CA or pin when
    /// configured, else the system roots and `[tls] ca_files`.
    pub fn client_config(&self, domain: &str) -> Result<Arc<ClientConfig>, CertError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut cache = self
            .trust
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cache.get(&domain) {
            return Ok(Arc::clone(c));
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match self.trust.peers.get(&domain) {
            Some(PeerTrust::Ca(roots)) => builder
                .with_root_certificates(Arc::clone(roots))
                .with_no_client_auth(),
            Some(PeerTrust::Pin(pin)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier { pin: *pin }))
                .with_no_client_auth(),
            None => builder
                .with_root_certificates(Arc::clone(&self.trust.roots))
                .with_no_client_auth(),
        };
        let config = Arc::new(config);
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(domain, Arc::clone(&config));
        Ok(config)
    }
}

/// The TLS context of a `serve` process: with the office's certificate when a `tls:` listener
/// or the dashboard's HTTPS listener (`https`) needs one (made on first start beside the store
/// at `store_path` when `[tls]` names none), else client-only.
pub fn for_config(
    sip: &SipConfig,
    https: Option<std::net::SocketAddr>,
    tls: &TlsConfig,
    store_path: &Path,
) -> Result<TlsContext, CertError> {
    let serves = sip.listen.iter().any(|l| l.transport == Transport::Tls)
        || https.is_some()
        || tls.cert.is_some();
    if !serves {
        return TlsContext::client_only(tls);
    }
    let mut names = vec![sip.domain.clone(), "localhost".to_owned()];
    if let Ok(h) = hostname() {
        names.push(h);
    }
    let addrs = sip
        .listen
        .iter()
        .map(|l| l.addr.ip())
        .chain(https.map(|a| a.ip()))
        .chain([std::net::IpAddr::from([127, 0, 0, 1])]);
    for ip in addrs {
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
    }
    TlsContext::load(tls, store_path, &names)
}

fn hostname() -> std::io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(name.trim().to_owned())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn peer_trust(p: &TlsPeer) -> Result<PeerTrust, CertError> {
    if let Some(pin) = p.pin {
        return Ok(PeerTrust::Pin(pin));
    }
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &p.ca {
        for c in read_certs(ca)? {
            roots.add(c).map_err(|e| CertError::Bad {
                path: ca.clone(),
                what: e.to_string(),
            })?;
        }
    }
    Ok(PeerTrust::Ca(Arc::new(roots)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|e| CertError::Bad {
        path: path.to_path_buf(),
        what: format!("not a PEM certificate file: {e}"),
    })?;
    if certs.is_empty() {
        return Err(CertError::Bad {
            path: path.to_path_buf(),
            what: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| CertError::Bad {
        path: path.to_path_buf(),
        what: format!("not a PEM private key: {e}"),
    })
}

/// Makes a self-signed certificate for `names` (host names or IP addresses) and writes it and
/// its key (mode 0600) to `cert` and `key`.
fn generate(cert: &Path, key: &Path, names: &[String]) -> Result<(), CertError> {
    let mut sans: Vec<String> = Vec::new();
    for n in names.iter().map(|n| n.trim().to_ascii_lowercase()) {
        if !n.is_empty() && !sans.contains(&n) {
            sans.push(n);
        }
    }
    let mut params =
        rcgen::CertificateParams::new(sans).map_err(|e| CertError::Generate(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "pasarela (self-signed)");
    params.distinguished_name = dn;
    // Ten years: an appliance's certificate should not expire under the office's feet.
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    let key_pair = rcgen::KeyPair::generate().map_err(|e| CertError::Generate(e.to_string()))?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| CertError::Generate(e.to_string()))?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write_private(key, key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, certificate.pem()).map_err(|source| CertError::Write {
        path: cert.to_path_buf(),
        source,
    })?;
    tracing::info!(cert = %cert.display(), "made a self-signed TLS certificate");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)
}

/// A server certificate is taken when its SHA-256 is the pin and it names the domain.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) != self.pin {
            return Err(rustls::Error::General(
                "the certificate does not match the configured pin".into(),
            ));
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
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
            &provider().signature_verification_algorithms,
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
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("pasarela.db");
        let names = vec!["office.test".to_owned(), "127.0.0.1".to_owned()];
        let a = TlsContext::load(&TlsConfig::default(), &store, &names).unwrap();
        assert!(a.self_signed);
        assert!(a.cert_path.starts_with(dir.path().join("tls")));
        let b = TlsContext::load(&TlsConfig::default(), &store, &names).unwrap();
        assert_eq!(
            a.cert_der, b.cert_der,
            "the certificate is reused on restart"
        );
        let (_, key) = self_signed_paths(&store);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
    }

    #[test]
    fn a_configured_cert_without_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsConfig {
            cert: Some(dir.path().join("missing.pem")),
            key: Some(dir.path().join("missing.key")),
            ..Default::default()
        };
        let e = TlsContext::load(&tls, &dir.path().join("db"), &[]).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
