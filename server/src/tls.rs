//! TLS for listeners and for outbound calls, and the identity a client certificate proves.
//!
//! A listener with `[tls] cert` and `key` speaks only TLS. With `client_ca`, clients may present
//! a certificate signed by that CA; a verified one gives the request a [`PeerIdentity`] (its
//! `spiffe://` URI SAN when present, else its subject CN). Clients without a certificate are
//! still served, as anonymous: what an anonymous caller may do is the handlers' decision.
//!
//! Certificates rotate: the files are checked every [`RELOAD_EVERY`] and new connections use the
//! new ones (a failed reload keeps the old ones and says why).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// How often certificate files are checked for rotation.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The `[tls]` section of every daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. Served on this daemon's TLS listeners (edge, preheater); an agent
    /// presents it to the edges as its identity.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`; refused when group or others may read it.
    pub key: Option<PathBuf>,
    /// PEM CA whose client certificates are verified (the edge: agents' identities).
    pub client_ca: Option<PathBuf>,
    /// PEM CA certificates trusted for outbound calls, besides the system's store (an internal
    /// CA for on-premises registries, the edges, Redis, the OTLP collector).
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.cert.is_some() != self.key.is_some() {
            return invalid("tls.cert and tls.key go together".into());
        }
        if self.client_ca.is_some() && self.cert.is_none() {
            return invalid(
                "tls.client_ca needs tls.cert and tls.key (client certificates are only asked for over TLS)"
                    .into(),
            );
        }
        for path in [&self.cert, &self.client_ca, &self.ca_file].into_iter().flatten() {
            if !path.is_file() {
                return invalid(format!("{} does not exist or is not a file", path.display()));
            }
        }
        if let Some(key) = &self.key {
            check_private(key).map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// Whether listeners serve TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// A file holding a secret (a private key, a token, a cluster secret) must exist and must not
/// be readable by group or others.
pub fn check_private(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {:o}): a secret must be readable by its owner only (chmod 600)",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

/// What a verified client certificate proves: who the caller is (`name`: the certificate's
/// `spiffe://` URI when it carries one, else its subject CN) and the addresses the CA vouched
/// for (`addresses`: its DNS and IP subject alternative names).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub name: String,
    pub addresses: Vec<String>,
}

impl PeerIdentity {
    pub fn of(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let mut spiffe = None;
        let mut addresses = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => spiffe = Some(uri.to_string()),
                    GeneralName::DNSName(dns) => addresses.push(dns.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => addresses.extend(ip_of(bytes).map(|ip| ip.to_string())),
                    _ => {}
                }
            }
        }
        let name = match spiffe {
            Some(uri) => uri,
            None => parsed
                .subject()
                .iter_common_name()
                .next()?
                .as_str()
                .ok()?
                .to_string(),
        };
        (!name.is_empty()).then_some(PeerIdentity { name, addresses })
    }

    /// Whether `host` (a DNS name or an IP address, as in a URL) is one the certificate names.
    pub fn vouches_for(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.addresses.contains(&host)
    }
}

fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_pem_certs(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every certificate in PEM text; an error when there is none.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    check_private(path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn server_config(config: &TlsConfig) -> Result<rustls::ServerConfig, String> {
    let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
        return Err("TLS needs tls.cert and tls.key".into());
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// The TLS side of a listener: the current server configuration, rebuilt when its files change.
pub struct ServerTls {
    config: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
    loaded_at: RwLock<Vec<Option<SystemTime>>>,
}

impl ServerTls {
    pub fn load(config: &TlsConfig) -> Result<Arc<ServerTls>, String> {
        let server = server_config(config)?;
        Ok(Arc::new(ServerTls {
            current: RwLock::new(Arc::new(server)),
            loaded_at: RwLock::new(modified(config)),
            config: config.clone(),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(current)
    }

    /// Rebuilds the configuration if a file changed since it was loaded; `Ok(true)` if it did.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = modified(&self.config);
        if self.loaded_at.read().map(|l| *l == now).unwrap_or(false) {
            return Ok(false);
        }
        let server = server_config(&self.config)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(server);
        }
        if let Ok(mut loaded) = self.loaded_at.write() {
            *loaded = now;
        }
        Ok(true)
    }

    /// Checks the files every [`RELOAD_EVERY`] for as long as the listener runs.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(cert = ?self.config.cert, "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but cannot be loaded; keeping the previous ones")
                }
            }
        }
    }
}

fn modified(config: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&config.cert, &config.key, &config.client_ca]
        .into_iter()
        .map(|p| {
            p.as_ref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

/// An outbound HTTP client builder that trusts the system's CAs plus `ca_file`, and presents
/// `cert`/`key` as its client certificate when `present_identity` (agents and edges calling
/// edges). Callers add their timeouts and options.
pub fn client_builder(config: &TlsConfig, present_identity: bool) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(ca) = &config.ca_file {
        for cert in read_certs(ca)? {
            let cert = reqwest::Certificate::from_der(cert.as_ref())
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (true, Some(cert), Some(key)) = (present_identity, &config.cert, &config.key) {
        check_private(key)?;
        let mut pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        pem.extend(std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| format!("{}: {e}", cert.display()))?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// A Redis client for `url`: over TLS (`rediss://`) it trusts the system's CAs, or `ca_file`
/// when given (a private CA), and presents `cert`/`key` when the server asks for a client
/// certificate.
pub fn redis_client(url: &str, config: &TlsConfig) -> Result<redis::Client, String> {
    let shown = crate::config::redact_url(url);
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    if !url.starts_with("rediss://") || (config.ca_file.is_none() && config.cert.is_none()) {
        return redis::Client::open(url).map_err(|e| format!("redis {shown}: {e}"));
    }
    let client_tls = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    let root_cert = config.ca_file.as_ref().map(read).transpose()?;
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| format!("redis {shown}: {e}"))
}

/// Longest wait for Redis to accept a connection, and for any one answer: a Redis that stops
/// answering (stopped, partitioned, swapping) fails calls instead of hanging them.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A reconnecting Redis connection with connect and response timeouts (the client's defaults
/// have none). The first connection is one plain attempt, bounded: the connection manager
/// retries some failures (a TLS certificate it does not trust among them) without end, where
/// the operator needs the reason.
pub async fn redis_connection(client: &redis::Client) -> Result<redis::aio::ConnectionManager, String> {
    let first_wait = REDIS_CONNECT_TIMEOUT * 2;
    let no_answer = || format!("no answer within {first_wait:?}");
    let first = tokio::time::timeout(first_wait, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| no_answer())?;
    drop(first.map_err(|e| e.to_string())?);
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_CONNECT_TIMEOUT)
        .set_response_timeout(REDIS_RESPONSE_TIMEOUT)
        .set_number_of_retries(3);
    tokio::time::timeout(
        first_wait,
        redis::aio::ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| no_answer())?
    .map_err(|e| e.to_string())
}
