//! Talking to the region's edges (nearest first, failing over) and, as the last resort, to the
//! origin registry itself.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use damselfly_core::{
    Digest, Location, ParentCandidate, PeerAnnouncement, PieceTable, TaskKey, TicketVerifier,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;

use crate::config::Config;
use crate::download::{BlobRequest, TaskOrigin};
use crate::error::{AgentError, AgentResult, PassedReply};

/// An edge that failed is skipped for this long.
const DEAD_FOR: Duration = Duration::from_secs(10);
pub const TICKET_HEADER: &str = "x-damselfly-ticket";
/// Set by an edge on an answer about its own failed transfer from the origin.
const TRANSFER_FAILED_HEADER: &str = "x-damselfly-transfer-failed";

/// What an edge answered for a task.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub table: PieceTable,
    pub complete: bool,
    pub key: TaskKey,
    pub ticket: String,
    /// Which edge answered (index into the configured edges).
    pub edge: usize,
}

#[derive(Deserialize)]
struct TaskWire {
    #[serde(flatten)]
    table: PieceTable,
    /// The index of the first hash in `table.pieces` (the caller already had the ones before);
    /// 0 from edges that always send the whole table.
    #[serde(default)]
    pieces_from: usize,
    complete: bool,
    task_key: String,
    ticket: String,
}

/// A table whose hashes start at `from`, completed with the first `from` hashes of `known`.
fn with_known_hashes(
    mut table: PieceTable,
    from: usize,
    known: Option<&PieceTable>,
) -> AgentResult<PieceTable> {
    if from == 0 {
        return Ok(table);
    }
    let known = known
        .filter(|k| k.digest == table.digest && k.layout == table.layout && k.pieces.len() >= from)
        .ok_or_else(|| {
            AgentError::Unavailable(format!("the edge sent a table from piece {from} of one not held"))
        })?;
    let mut pieces = known.pieces[..from].to_vec();
    pieces.append(&mut table.pieces);
    table.pieces = pieces;
    Ok(table)
}

pub struct Edges {
    urls: Vec<String>,
    dead_until: Vec<Mutex<Option<Instant>>>,
    default_origin: Option<String>,
    registries: Vec<(String, String)>,
    /// Relayed registry requests and plain files: bodies pass through untouched.
    http: reqwest::Client,
    /// Piece tables and parent lists: JSON, compressed on the wire (most of the scheduler's
    /// bytes: agents ask several times a second per download).
    control_http: reqwest::Client,
    piece_http: reqwest::Client,
}

