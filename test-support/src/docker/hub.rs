//! Docker Hub, played by a local registry.
//!
//! When its mirror fails, dockerd turns to `https://registry-1.docker.io` by itself. No registry
//! can be reached from these machines, so to watch that fallback happen (and succeed, or fail as
//! it does on a host that cannot reach Docker Hub), a daemon gets this stand-in as its HTTPS
//! proxy: it accepts `CONNECT registry-1.docker.io:443`, terminates TLS with a certificate for
//! that name from a CA of its own (the daemon trusts it through `SSL_CERT_FILE`), and passes the
//! plain requests on to a local registry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::net::serve_connections;

/// The host docker pulls Docker Hub images from.
pub const HUB_HOST: &str = "registry-1.docker.io";

/// Longest wait for a `CONNECT` head and the TLS handshake after it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest `CONNECT` head read.
const MAX_HEAD: usize = 8 * 1024;

/// A running stand-in; its listener and every connection close on drop.
#[derive(Debug)]
pub struct DockerHubStandIn {
    addr: SocketAddr,
    ca_file: PathBuf,
    connects: Arc<AtomicU64>,
    reachable: Arc<AtomicBool>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

impl DockerHubStandIn {
    /// Serves Docker Hub from the registry at `registry` (`host:port`, plain HTTP).
    pub async fn start(registry: &str) -> Result<DockerHubStandIn> {
        let dir = tempfile::Builder::new()
            .prefix("damselfly-hub-")
            .tempdir()
            .context("creating the stand-in's directory")?;
        let (ca_pem, chain, key) = certificates()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).context("writing the stand-in's CA")?;
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the Docker Hub stand-in")?;
        let addr = listener.local_addr()?;
        let connects = Arc::new(AtomicU64::new(0));
        let reachable = Arc::new(AtomicBool::new(true));
        let tunnel = Tunnel {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            registry: registry.to_owned(),
            connects: connects.clone(),
            reachable: reachable.clone(),
        };
        let server = tokio::spawn(serve(listener, Arc::new(tunnel)));
        Ok(DockerHubStandIn {
            addr,
            ca_file,
            connects,
            reachable,
            server,
            _dir: dir,
        })
    }

    /// The daemon's environment that sends its Docker Hub traffic here (loopback addresses,
    /// such as its mirror's, are never proxied) and makes it trust the stand-in's certificate.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        vec![
            ("HTTPS_PROXY".into(), format!("http://{}", self.addr)),
            ("SSL_CERT_FILE".into(), self.ca_file.display().to_string()),
        ]
    }

    /// How many connections to Docker Hub were asked for: how often docker turned to it.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Whether Docker Hub can be reached; when not, a `CONNECT` is answered 502, as a proxy
    /// that cannot reach it answers.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }
}

impl Drop for DockerHubStandIn {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.server.abort();
    }
}

/// A CA (PEM, for the daemon's trust store) and a certificate for [`HUB_HOST`] signed by it.
fn certificates() -> Result<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Docker Hub stand-in CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let hub_key = KeyPair::generate()?;
    let hub = CertificateParams::new(vec![HUB_HOST.to_owned()])?.signed_by(&hub_key, &ca, &ca_key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(hub_key.serialize_der()));
    Ok((ca.pem(), vec![hub.der().clone()], key))
}

struct Tunnel {
    acceptor: TlsAcceptor,
    registry: String,
    connects: Arc<AtomicU64>,
    reachable: Arc<AtomicBool>,
}

impl Tunnel {
    async fn handle(&self, mut client: TcpStream) -> Result<()> {
        let head = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head(&mut client))
            .await
            .context("CONNECT head timed out")??;
        let target = head
            .strip_prefix("CONNECT ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        self.connects.fetch_add(1, Ordering::Relaxed);
        if target != format!("{HUB_HOST}:443") || !self.reachable.load(Ordering::Relaxed) {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(client))
            .await
            .context("TLS handshake timed out")??;
        let mut registry = TcpStream::connect(&self.registry)
            .await
            .with_context(|| format!("connecting to {}", self.registry))?;
        tokio::io::copy_bidirectional(&mut tls, &mut registry).await?;
        Ok(())
    }
}

/// Reads up to the end of the request head (no body follows a `CONNECT`).
async fn read_head(client: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || client.read(&mut byte).await? == 0 {
            bail!("no complete CONNECT head");
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

async fn serve(listener: TcpListener, tunnel: Arc<Tunnel>) {
    serve_connections(listener, "Docker Hub stand-in", move |stream| {
        let tunnel = tunnel.clone();
        async move {
            if let Err(err) = tunnel.handle(stream).await {
                tracing::debug!("Docker Hub stand-in connection ended: {err:#}");
            }
        }
    })
    .await
}
