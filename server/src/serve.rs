//! One way to serve: a [`Server`] runs the daemon's listeners until shutdown, then drains.
//!
//! Every listener bounds, from [`ServerConfig`]: the time to deliver a request head (which
//! also closes idle kept-alive connections), open connections (beyond, a new connection gets
//! `503` with `Retry-After` and is closed, so a flood never runs the process out of file
//! descriptors), requests handled at once, the time to the response headers, and body size.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::connection::{accept_loop, ConnectionLimits};
use crate::metrics::ServerMetrics;
use crate::progress::SendProgress;
use crate::readiness::Readiness;
use crate::request::{wrap, RequestLimits};
use crate::tls::ServerTls;

/// Request bodies refused beyond this unless a listener says otherwise: the daemons take no
/// uploads, only small JSON.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// A bound socket and what it serves.
pub struct Listener {
    name: &'static str,
    tcp: TcpListener,
    app: Router,
    route_of: fn(&str) -> &'static str,
    body_limit: Option<usize>,
    trace_level: tracing::Level,
    on_accept: Option<fn(&TcpStream)>,
    tls: Option<Arc<ServerTls>>,
}

impl Listener {
    /// `name` labels the listener's connection metrics and logs (`registry`, `upload`, …).
    pub fn new(name: &'static str, tcp: TcpListener, app: Router) -> Self {
        Listener {
            name,
            tcp,
            app,
            route_of: |_| "other",
            body_limit: Some(DEFAULT_BODY_LIMIT),
            trace_level: tracing::Level::DEBUG,
            on_accept: None,
            tls: None,
        }
    }

    /// The bounded route label of a request path, for the request metrics.
    pub fn route_of(mut self, route_of: fn(&str) -> &'static str) -> Self {
        self.route_of = route_of;
        self
    }

    /// `None`: the handlers bound what they read themselves (and answer their own 413).
    pub fn body_limit(mut self, limit: Option<usize>) -> Self {
        self.body_limit = limit;
        self
    }

    /// INFO where a request's span parents work worth tracing (the preheater's jobs).
    pub fn trace_level(mut self, level: tracing::Level) -> Self {
        self.trace_level = level;
        self
    }

    /// Runs on every accepted socket before it is served (socket options of piece senders).
    pub fn on_accept(mut self, f: fn(&TcpStream)) -> Self {
        self.on_accept = Some(f);
        self
    }

    /// Serves TLS only (with `None`, plain HTTP). A verified client certificate gives each
    /// request a [`crate::tls::PeerIdentity`] extension.
    pub fn tls(mut self, tls: Option<Arc<ServerTls>>) -> Self {
        self.tls = tls;
        self
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

pub struct Server {
    config: ServerConfig,
    readiness: Readiness,
    metrics: ServerMetrics,
    listeners: Vec<Listener>,
}

impl Server {
    pub fn new(config: &ServerConfig, readiness: Readiness, metrics: ServerMetrics) -> Self {
        Server {
            config: config.clone(),
            readiness,
            metrics,
            listeners: Vec::new(),
        }
    }

    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Serves every listener and marks the daemon ready (its dependency checks still apply).
    /// When `shutdown` resolves: not ready, stop accepting, let in-flight requests finish and
    /// close idle connections, for up to `shutdown_grace_secs`; then return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let max_connections = crate::connection::usable_connections(self.config.max_connections);
        let (drain_tx, drain_rx) = watch::channel(false);
        let connections = TaskTracker::new();
        let mut accepting = tokio::task::JoinSet::new();
        let mut reloading = tokio::task::JoinSet::new();
        for listener in self.listeners {
            if let Some(tls) = &listener.tls {
                reloading.spawn(tls.clone().watch());
            }
            let limits = RequestLimits {
                max_concurrent: self.config.max_concurrent_requests,
                timeout: Duration::from_secs(self.config.request_timeout_secs),
                body_limit: listener.body_limit,
                trace_level: listener.trace_level,
            };
            let app = wrap(listener.app, &limits, self.metrics.clone(), listener.route_of);
            let conn_limits = Arc::new(ConnectionLimits {
                name: listener.name,
                tls: listener.tls,
                max_connections,
                header_read_timeout: Duration::from_secs(self.config.header_read_timeout_secs),
                send_progress: SendProgress {
                    min_rate: self.config.send_min_bytes_per_sec,
                    grace: Duration::from_secs(self.config.send_stall_secs),
                },
                on_accept: listener.on_accept,
                metrics: self.metrics.clone(),
            });
            accepting.spawn(accept_loop(
                listener.tcp,
                app,
                conn_limits,
                drain_rx.clone(),
                connections.clone(),
            ));
        }
        self.readiness.set_ready();
        tokio::select! {
            _ = shutdown => {}
            // An accept loop only ends on draining; one that stops early is a bug worth a log.
            Some(ended) = accepting.join_next() => {
                tracing::error!(result = ?ended.map(|_| ()), "a listener stopped accepting");
            }
        }
        self.readiness.set_draining();
        tracing::info!("shutting down: not ready, draining in-flight requests");
        let _ = drain_tx.send(true);
        reloading.abort_all();
        while accepting.join_next().await.is_some() {}
        connections.close();
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, connections.wait()).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                open = connections.len(),
                "grace period over; closing remaining connections"
            );
        }
        Ok(())
    }
}
