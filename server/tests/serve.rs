//! The serve function on real sockets: what a slow, greedy or departing client gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, MethodRouter};
use axum::Router;
use damselfly_server::{Listener, Readiness, Server, ServerConfig, ServerMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    readiness: Readiness,
}

async fn start(config: ServerConfig, app: Router) -> Running {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ServerMetrics::register(&mut registry);
    let readiness = Readiness::new();
    let app = app.merge(damselfly_server::ops::routes(
        readiness.clone(),
        Arc::new(String::new),
    ));
    let server = Server::new(&config, readiness.clone(), metrics).listener(Listener::new("test", tcp, app));
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
        readiness,
    }
}

/// A handler that answers "done" once `release` is notified.
fn held_until_released(release: &Arc<Notify>) -> MethodRouter {
    let held = release.clone();
    get(move || {
        let held = held.clone();
        async move {
            held.notified().await;
            "done"
        }
    })
}

async fn get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Reads until the peer closes the connection (or `within` passes): how long that took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        if start.elapsed() >= within {
            return None;
        }
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_closed_at_the_header_timeout() {
    let config = ServerConfig {
        header_read_timeout_secs: 1,
        ..ServerConfig::default()
    };
    let server = start(config, Router::new().route("/v2/", get(|| async { "{}" }))).await;
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"GET /v2/ HTTP/1.1\r\n").await.unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let closed = closed_within(&mut partial, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(3)),
        "partial head still open: {closed:?}"
    );
    let closed = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a connection that sends nothing is closed too");
    assert_eq!(
        get_status(server.addr, "/v2/").await,
        200,
        "others are served meanwhile"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_and_ops_answer_again_once_they_close() {
    let config = ServerConfig {
        max_connections: 3,
        ..ServerConfig::default()
    };
    let server = start(config, Router::new()).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let s = TcpStream::connect(server.addr).await.unwrap();
        idle.push(s);
    }
    // The accept loop counts a connection once it has taken it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get_status(server.addr, "/healthz").await, 200);
}

#[tokio::test]
async fn one_concurrency_limit_covers_every_route() {
    let release = Arc::new(Notify::new());
    let app = Router::new()
        .route("/slow", held_until_released(&release))
        .route("/other", get(|| async { "other" }));
    let config = ServerConfig {
        max_concurrent_requests: 1,
        ..ServerConfig::default()
    };
    let server = start(config, app).await;
    let addr = server.addr;
    let slow = tokio::spawn(async move { get_status(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        release.notify_waiters();
    });
    let started = Instant::now();
    assert_eq!(get_status(addr, "/other").await, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "/other ran while /slow held the only permit ({:?})",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap(), 200);
    releaser.await.unwrap();
}

#[tokio::test]
async fn drain_refuses_new_connections_and_lets_the_request_in_flight_finish() {
    let release = Arc::new(Notify::new());
    let app = Router::new().route("/slow", held_until_released(&release));
    let mut server = start(ServerConfig::default(), app).await;
    assert_eq!(get_status(server.addr, "/readyz").await, 200);
    let addr = server.addr;
    let slow = tokio::spawn(async move {
        reqwest::get(format!("http://{addr}/slow"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.readiness.is_draining());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections while draining"
    );
    release.notify_waiters();
    assert_eq!(slow.await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("drained well within the grace period")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_client_that_stays_connected_past_the_grace_period_does_not_hold_shutdown() {
    let app = Router::new().route("/hang", get(std::future::pending::<&'static str>));
    let config = ServerConfig {
        shutdown_grace_secs: 1,
        ..ServerConfig::default()
    };
    let mut server = start(config, app).await;
    let addr = server.addr;
    let _hang = tokio::spawn(async move { get_status(addr, "/hang").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("returns after the grace period")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_others_are_served() {
    let endless = || async {
        let zeros = futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[0u8; 16384]))
        });
        axum::body::Body::from_stream(zeros)
    };
    let config = ServerConfig {
        send_min_bytes_per_sec: 1024 * 1024,
        send_stall_secs: 1,
        ..ServerConfig::default()
    };
    let server = start(
        config,
        Router::new()
            .route("/endless", get(endless))
            .route("/small", get(|| async { "small" })),
    )
    .await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get_status(server.addr, "/small").await, 200);
    // Closed by now: what is left is what the kernel buffered before the server gave up.
    let closed = closed_within(&mut stalled, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the stalled reader's connection is still open");
}
