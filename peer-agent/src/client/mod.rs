//! Everything the agent asks of others over HTTP: the region's edges (tasks and the scheduler),
//! registry requests relayed to an edge or the origin, sealed pieces from peers and edges, and
//! the edges' ticket key. Clients know nothing of downloads or of the agent's own HTTP faces.

mod edge;
mod origin;
mod piece;
mod ticket_key;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use edge::{unix_now, EdgeClient, TaskInfo};
pub(crate) use origin::{RegistryRelay, Relay};
pub(crate) use piece::PieceClient;
pub(crate) use ticket_key::TicketKeys;

use crate::config::Config;
use crate::error::{AgentError, AgentResult};

/// The clients of one agent, sharing connection pools where their traffic is alike.
pub(crate) struct Clients {
    pub(crate) edges: Arc<EdgeClient>,
    pub(crate) relay: Arc<RegistryRelay>,
    pub(crate) pieces: Arc<PieceClient>,
    pub(crate) ticket_keys: Arc<TicketKeys>,
}

impl Clients {
    pub(crate) fn new(config: &Config) -> AgentResult<Clients> {
        // Only the scheduler's JSON answers are compressed: relayed registry traffic passes
        // through as sent, and pieces are sealed (incompressible).
        let idle = Some(config.outbound.idle_timeout());
        let passthrough = http_client(config, None, idle, false)?;
        // Piece tables and parent lists: JSON, compressed on the wire (most of the scheduler's
        // bytes: agents ask several times a second per download). No idle bound on the
        // connection: a task answer comes only once the edge knows the blob's size, which takes
        // up to `outbound.response_timeout_secs`; each call bounds its own wait.
        let control = http_client(config, None, None, true)?;
        let piece = http_client(
            config,
            Some(Duration::from_secs(config.download.piece_timeout_secs)),
            idle,
            false,
        )?;
        let edges = Arc::new(
            EdgeClient::new(&config.edges, passthrough.clone(), control)
                .with_timeouts(config.outbound.response_timeout(), config.outbound.idle_timeout())
                .starting_with(match config.spread_edges {
                    true => edge::pick(&config.host_id(), config.edges.len()),
                    false => 0,
                }),
        );
        let registries = config
            .registries
            .iter()
            .map(|r| (r.registry.clone(), r.url.clone()));
        Ok(Clients {
            relay: Arc::new(RegistryRelay::new(
                edges.clone(),
                config.upstream.as_deref(),
                registries,
                passthrough,
            )),
            pieces: Arc::new(PieceClient::new(piece)),
            ticket_keys: Arc::new(TicketKeys::new(edges.clone())),
            edges,
        })
    }
}

/// Every client trusts the system's CAs and `tls.ca_file`, and presents the agent's certificate
/// (its identity at the edges: task keys, tickets and scheduler records hang on it).
/// `timeout` bounds each whole request; `idle`, each silence on the connection (while an
/// answer is awaited or its body read).
fn http_client(
    config: &Config,
    timeout: Option<Duration>,
    idle: Option<Duration>,
    gzip: bool,
) -> AgentResult<reqwest::Client> {
    let mut builder = damselfly_server::tls::client_builder(&config.tls, true)
        .map_err(AgentError::Internal)?
        .connect_timeout(config.outbound.connect_timeout())
        .pool_idle_timeout(Duration::from_secs(30))
        .gzip(gzip)
        .user_agent(concat!("damselfly-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    if let Some(t) = idle {
        builder = builder.read_timeout(t);
    }
    builder
        .build()
        .map_err(|e| AgentError::Internal(format!("http client: {e}")))
}

/// Sends `request`, giving up when the answer's headers take longer than `within`: a server
/// that accepts connections and then says nothing is treated like one that is down.
pub(crate) async fn send_within(
    request: reqwest::RequestBuilder,
    within: Duration,
) -> Result<reqwest::Response, String> {
    match tokio::time::timeout(within, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", within.as_secs_f32())),
    }
}