/// The request a runtime made, to be relayed.
pub struct Relay<'a> {
    pub method: Method,
    /// `/v2/...` path, without query.
    pub path: &'a str,
    pub ns: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl Edges {
    pub fn new(config: &Config) -> AgentResult<Edges> {
        // Only the scheduler's JSON answers are compressed: relayed registry traffic passes
        // through as sent, and pieces are sealed (incompressible).
        let build = |timeout: Option<Duration>, gzip: bool| {
            let mut b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .pool_idle_timeout(Duration::from_secs(30))
                .gzip(gzip)
                .user_agent(concat!("damselfly-agent/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.build()
                .map_err(|e| AgentError::Internal(format!("http client: {e}")))
        };
        Ok(Edges {
            urls: config
                .edges
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            dead_until: config.edges.iter().map(|_| Mutex::new(None)).collect(),
            default_origin: config
                .upstream
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            registries: config
                .registries
                .iter()
                .map(|r| (r.registry.clone(), r.url.trim_end_matches('/').to_string()))
                .collect(),
            http: build(None, false)?,
            control_http: build(None, true)?,
            piece_http: build(
                Some(Duration::from_secs(config.download.piece_timeout_secs)),
                false,
            )?,
        })
    }

    pub fn url(&self, edge: usize) -> &str {
        &self.urls[edge]
    }

    pub fn mark_dead(&self, edge: usize) {
        if let Some(slot) = self.dead_until.get(edge) {
            if let Ok(mut s) = slot.lock() {
                *s = Some(Instant::now() + DEAD_FOR);
            }
        }
    }

    /// Edges worth trying now, nearest first (all of them if every one is marked dead).
    fn live(&self) -> Vec<usize> {
        let now = Instant::now();
        let live: Vec<usize> = (0..self.urls.len())
            .filter(|i| {
                self.dead_until[*i]
                    .lock()
                    .map(|d| d.is_none_or(|t| t <= now))
                    .unwrap_or(true)
            })
            .collect();
        if live.is_empty() {
            (0..self.urls.len()).collect()
        } else {
            live
        }
    }

    /// The origin registry for `ns` (a configured one, else `https://<ns>`), or the default.
    pub fn origin(&self, ns: Option<&str>) -> Option<String> {
        match ns.filter(|n| !n.is_empty()) {
            Some(ns) => Some(
                self.registries
                    .iter()
                    .find(|(name, _)| name == ns)
                    .map(|(_, url)| url.clone())
                    .unwrap_or_else(|| format!("https://{ns}")),
            ),
            None => self.default_origin.clone(),
        }
    }

    fn relay_request(&self, base: &str, relay: &Relay<'_>, with_ns: bool) -> reqwest::RequestBuilder {
        let mut url = format!("{base}{}", relay.path);
        if let (true, Some(ns)) = (with_ns, relay.ns) {
            url.push_str("?ns=");
            url.push_str(&ns.replace(':', "%3A"));
        }
        let mut builder = self.http.request(relay.method.clone(), url);
        for name in [
            http::header::ACCEPT,
            http::header::AUTHORIZATION,
            http::header::RANGE,
        ] {
            for v in relay.headers.get_all(&name) {
                builder = builder.header(&name, v.clone());
            }
        }
        builder
    }

    /// Relays a registry request: to each live edge in turn, then to the origin. A 4xx is an
    /// answer (returned as is); connection failures and 5xx move on to the next target.
    pub async fn relay(&self, relay: &Relay<'_>) -> AgentResult<(reqwest::Response, &'static str)> {
        let mut last = String::from("no edge or origin configured");
        for edge in self.live() {
            match self.relay_request(&self.urls[edge], relay, true).send().await {
                Ok(r) if !r.status().is_server_error() => return Ok((r, "edge")),
                Ok(r) => last = format!("edge {} answered {}", self.urls[edge], r.status()),
                Err(e) => {
                    self.mark_dead(edge);
                    last = format!("edge {}: {e}", self.urls[edge]);
                }
            }
        }
        match self.relay_to_origin(relay).await {
            Ok(r) => Ok((r, "origin")),
            Err(e) => Err(AgentError::Unavailable(format!("{last}; {e}"))),
        }
    }

    /// Relays a registry request to the origin registry directly.
    pub async fn relay_to_origin(&self, relay: &Relay<'_>) -> AgentResult<reqwest::Response> {
        let origin = self
            .origin(relay.ns)
            .ok_or_else(|| AgentError::Unavailable("no origin known for this registry".into()))?;
        self.relay_request(&origin, relay, false)
            .send()
            .await
            .map_err(|e| AgentError::Unavailable(format!("origin {origin}: {e}")))
    }

    /// A plain file straight from its server, with the caller's `Range` (the last resort).
    pub async fn file_from_origin(
        &self,
        url: &str,
        range: Option<&HeaderValue>,
    ) -> AgentResult<reqwest::Response> {
        let mut request = self.http.get(url);
        if let Some(r) = range {
            request = request.header(http::header::RANGE, r.clone());
        }
        request
            .send()
            .await
            .map_err(|e| AgentError::Unavailable(format!("{url}: {e}")))
    }

    /// Asks the edges for a task (for a blob, the edge checks the caller's credentials against
    /// the upstream). A refusal comes back as `Refused`; `Unavailable` means no edge could answer.
    ///
    /// `known`: a refresh of the table already held (while the edge is still sealing pieces).
    /// The edge then sends only the hashes after it, and reports a failed transfer instead of
    /// starting it again.
    pub async fn task(
        &self,
        task: &BlobRequest,
        after: Option<usize>,
        known: Option<&PieceTable>,
    ) -> AgentResult<TaskInfo> {
        let mut last = String::from("no edge configured");
        let order: Vec<usize> = match after {
            // Failing over: the edges after the one that failed, then the rest.
            Some(failed) => self.live().into_iter().filter(|e| *e != failed).collect(),
            None => self.live(),
        };
        let mut query: Vec<(&str, String)> = match &task.origin {
            TaskOrigin::Registry { repo, ns } => std::iter::once(("repo", repo.clone()))
                .chain(ns.iter().map(|ns| ("ns", ns.clone())))
                .collect(),
            TaskOrigin::File { url, expected } => std::iter::once(("url", url.clone()))
                .chain(expected.iter().map(|d| ("digest", d.to_string())))
                .collect(),
        };
        if let Some(known) = known {
            query.push(("follow", "true".into()));
            query.push(("known", known.pieces.len().to_string()));
        }
        for edge in order {
            let url = format!("{}/api/v1/tasks/{}", self.urls[edge], task.digest);
            let mut request = self
                .control_http
                .get(url)
                .query(&query)
                .timeout(Duration::from_secs(120));
            if let Some(a) = &task.authorization {
                request = request.header(http::header::AUTHORIZATION, a.clone());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.mark_dead(edge);
                    last = format!("edge {}: {e}", self.urls[edge]);
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() {
                if response.headers().contains_key(TRANSFER_FAILED_HEADER) {
                    let body = response.text().await.unwrap_or_default();
                    return Err(AgentError::TransferFailed(body));
                }
                last = format!("edge {} answered {status}", self.urls[edge]);
                continue;
            }
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = response.bytes().await.unwrap_or_default();
                return Err(AgentError::Refused(Box::new(PassedReply::from_parts(
                    status, &headers, body,
                ))));
            }
            let wire: TaskWire = response
                .json()
                .await
                .map_err(|e| AgentError::Unavailable(format!("task answer: {e}")))?;
            let key = decode_key(&wire.task_key)?;
            let table = with_known_hashes(wire.table, wire.pieces_from, known)?;
            return Ok(TaskInfo {
                table,
                complete: wire.complete,
                key,
                ticket: wire.ticket,
                edge,
            });
        }
        Err(AgentError::Unavailable(last))
    }

    pub async fn parents(
        &self,
        edge: usize,
        digest: &Digest,
        ticket: &str,
        host_id: &str,
        location: &Location,
    ) -> AgentResult<Vec<ParentCandidate>> {
        #[derive(Deserialize)]
        struct Parents {
            parents: Vec<ParentCandidate>,
        }
        let url = format!("{}/api/v1/tasks/{digest}/parents", self.urls[edge]);
        let response = self
            .control_http
            .get(url)
            .query(&[("host_id", host_id), ("location", &location.to_string())])
            .header(TICKET_HEADER, ticket)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        let parents: Parents = response
            .error_for_status()
            .map_err(|e| AgentError::Unavailable(e.to_string()))?
            .json()
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        Ok(parents.parents)
    }

    pub async fn announce(
        &self,
        edge: usize,
        digest: &Digest,
        host_id: &str,
        ticket: &str,
        announcement: &PeerAnnouncement,
    ) -> AgentResult<()> {
        let url = format!("{}/api/v1/tasks/{digest}/peers/{host_id}", self.urls[edge]);
        self.http
            .put(url)
            .header(TICKET_HEADER, ticket)
            .json(announcement)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|_| ())
            .map_err(|e| AgentError::Unavailable(e.to_string()))
    }

    pub async fn leave(&self, edge: usize, digest: &Digest, host_id: &str, ticket: &str) {
        let url = format!("{}/api/v1/tasks/{digest}/peers/{host_id}", self.urls[edge]);
        let _ = self
            .http
            .delete(url)
            .header(TICKET_HEADER, ticket)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
    }

    /// One sealed piece from an upload server (a peer's or an edge's `/pieces`).
    pub async fn piece(&self, base: &str, digest: &Digest, index: u64, ticket: &str) -> AgentResult<Bytes> {
        let response = self
            .piece_http
            .get(format!("{base}/pieces/{digest}/{index}"))
            .header(TICKET_HEADER, ticket)
            .send()
            .await
            .map_err(|e| AgentError::Unavailable(format!("{base}: {e}")))?;
        match response.status() {
            StatusCode::OK => response
                .bytes()
                .await
                .map_err(|e| AgentError::Unavailable(format!("{base}: {e}"))),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                Err(AgentError::Busy("parent is busy"))
            }
            _ if response.headers().contains_key(TRANSFER_FAILED_HEADER) => Err(AgentError::TransferFailed(
                response.text().await.unwrap_or_default(),
            )),
            s => Err(AgentError::Unavailable(format!("{base} answered {s}"))),
        }
    }

    /// The edges' ticket verification key (any edge of the cluster gives the same one).
    pub async fn ticket_key(&self) -> AgentResult<TicketVerifier> {
        #[derive(Deserialize)]
        struct Key {
            public_key: String,
        }
        for edge in self.live() {
            let url = format!("{}/api/v1/ticket-key", self.urls[edge]);
            if let Ok(r) = self.http.get(url).timeout(Duration::from_secs(5)).send().await {
                if let Ok(key) = r.json::<Key>().await {
                    return TicketVerifier::from_base64(&key.public_key)
                        .map_err(|e| AgentError::Internal(format!("ticket key: {e}")));
                }
            }
        }
        Err(AgentError::Unavailable(
            "no edge answered for the ticket key".into(),
        ))
    }
}

