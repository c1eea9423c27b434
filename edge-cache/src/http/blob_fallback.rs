//! A blob response whose store fails half-way (a full disk, an I/O error, a damaged piece) goes
//! on from the upstream instead of being cut after its headers: the client asked once and the
//! origin is reachable.
//!
//! A whole blob is fetched again from its first byte and hashed, the bytes already sent are
//! skipped, and the last chunk is held back until the digest matched. Bytes sent from a blob
//! still arriving (not yet verified) are hashed as they go, and the upstream's first bytes must
//! hash the same, or the response is cut: a client never receives a wrong blob as complete. A
//! range is taken over only from a verified blob, and fetched as a range (it cannot be checked on
//! its own, as with any registry).

use bytes::Bytes;
use damselfly_core::{Digest, Sha256Stream};
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::{EdgeError, EdgeResult};
use crate::store::BlobSource;

/// What is being answered: `[start, end)` of a blob of `size` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) digest: Digest,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) size: u64,
    /// The blob was complete (verified) when the response began: what the store sends is
    /// right, and needs no hashing.
    pub(crate) verified: bool,
}

impl Span {
    fn whole(&self) -> bool {
        self.start == 0 && self.end == self.size
    }
}

enum State {
    Stored {
        stored: BoxStream<'static, EdgeResult<Bytes>>,
        sent: u64,
        /// The hash of what was sent, for a whole blob that was not verified yet.
        sent_hash: Option<Sha256Stream>,
        source: BlobSource,
    },
    Upstream(Upstream),
    Done,
}

struct Upstream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    /// Upstream bytes still to drop (already sent from the store).
    skip: u64,
    /// Upstream bytes still to send.
    remaining: u64,
    /// The whole blob's hash, when the whole blob is fetched.
    hasher: Option<Sha256Stream>,
    /// What the bytes already sent hash to, checked against the upstream's first bytes.
    sent_hash: Option<Digest>,
    /// The chunk waiting for the next one (or for the digest check at the end).
    held: Option<Bytes>,
    digest: Digest,
}

/// `stored` (the bytes of `span` from the store) with the upstream taking over where it fails.
pub(crate) fn with_upstream_fallback(
    stored: impl Stream<Item = EdgeResult<Bytes>> + Send + 'static,
    source: BlobSource,
    span: Span,
) -> impl Stream<Item = EdgeResult<Bytes>> + Send + 'static {
    let state = State::Stored {
        stored: stored.boxed(),
        sent: span.start,
        sent_hash: (span.whole() && !span.verified).then(Sha256Stream::new),
        source,
    };
    futures::stream::unfold(state, move |state| next(state, span))
}

async fn next(state: State, span: Span) -> Option<(EdgeResult<Bytes>, State)> {
    match state {
        State::Done => None,
        State::Stored {
            mut stored,
            sent,
            mut sent_hash,
            source,
        } => match stored.next().await {
            None => None,
            Some(Ok(chunk)) => {
                let sent = sent + chunk.len() as u64;
                if let Some(h) = sent_hash.as_mut() {
                    h.update(&chunk);
                }
                let state = State::Stored {
                    stored,
                    sent,
                    sent_hash,
                    source,
                };
                Some((Ok(chunk), state))
            }
            Some(Err(e)) => {
                if !span.whole() && !span.verified {
                    // A range from a blob still arriving: nothing could check it.
                    return Some((Err(e), State::Done));
                }
                tracing::warn!(digest = %span.digest, at = sent, error = %e,
                    "the store failed mid-response; the rest comes from the upstream");
                let sent_hash = sent_hash.map(Sha256Stream::finish);
                match take_over(&source, span, sent, sent_hash).await {
                    Ok(upstream) => Box::pin(next(State::Upstream(upstream), span)).await,
                    Err(upstream_error) => {
                        tracing::warn!(digest = %span.digest, error = %upstream_error, "the upstream cannot take over");
                        Some((Err(e), State::Done))
                    }
                }
            }
        },
        State::Upstream(upstream) => upstream_next(upstream).await,
    }
}

/// The upstream answer that continues a response which sent `[span.start, sent)` already.
async fn take_over(
    source: &BlobSource,
    span: Span,
    sent: u64,
    sent_hash: Option<Digest>,
) -> EdgeResult<Upstream> {
    let whole = span.whole();
    let from = if whole { 0 } else { sent };
    let response = source.fetch(&span.digest, from).await?;
    let status = response.status();
    // A server may ignore the range and send the whole blob: then skip to `from` ourselves.
    let skip_to = match status.as_u16() {
        200 => sent,
        206 if from > 0 => sent - from,
        _ => {
            return Err(EdgeError::UpstreamUnavailable(format!(
                "upstream answered {status} taking over a blob response"
            )))
        }
    };
    Ok(Upstream {
        body: response.bytes_stream().boxed(),
        skip: skip_to,
        remaining: span.end - sent,
        hasher: whole.then(Sha256Stream::new),
        sent_hash,
        held: None,
        digest: span.digest,
    })
}

async fn upstream_next(mut up: Upstream) -> Option<(EdgeResult<Bytes>, State)> {
    loop {
        if up.remaining == 0 && up.hasher.is_none() {
            return up.held.take().map(|c| (Ok(c), State::Done));
        }
        match up.body.next().await {
            Some(Ok(mut chunk)) => {
                if up.skip > 0 {
                    let drop = up.skip.min(chunk.len() as u64) as usize;
                    if let Some(h) = up.hasher.as_mut() {
                        h.update(&chunk[..drop]);
                    }
                    up.skip -= drop as u64;
                    chunk = chunk.slice(drop..);
                    if up.skip == 0 {
                        // The upstream has repeated every byte the client has: the same bytes?
                        if let (Some(h), Some(expected)) = (up.hasher.as_ref(), up.sent_hash.take()) {
                            if h.clone().finish() != expected {
                                let error = EdgeError::UpstreamUnavailable(
                                    "the bytes already sent differ from the upstream's".into(),
                                );
                                return Some((Err(error), State::Done));
                            }
                        }
                    }
                }
                if let Some(h) = up.hasher.as_mut() {
                    h.update(&chunk);
                }
                let keep = up.remaining.min(chunk.len() as u64) as usize;
                up.remaining -= keep as u64;
                chunk.truncate(keep);
                if chunk.is_empty() {
                    continue;
                }
                // Send the previous chunk; hold this one.
                if let Some(previous) = up.held.replace(chunk) {
                    return Some((Ok(previous), State::Upstream(up)));
                }
            }
            Some(Err(e)) => {
                let error = EdgeError::UpstreamUnavailable(format!("upstream body: {e}"));
                return Some((Err(error), State::Done));
            }
            None => {
                if up.remaining > 0 {
                    let error = EdgeError::UpstreamUnavailable("upstream body ended early".into());
                    return Some((Err(error), State::Done));
                }
                if let Some(h) = up.hasher.take() {
                    let got = h.finish();
                    if got != up.digest {
                        let error =
                            EdgeError::UpstreamUnavailable(format!("upstream sent {got} for {}", up.digest));
                        return Some((Err(error), State::Done));
                    }
                }
                return up.held.take().map(|c| (Ok(c), State::Done));
            }
        }
    }
}
