//! A plain HTTP file server (tower-http's `ServeDir`: `Range`, `Content-Length`, 404s) that
//! counts what it sends, standing for the web server a `peer-agent get` fetches from.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    bytes: AtomicU64,
}

pub struct FileServer {
    addr: SocketAddr,
    root: tempfile::TempDir,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl FileServer {
    pub async fn start() -> Result<FileServer> {
        let root = tempfile::Builder::new().prefix("damselfly-files-").tempdir()?;
        let counters = Arc::new(Counters::default());
        let app = axum::Router::new()
            .fallback_service(tower_http::services::ServeDir::new(root.path()))
            .layer(axum::middleware::from_fn_with_state(counters.clone(), count));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FileServer {
            addr,
            root,
            counters,
            task,
        })
    }

    /// Writes `name` under the served root and returns its URL.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<String> {
        std::fs::write(self.root.path().join(name), bytes)?;
        Ok(self.url(name))
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// `http://127.0.0.1:<port>/`, the prefix an edge's `[files] allow` needs.
    pub fn prefix(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn gets(&self) -> u64 {
        self.counters.gets.load(Ordering::SeqCst)
    }

    /// Body bytes announced in successful answers (`Content-Length` of 200 and 206 responses).
    pub fn bytes_sent(&self) -> u64 {
        self.counters.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn count(State(counters): State<Arc<Counters>>, request: Request, next: Next) -> Response {
    let is_get = request.method() == http::Method::GET;
    let response = next.run(request).await;
    if is_get {
        counters.gets.fetch_add(1, Ordering::SeqCst);
        if response.status().is_success() {
            let len = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            counters.bytes.fetch_add(len, Ordering::SeqCst);
        }
    }
    response
}
