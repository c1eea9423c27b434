//! Sealed pieces from an upload server: another agent's, or an edge's (`GET /pieces/<d>/<i>`
//! with the task's ticket).

use bytes::Bytes;
use damselfly_core::api::task::piece_path;
use damselfly_core::api::{TICKET_HEADER, TRANSFER_FAILED_HEADER};
use damselfly_core::Digest;
use http::StatusCode;

use crate::error::{AgentError, AgentResult};

pub(crate) struct PieceClient {
    /// With `download.piece_timeout_secs`: a slow source is abandoned for another.
    http: reqwest::Client,
}

impl PieceClient {
    pub(crate) fn new(http: reqwest::Client) -> Self {
        PieceClient { http }
    }

    /// One sealed piece from the upload server at `base`, as sent (verified by the caller).
    pub(crate) async fn fetch(
        &self,
        base: &str,
        digest: &Digest,
        index: u64,
        ticket: &str,
    ) -> AgentResult<Bytes> {
        let response = self
            .http
            .get(format!("{base}{}", piece_path(digest, index)))
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
}
