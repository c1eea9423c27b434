//! Sealed pieces from an upload server: another agent's, or an edge's (`GET /pieces/<d>/<i>`
//! with the task's ticket).

use bytes::{Bytes, BytesMut};
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

    /// One sealed piece from the upload server at `base`, as sent (the caller verifies it), of
    /// at most `max_len` bytes: the piece's sealed length, which the layout knows. A body
    /// announced or growing past it is refused as a bad piece, so a broken or hostile sender
    /// cannot stream an endless body into memory.
    pub(crate) async fn fetch(
        &self,
        base: &str,
        digest: &Digest,
        index: u64,
        ticket: &str,
        max_len: u64,
    ) -> AgentResult<Bytes> {
        let mut response = self
            .http
            .get(format!("{base}{}", piece_path(digest, index)))
            .header(TICKET_HEADER, ticket)
            .send()
            .await
            .map_err(|e| AgentError::Unavailable(format!("{base}: {e}")))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                return Err(AgentError::Busy("parent is busy"))
            }
            _ if response.headers().contains_key(TRANSFER_FAILED_HEADER) => {
                return Err(AgentError::TransferFailed(
                    response.text().await.unwrap_or_default(),
                ))
            }
            s => return Err(AgentError::Unavailable(format!("{base} answered {s}"))),
        }
        let too_long = |len: u64| {
            AgentError::BadPiece(format!(
                "{base} sends {len} bytes or more for piece {index}, which has {max_len}"
            ))
        };
        let announced = response.content_length();
        if let Some(len) = announced.filter(|len| *len > max_len) {
            return Err(too_long(len));
        }
        let mut body = BytesMut::with_capacity(announced.unwrap_or(max_len).min(max_len) as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| AgentError::Unavailable(format!("{base}: {e}")))?
        {
            let len = (body.len() + chunk.len()) as u64;
            if len > max_len {
                return Err(too_long(len));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;

    /// An upload server on loopback: `/exact` sends 100 bytes, `/announced` announces 1 MiB,
    /// `/endless` streams zeros without end and without a length.
    async fn server() -> String {
        let app = Router::new()
            .route("/exact/pieces/{d}/{i}", get(|| async { vec![1u8; 100] }))
            .route("/announced/pieces/{d}/{i}", get(|| async { vec![1u8; 1 << 20] }))
            .route(
                "/endless/pieces/{d}/{i}",
                get(|| async {
                    let zeros = futures::stream::repeat_with(|| {
                        Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 4096]))
                    });
                    Body::from_stream(zeros)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_piece_body_is_read_up_to_its_sealed_length_and_no_further() {
        let base = server().await;
        let client = PieceClient::new(reqwest::Client::new());
        let digest = Digest::of(b"blob");
        let piece = client
            .fetch(&format!("{base}/exact"), &digest, 0, "t", 100)
            .await
            .unwrap();
        assert_eq!(piece.len(), 100);
        for (path, max_len) in [("exact", 99), ("announced", 1000), ("endless", 1 << 20)] {
            let result = client
                .fetch(&format!("{base}/{path}"), &digest, 0, "t", max_len)
                .await;
            assert!(
                matches!(result, Err(AgentError::BadPiece(_))),
                "{path}: {result:?}"
            );
        }
    }
}
