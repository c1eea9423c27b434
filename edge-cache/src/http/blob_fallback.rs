//! A blob response whose store fails half-way (a full disk, an I/O error, a damaged piece) goes
//! on from the upstream instead of being cut after its headers: the client asked once and the
//! origin is reachable.
//!
//! A whole blob is fetched again from its first byte and hashed, the bytes already sent are
//! skipped, and the last chunk is held back until the digest matched. When the bytes already
//! sent came from a blob still arriving (not yet verified), the upstream's first bytes are sealed
//! again and must match the piece table's hashes of what was sent, or the response is cut: a
//! client never receives a wrong blob as complete. That costs nothing until a store fails. A
//! range is taken over only from a verified blob, and fetched as a range (it cannot be checked on
//! its own, as with any registry).

use bytes::Bytes;
use damselfly_core::{encoding, Digest, PieceHash, PieceLayout, PieceTable, Sha256Stream, TaskKey};
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::error::{EdgeError, EdgeResult};
use crate::store::{Blob, BlobSource};

/// What is being answered: `[start, end)` of a blob of `size` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) digest: Digest,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) size: u64,
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
        /// The blob, while it was not verified yet when the response began: its piece table
        /// says what was sent.
        unverified: Option<Blob>,
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
    /// The check of the upstream's first bytes against what was sent, when it was unverified.
    prefix: Option<PrefixCheck>,
    /// The chunk waiting for the next one (or for the digest check at the end).
    held: Option<Bytes>,
    digest: Digest,
}

/// Re-seals the upstream's first pieces and checks them against the piece table.
struct PrefixCheck {
    key: TaskKey,
    layout: PieceLayout,
    table: PieceTable,
    index: u64,
    piece: Vec<u8>,
}

impl PrefixCheck {
    fn feed(&mut self, mut bytes: &[u8]) -> EdgeResult<()> {
        while !bytes.is_empty() {
            let want = self.layout.plain_len(self.index) as usize - self.piece.len();
            let take = want.min(bytes.len());
            self.piece.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if take == want {
                let mut sealed = std::mem::take(&mut self.piece);
                // Sealed again as the table lists it: a compressed piece is compressed again,
                // which gives the same frame with the same zstd (this process's), with the byte
                // planes it was compressed with (the table does not say which: each is tried).
                let proven = if self.table.is_compressed(self.index) {
                    encoding::PLANES.iter().any(|&planes| {
                        let again = encoding::Frame::compress(&sealed, planes)
                            .map(|frame| frame.seal(&self.key, self.index));
                        again.is_ok_and(|again| self.table.proves(self.index, &again))
                    })
                } else {
                    self.key.seal(self.index, &mut sealed);
                    self.table.proves(self.index, &sealed)
                };
                if !proven {
                    return Err(EdgeError::UpstreamUnavailable(format!(
                        "the upstream's piece {} differs from the one already sent",
                        self.index
                    )));
                }
                self.index += 1;
            }
        }
        Ok(())
    }
}

