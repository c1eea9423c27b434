//! The region's edges, nearest first: tasks (piece table, key, ticket) and the scheduler
//! (announcements, parents), failing over to the next edge when one is down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use damselfly_core::api::scheduler::{parents_path, peer_path};
use damselfly_core::api::task::{task_path, TICKET_KEY_PATH};
use damselfly_core::api::{
    ParentsAnswer, ParentsQuery, PeerAnnouncement, TaskAnswer, TicketKeyAnswer, TICKET_HEADER,
    TRANSFER_FAILED_HEADER,
};
use damselfly_core::{Digest, Location, PieceTable, TaskKey, TicketVerifier};

use crate::error::{AgentError, AgentResult, PassedReply};
use crate::request::BlobRequest;

/// An edge that failed is skipped for this long.
const DEAD_FOR: Duration = Duration::from_secs(10);

/// What an edge answered for a task.
#[derive(Clone, Debug)]
pub(crate) struct TaskInfo {
    pub(crate) table: PieceTable,
    pub(crate) complete: bool,
    pub(crate) key: TaskKey,
    pub(crate) ticket: String,
    /// When the ticket was received and when it expires (unix seconds).
    pub(crate) ticket_since: u64,
    pub(crate) ticket_expires_at: u64,
    /// Which edge answered (index into the configured edges).
    pub(crate) edge: usize,
}

impl TaskInfo {
    /// Whether the ticket is in the last third of its life: time to ask the edge for a new one
    /// (announcements and pieces need a valid ticket while downloading and while seeding).
    pub(crate) fn ticket_due(&self, now: u64) -> bool {
        let life = self.ticket_expires_at.saturating_sub(self.ticket_since);
        self.ticket_expires_at.saturating_sub(now) <= life / 3
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) struct EdgeClient {
    urls: Vec<String>,
    /// The edge asked first (`spread_edges`); the others follow in the order listed.
    first: usize,
    dead_until: Vec<Mutex<Option<Instant>>>,
    /// Announcements, leaving, the ticket key: small, sent as they are.
    http: reqwest::Client,
    /// Tasks and parents: gzip-compressed by the edge.
    control_http: reqwest::Client,
    /// `outbound.response_timeout_secs` and `outbound.idle_timeout_secs`.
    response_timeout: Duration,
    idle_timeout: Duration,
}

impl EdgeClient {
    pub(crate) fn new(urls: &[String], http: reqwest::Client, control_http: reqwest::Client) -> Self {
        EdgeClient {
            urls: urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            first: 0,
            dead_until: urls.iter().map(|_| Mutex::new(None)).collect(),
            http,
            control_http,
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// Asks edge `first` first (the others after it, wrapping round).
    pub(crate) fn starting_with(mut self, first: usize) -> Self {
        self.first = first % self.urls.len().max(1);
        self
    }

    pub(crate) fn with_timeouts(mut self, response: Duration, idle: Duration) -> Self {
        self.response_timeout = response;
        self.idle_timeout = idle;
        self
    }

    /// How long to wait for the headers of an answer, from an edge or an origin.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    pub(crate) fn url(&self, edge: usize) -> &str {
        &self.urls[edge]
    }

    pub(crate) fn mark_dead(&self, edge: usize) {
        if let Some(slot) = self.dead_until.get(edge) {
            if let Ok(mut s) = slot.lock() {
                *s = Some(Instant::now() + DEAD_FOR);
            }
        }
    }

    /// Edges worth trying now, nearest (or this agent's own, `starting_with`) first; all of
    /// them if every one is marked dead.
    pub(crate) fn live(&self) -> Vec<usize> {
        let now = Instant::now();
        let n = self.urls.len();
        let order = (0..n).map(|k| (self.first + k) % n);
        let live: Vec<usize> = order
            .clone()
            .filter(|i| {
                self.dead_until[*i]
                    .lock()
                    .map(|d| d.is_none_or(|t| t <= now))
                    .unwrap_or(true)
            })
            .collect();
        if live.is_empty() {
            order.collect()
        } else {
            live
        }
    }

    /// Asks the edges for a task (for a blob, the edge checks the caller's credentials against
    /// the upstream). A refusal comes back as `Refused`; `Unavailable` means no edge could answer.
    ///
    /// `after`: failing over from that edge (the others are asked first). `known`: a refresh of
    /// the table already held (while the edge is still sealing pieces); the edge then sends only
    /// the hashes after it, and reports a failed transfer instead of starting it again.
    pub(crate) async fn task(
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
        let query = task.task_query(known.map(|k| k.pieces.len()));
        for edge in order {
            let url = format!("{}{}", self.urls[edge], task_path(&task.digest));
            let mut request = self.control_http.get(url).query(&query);
            if let Some(a) = &task.authorization {
                request = request.header(http::header::AUTHORIZATION, a.clone());
            }
            // The download's trace continues at the edge on its first task request (and a
            // failover's), not on every refresh of the table.
            if let (None, Some(traceparent)) = (known, damselfly_server::logging::current_traceparent()) {
                request = request.header("traceparent", traceparent);
            }
            let response = match super::send_within(request, self.response_timeout).await {
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
                return Err(AgentError::Refused(Box::new(PassedReply::new(
                    status, &headers, body,
                ))));
            }
            let answer: TaskAnswer = tokio::time::timeout(self.idle_timeout, response.json())
                .await
                .map_err(|_| AgentError::Unavailable("task answer: body stalled".into()))?
                .map_err(|e| AgentError::Unavailable(format!("task answer: {e}")))?;
            return Ok(TaskInfo {
                table: with_known_hashes(answer.table, answer.pieces_from, known)?,
                complete: answer.complete,
                key: answer.task_key,
                ticket: answer.ticket,
                ticket_since: unix_now(),
                ticket_expires_at: answer.ticket_expires_at,
                edge,
            });
        }
        Err(AgentError::Unavailable(last))
    }

    /// Parents, and up to `edge_room` pieces among the first `known` handed to this agent to
    /// take from the edge (`core::handout`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn parents(
        &self,
        edge: usize,
        digest: &Digest,
        ticket: &str,
        host_id: &str,
        location: &Location,
        edge_room: usize,
        known: u64,
    ) -> AgentResult<ParentsAnswer> {
        let query = ParentsQuery::new(host_id, location).with_edge_room(edge_room as u32, known);
        let response = self
            .control_http
            .get(format!("{}{}", self.urls[edge], parents_path(digest)))
            .query(&query)
            .header(TICKET_HEADER, ticket)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        let mut answer: ParentsAnswer = response
            .error_for_status()
            .map_err(|e| AgentError::Unavailable(e.to_string()))?
            .json()
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        // From the network: never more than it could ask for (the picker looks each one up).
        if let Some(handed) = &mut answer.edge_pieces {
            handed.retain(|i| *i < known);
            handed.truncate(edge_room);
        }
        Ok(answer)
    }

