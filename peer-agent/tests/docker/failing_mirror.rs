//! A mirror that fails on demand: it passes docker's requests on to an agent, except the GETs of
//! the blobs it was told to fail, which it answers 503 as an agent in trouble would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct FailingMirror {
    url: String,
    faults: Arc<Faults>,
    server: JoinHandle<()>,
}

struct Faults {
    agent: String,
    client: reqwest::Client,
    /// Blob digest → how many more GETs of it fail.
    failing: Mutex<HashMap<String, u32>>,
    /// Blob digest → GETs received.
    gets: Mutex<HashMap<String, u32>>,
}

impl FailingMirror {
    /// A mirror in front of the agent at `agent` (`http://ip:port`).
    pub async fn start(agent: &str) -> FailingMirror {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let faults = Arc::new(Faults {
            agent: agent.to_string(),
            client: damselfly_test_support::net::loopback_client().expect("client"),
            failing: Mutex::default(),
            gets: Mutex::default(),
        });
        let app = axum::Router::new().fallback(forward).with_state(faults.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("failing mirror");
        });
        FailingMirror { url, faults, server }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next `times` GETs of `digest` are answered 503.
    pub fn fail(&self, digest: &str, times: u32) {
        lock(&self.faults.failing).insert(digest.to_string(), times);
    }

    /// How many GETs of `digest` docker made.
    pub fn gets(&self, digest: &str) -> u32 {
        lock(&self.faults.gets).get(digest).copied().unwrap_or(0)
    }
}

impl Drop for FailingMirror {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn forward(State(faults): State<Arc<Faults>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    if let (&Method::GET, Some((_, digest))) = (request.method(), path.split_once("/blobs/")) {
        *lock(&faults.gets).entry(digest.to_string()).or_default() += 1;
        if let Some(left) = lock(&faults.failing).get_mut(digest).filter(|left| **left > 0) {
            *left -= 1;
            let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"failing on purpose"}]}"#;
            return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        }
    }
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = faults.client.request(
        request.method().clone(),
        format!("{}{path_and_query}", faults.agent),
    );
    for (name, value) in request.headers() {
        if name != http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != http::header::TRANSFER_ENCODING && name != http::header::CONNECTION {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