fn decode_key(b64: &str) -> AgentResult<TaskKey> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| AgentError::Unavailable("edge sent a malformed task key".into()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| AgentError::Unavailable("edge sent a task key of the wrong size".into()))?;
    Ok(TaskKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use damselfly_core::PieceLayout;

    fn table(hashes: std::ops::Range<u8>) -> PieceTable {
        PieceTable {
            digest: Digest::of(b"blob"),
            layout: PieceLayout::for_size(8 << 20),
            pieces: hashes.map(|i| [i; 32]).collect(),
        }
    }

    #[test]
    fn a_partial_table_is_completed_with_the_hashes_already_held() {
        let known = table(0..3);
        let merged = with_known_hashes(table(2..6), 2, Some(&known)).unwrap();
        assert_eq!(merged, table(0..6), "the known prefix, then what the edge sent");
        // A whole table (an edge that ignores `known`) replaces what was held.
        assert_eq!(
            with_known_hashes(table(0..6), 0, Some(&known)).unwrap(),
            table(0..6)
        );
        // A suffix that does not fit what is held is not trusted.
        assert!(with_known_hashes(table(5..6), 5, Some(&known)).is_err());
        assert!(with_known_hashes(table(2..6), 2, None).is_err());
        let other = PieceTable {
            digest: Digest::of(b"other"),
            ..table(0..3)
        };
        assert!(with_known_hashes(table(2..6), 2, Some(&other)).is_err());
    }
}