    pub(crate) async fn announce(
        &self,
        edge: usize,
        digest: &Digest,
        host_id: &str,
        ticket: &str,
        announcement: &PeerAnnouncement,
    ) -> AgentResult<()> {
        self.http
            .put(format!("{}{}", self.urls[edge], peer_path(digest, host_id)))
            .header(TICKET_HEADER, ticket)
            .json(announcement)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|_| ())
            .map_err(|e| AgentError::Unavailable(e.to_string()))
    }

    pub(crate) async fn leave(&self, edge: usize, digest: &Digest, host_id: &str, ticket: &str) {
        let _ = self
            .http
            .delete(format!("{}{}", self.urls[edge], peer_path(digest, host_id)))
            .header(TICKET_HEADER, ticket)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
    }

    /// The edges' ticket verification key (any edge of the cluster gives the same one).
    pub(crate) async fn ticket_key(&self) -> AgentResult<TicketVerifier> {
        for edge in self.live() {
            let url = format!("{}{TICKET_KEY_PATH}", self.urls[edge]);
            if let Ok(r) = self.http.get(url).timeout(Duration::from_secs(5)).send().await {
                if let Ok(key) = r.json::<TicketKeyAnswer>().await {
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

/// Which of `edges` edges a host starts with when they are spread (`spread_edges`): the same
/// for the same host id, and evenly spread over many hosts.
pub(crate) fn pick(host_id: &str, edges: usize) -> usize {
    let hash = damselfly_core::Digest::of(host_id.as_bytes());
    let first = u64::from_be_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default());
    (first % edges.max(1) as u64) as usize
}

/// A table whose hashes start at `from`, completed with the first `from` hashes of `known`.
fn with_known_hashes(table: PieceTable, from: usize, known: Option<&PieceTable>) -> AgentResult<PieceTable> {
    if from == 0 {
        return Ok(table);
    }
    let known = known
        .filter(|k| {
            k.digest == table.digest
                && k.layout == table.layout
                && k.hash == table.hash
                && k.pieces.len() >= from
        })
        .ok_or_else(|| {
            AgentError::Unavailable(format!("the edge sent a table from piece {from} of one not held"))
        })?;
    Ok(known.followed_by(from, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use damselfly_core::{PieceHash, PieceLayout};

    fn table(hashes: std::ops::Range<u8>) -> PieceTable {
        PieceTable {
            digest: Digest::of(b"blob"),
            layout: PieceLayout::for_size(8 << 20),
            hash: PieceHash::Blake3,
            pieces: hashes.map(|i| [i; 32]).collect(),
            zstd: Vec::new(),
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
        // Hashes of another kind cannot complete each other.
        let sha256 = PieceTable {
            hash: PieceHash::Sha256,
            ..table(0..3)
        };
        assert!(with_known_hashes(table(2..6), 2, Some(&sha256)).is_err());
    }

    #[test]
    fn spread_agents_start_at_their_own_edge_and_fall_back_to_the_others() {
        let http = reqwest::Client::new();
        let urls: Vec<String> = ["http://a", "http://b", "http://c"].map(String::from).into();
        let edges = EdgeClient::new(&urls, http.clone(), http).starting_with(1);
        assert_eq!(edges.live(), vec![1, 2, 0]);
        edges.mark_dead(1);
        assert_eq!(edges.live(), vec![2, 0]);
        // Many hosts spread about evenly over three edges, each host always to the same one.
        let mut counts = [0usize; 3];
        for host in 0..3000 {
            let id = format!("node-{host}");
            assert_eq!(pick(&id, 3), pick(&id, 3));
            counts[pick(&id, 3)] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_eq!(pick("x", 0), 0);
    }

    #[test]
    fn dead_edges_are_skipped_until_every_one_is() {
        let http = reqwest::Client::new();
        let edges = EdgeClient::new(&["http://a/".into(), "http://b".into()], http.clone(), http);
        assert_eq!(edges.url(0), "http://a");
        assert_eq!(edges.live(), vec![0, 1]);
        edges.mark_dead(0);
        assert_eq!(edges.live(), vec![1]);
        edges.mark_dead(1);
        assert_eq!(
            edges.live(),
            vec![0, 1],
            "all dead: try them all rather than none"
        );
    }
}
