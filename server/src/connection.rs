//! Connections: accepting under a limit, and serving each one with HTTP/1.1 until it closes or
//! the server drains.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::metrics::{ListenerLabels, ServerMetrics};
use crate::progress::{ProgressIo, SendProgress};
use crate::tls::{PeerIdentity, ServerTls};

pub(crate) struct ConnectionLimits {
    pub name: &'static str,
    /// TLS for every connection (the handshake bounded by the header-read timeout).
    pub tls: Option<Arc<ServerTls>>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub send_progress: SendProgress,
    pub on_accept: Option<fn(&TcpStream)>,
    pub metrics: ServerMetrics,
}

/// What a connection beyond the limit is told before it is closed.
const SHED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// File descriptors kept for everything that is not a client connection (store files,
/// outbound connections, Redis, logs).
const RESERVED_FDS: u64 = 256;

/// Raises this process's open-files limit to its hard limit, and returns how many client
/// connections a listener may hold without running out of descriptors (`wanted` at most).
pub(crate) fn usable_connections(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-files limit");
        }
        limit = getrlimit(Resource::Nofile);
    }
    let Some(current) = limit.current else {
        return wanted;
    };
    let usable = current.saturating_sub(RESERVED_FDS).max(1) as usize;
    if usable < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_files_limit = current,
            using = usable,
            "max_connections is above what the open-files limit allows; lowered"
        );
    }
    wanted.min(usable)
}

/// Counts a connection as open for as long as it lives.
struct Open {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Open {
    fn new(count: &Arc<AtomicUsize>, gauge: &Gauge) -> Open {
        count.fetch_add(1, Ordering::SeqCst);
        gauge.inc();
        Open {
            count: count.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.gauge.dec();
    }
}

pub(crate) async fn accept_loop(
    tcp: TcpListener,
    app: Router,
    limits: Arc<ConnectionLimits>,
    mut drain: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    let labels = ListenerLabels {
        listener: limits.name,
    };
    let gauge = limits.metrics.connections_open.get_or_create(&labels).clone();
    let shed = limits.metrics.connections_shed.get_or_create(&labels).clone();
    let open = Arc::new(AtomicUsize::new(0));
    let mut warned_at: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = draining(&mut drain) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors: pause accepting instead of spinning; connections that
                // close free some.
                if matches!(e.raw_os_error(), Some(23 /* ENFILE */ | 24 /* EMFILE */)) {
                    if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(listener = limits.name, error = %e, "out of file descriptors; pausing accepts");
                        warned_at = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    tracing::debug!(listener = limits.name, error = %e, "accept failed");
                }
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= limits.max_connections {
            shed.inc();
            tokio::spawn(refuse(stream));
            continue;
        }
        if let Some(on_accept) = limits.on_accept {
            on_accept(&stream);
        }
        let guard = Open::new(&open, &gauge);
        let app = app.clone();
        let drain = drain.clone();
        let header_read_timeout = limits.header_read_timeout;
        let tls = limits.tls.clone();
        // Below TLS, so what counts is the bytes the peer actually takes.
        let stream = ProgressIo::new(stream, limits.send_progress);
        connections.spawn(async move {
            let _open = guard;
            let Some(tls) = tls else {
                let service = WithIdentity::new(app, peer, None);
                return serve_connection(TokioIo::new(stream), service, header_read_timeout, drain).await;
            };
            // A client that does not finish its handshake in time is treated like one that does
            // not finish its request head.
            let stream = match tokio::time::timeout(header_read_timeout, tls.acceptor().accept(stream)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(PeerIdentity::of);
            let service = WithIdentity::new(app, peer, identity);
            serve_connection(TokioIo::new(stream), service, header_read_timeout, drain).await;
        });
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(SHED).await?;
        stream.shutdown().await
    })
    .await;
}

/// The app, with the connection's peer address (axum's `ConnectInfo`) and verified client
/// identity (if any) on every request.
#[derive(Clone)]
struct WithIdentity {
    app: TowerToHyperService<Router>,
    peer: SocketAddr,
    identity: Option<PeerIdentity>,
}

impl WithIdentity {
    fn new(app: Router, peer: SocketAddr, identity: Option<PeerIdentity>) -> Self {
        WithIdentity {
            app: TowerToHyperService::new(app),
            peer,
            identity,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for WithIdentity {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        // Set here, never taken from the request: a client cannot claim an identity.
        request.extensions_mut().remove::<PeerIdentity>();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(identity) = &self.identity {
            request.extensions_mut().insert(identity.clone());
        }
        self.app.call(request)
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    service: WithIdentity,
    header_read_timeout: Duration,
    mut drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = draining(&mut drain) => {
            // Finish the request in flight, then close instead of keeping the connection alive.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        log_connection_error(&e);
    }
}

/// Resolves once the server drains (the watch guard is not held across awaits).
async fn draining(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await;
}

fn log_connection_error(e: &hyper::Error) {
    if e.is_timeout() {
        tracing::debug!(error = %e, "closed a connection that sent no complete request in time");
    } else if !e.is_incomplete_message() {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
