//! A fault-injecting HTTP/1.1 reverse proxy.
//!
//! Placed between a client and a registry, or between an edge cache and its origin, it makes
//! traffic observable (which requests, how many blob bytes) and breakable on demand (truncated
//! or corrupted blob bodies, error statuses) while forwarding everything else verbatim. Tests
//! use it to prove that a mirror really served a pull, that content is fetched from the origin
//! exactly once, and that corrupted or interrupted transfers are detected and retried.

mod forward;
mod state;
mod tap;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::forward::Forwarder;
pub use self::state::RequestRecord;
use self::state::Shared;
use crate::net::{serve_connections, verbatim_client_builder};

/// A running proxy; shut down, including open connections, on drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Result<FaultProxy> {
        Self::start_on(upstream, "127.0.0.1").await
    }

    /// Like [`FaultProxy::start`], listening on `bind_ip` (any local address).
    pub async fn start_on(upstream: &str, bind_ip: &str) -> Result<FaultProxy> {
        let listener = TcpListener::bind((bind_ip, 0))
            .await
            .with_context(|| format!("binding fault proxy on {bind_ip}"))?;
        let addr = listener.local_addr().context("reading proxy address")?;
        let client = verbatim_client_builder()
            .http1_only()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building proxy client")?;
        let shared = Arc::new(Shared::default());
        let forwarder = Arc::new(Forwarder {
            shared: Arc::clone(&shared),
            client,
            upstream: format!("http://{upstream}"),
        });
        let server = tokio::spawn(serve(listener, forwarder));
        Ok(FaultProxy {
            addr,
            upstream: upstream.to_owned(),
            shared,
            server,
        })
    }

    /// `ip:port` the proxy listens on.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `host:port` requests are forwarded to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Response body bytes delivered for blob GETs since start or the last reset.
    pub fn blob_bytes(&self) -> u64 {
        self.shared.blob_bytes()
    }

    /// Number of blob GETs received (including ones answered by an injected failure).
    pub fn blob_gets(&self) -> u64 {
        self.shared.blob_gets()
    }

    /// Snapshot of every request received since start or the last reset, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    /// Zeroes the counters and clears the request log; armed faults stay armed.
    pub fn reset_counters(&self) {
        self.shared.reset_counters();
    }

    /// The next successful blob GET delivers only the first `n_bytes` of its body, then the
    /// connection is dropped. A body no longer than `n_bytes` is unaffected. One-shot.
    pub fn cut_blob_after(&self, n_bytes: u64) {
        self.shared.set_cut_after(n_bytes);
    }

    /// The next successful blob GET has the byte at `offset` (relative to its response body)
    /// inverted, length unchanged. One-shot.
    pub fn corrupt_blob_at(&self, offset: u64) {
        self.shared.set_corrupt_at(offset);
    }

    /// The next `n` blob GETs are answered with `status` and an empty body without contacting
    /// the upstream.
    pub fn fail_blobs(&self, n: u32, status: StatusCode) {
        self.shared.set_fail(n, status);
    }

    /// Paces every blob body from now on to `bytes_per_sec` (0: unpaced), so that a test can
    /// act while a transfer is in the middle. Not a one-shot fault: it stays until changed.
    pub fn set_blob_rate(&self, bytes_per_sec: u64) {
        self.shared.set_blob_rate(bytes_per_sec);
    }

    /// Disarms all pending faults.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.server.abort();
    }
}

/// The accept loop: aborting it tears down keep-alive connections too ([`serve_connections`]).
async fn serve(listener: TcpListener, forwarder: Arc<Forwarder>) {
    serve_connections(listener, "fault proxy", move |stream| {
        let forwarder = Arc::clone(&forwarder);
        async move {
            let service = service_fn(move |req| Arc::clone(&forwarder).handle(req));
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("fault proxy connection ended: {err}");
            }
        }
    })
    .await
}
