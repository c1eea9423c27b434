//! Who is asking, as far as the edge can tell: the identity a verified client certificate
//! proves (set by the listener, never by the request), and the address the connection came
//! from. Task keys, tickets bound to an identity and scheduler records all hang on this.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use damselfly_core::{Digest, Ticket};
use damselfly_server::tls::PeerIdentity;
use http::HeaderMap;

use super::agent_api::unix_now;
use crate::error::{EdgeError, EdgeResult};
use crate::state::AppState;

pub(crate) struct Caller {
    pub identity: Option<PeerIdentity>,
    pub peer: Option<SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            identity: parts.extensions.get::<PeerIdentity>().cloned(),
            peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        })
    }
}

impl Caller {
    pub(crate) fn name(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.name.as_str())
    }

    /// Whether `host` (from a URL this caller announces) is an address the caller is known by:
    /// one its certificate names, or the one it connects from.
    pub(crate) fn known_by(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.identity.as_ref().is_some_and(|i| i.vouches_for(host))
            || self.peer.is_some_and(|p| p.ip().to_string() == host)
    }

    /// May this caller be handed a task key? Only an identified agent (over TLS, with a client
    /// certificate from the cluster CA), unless the edge was started `--insecure` for a lab.
    pub(crate) fn may_hold_keys(&self, state: &AppState) -> EdgeResult<()> {
        if self.identity.is_some() || state.config.insecure {
            return Ok(());
        }
        Err(EdgeError::Denied(
            "task keys are handed only over TLS to agents presenting a client certificate of the \
             cluster CA (tls.client_ca); an edge for a lab can be started with --insecure"
                .into(),
        ))
    }

    /// The ticket in `X-Damselfly-Ticket`, valid for `task` and usable by this caller (a ticket
    /// issued to an identity is that identity's alone).
    pub(crate) fn ticket(&self, state: &AppState, headers: &HeaderMap, task: &Digest) -> EdgeResult<Ticket> {
        let token = headers
            .get(damselfly_core::api::TICKET_HEADER)
            .ok_or_else(|| EdgeError::Unauthorized("a ticket for this task is required".into()))?
            .to_str()
            .map_err(|_| EdgeError::Unauthorized("ticket is not text".into()))?;
        let ticket = state
            .ticket_checker
            .check(token, task, unix_now())
            .map_err(|e| EdgeError::Unauthorized(e.to_string()))?;
        ticket
            .check_holder(self.name())
            .map_err(|e| EdgeError::Denied(e.to_string()))?;
        Ok(ticket)
    }
}