/// `stored` (the bytes of `span` from the store) with the upstream taking over where it fails.
/// `unverified`: the blob, when it was still arriving as the response began.
pub(crate) fn with_upstream_fallback(
    stored: impl Stream<Item = EdgeResult<Bytes>> + Send + 'static,
    source: BlobSource,
    span: Span,
    unverified: Option<Blob>,
) -> impl Stream<Item = EdgeResult<Bytes>> + Send + 'static {
    let state = State::Stored {
        stored: stored.boxed(),
        sent: span.start,
        unverified,
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
            unverified,
            source,
        } => match stored.next().await {
            None => None,
            Some(Ok(chunk)) => {
                let sent = sent + chunk.len() as u64;
                let state = State::Stored {
                    stored,
                    sent,
                    unverified,
                    source,
                };
                Some((Ok(chunk), state))
            }
            Some(Err(e)) => {
                if !span.whole() && unverified.is_some() {
                    // A range from a blob still arriving: nothing could check it.
                    return Some((Err(e), State::Done));
                }
                tracing::warn!(digest = %span.digest, at = sent, error = %e,
                    "the store failed mid-response; the rest comes from the upstream");
                let prefix = match unverified.map(|blob| prefix_check(&blob, span)).transpose() {
                    Ok(prefix) => prefix,
                    Err(check_error) => {
                        tracing::warn!(digest = %span.digest, error = %check_error, "what was sent cannot be checked");
                        return Some((Err(e), State::Done));
                    }
                };
                match take_over(&source, span, sent, prefix).await {
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

fn prefix_check(blob: &Blob, span: Span) -> EdgeResult<PrefixCheck> {
    let layout = PieceLayout::for_size(span.size);
    Ok(PrefixCheck {
        key: blob.key.clone(),
        layout,
        // BLAKE3 where the edge has it: a quarter of SHA-256's cost per byte.
        table: blob.piece_table(layout, PieceHash::Blake3)?,
        index: 0,
        piece: Vec::new(),
    })
}

/// The upstream answer that continues a response which sent `[span.start, sent)` already.
async fn take_over(
    source: &BlobSource,
    span: Span,
    sent: u64,
    prefix: Option<PrefixCheck>,
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
        prefix,
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
                    // The upstream repeats what the client has: the same bytes?
                    let repeated = match up.prefix.as_mut() {
                        Some(check) => check.feed(&chunk[..drop]),
                        None => Ok(()),
                    };
                    if let Err(error) = repeated {
                        return Some((Err(error), State::Done));
                    }
                    up.skip -= drop as u64;
                    chunk = chunk.slice(drop..);
                    // Whole pieces were sent; a partial one could not be checked.
                    if up.skip == 0 && up.prefix.as_ref().is_some_and(|c| !c.piece.is_empty()) {
                        let error =
                            EdgeError::UpstreamUnavailable("what was sent ends inside a piece".into());
                        return Some((Err(error), State::Done));
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

#[cfg(test)]
mod tests {
    use super::*;
    use damselfly_core::ClusterSecret;

    /// A prefix check of the blob `plain`, its table listing `hash`, its pieces compressed
    /// or not.
    fn check(plain: &[u8], hash: PieceHash, compressed: bool) -> PrefixCheck {
        let digest = Digest::of(plain);
        let key = ClusterSecret::new(&[5; 32]).unwrap().task_key(&digest);
        let layout = PieceLayout::for_size(plain.len() as u64);
        let mut zstd = Vec::new();
        let pieces = (0..layout.count())
            .map(|i| {
                let (start, end) = layout.range(i);
                let mut sealed = plain[start as usize..end as usize].to_vec();
                if compressed {
                    sealed = encoding::compress_and_seal(&key, i, &sealed, 2, 0.1).unwrap();
                    zstd.push(sealed.len() as u32);
                } else {
                    key.seal(i, &mut sealed);
                }
                hash.of(&sealed)
            })
            .collect();
        PrefixCheck {
            key,
            layout,
            table: PieceTable {
                digest,
                layout,
                hash,
                pieces,
                zstd,
            },
            index: 0,
            piece: Vec::new(),
        }
    }

    #[test]
    fn the_upstream_s_bytes_must_seal_to_the_pieces_already_sent() {
        let plain: Vec<u8> = (0..600 * 1024).map(|i| (i % 251) as u8).collect();
        let kinds = [
            (PieceHash::Sha256, false),
            (PieceHash::Blake3, false),
            (PieceHash::Blake3, true),
        ];
        for (hash, compressed) in kinds {
            // The same bytes, in chunks that straddle the piece boundary.
            let mut same = check(&plain, hash, compressed);
            for chunk in plain.chunks(100_000) {
                same.feed(chunk).unwrap();
            }
            assert_eq!(same.index, 3, "{hash:?}");
            // One byte different in the second piece.
            let mut other = plain.clone();
            other[300 * 1024] ^= 1;
            let mut differs = check(&plain, hash, compressed);
            let failed = other
                .chunks(100_000)
                .map(|c| differs.feed(c))
                .find(Result::is_err);
            assert!(
                matches!(failed, Some(Err(EdgeError::UpstreamUnavailable(_)))),
                "{hash:?}"
            );
            assert_eq!(differs.index, 1, "the first piece matched, the second did not");
        }
    }
}
