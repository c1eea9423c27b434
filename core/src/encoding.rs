//! Compress, then seal: a piece that is worth compressing is stored and sent as a sealed zstd
//! frame, and opened and decompressed once, by whoever hands its bytes to a client.
//!
//! Sealed piece formats (a table names the newest one its pieces need, see [`PieceTable`]):
//! - **1**: every piece is `ciphertext || tag`, nonce `"dfly" || index` (`seal.rs`).
//! - **2**: a piece may instead be compressed: `nonce || ciphertext || tag` of a *frame*, with a
//!   synthetic nonce `"z" || BLAKE3(index || frame)[..11]`. The frame is one byte naming the
//!   byte planes the plaintext was split into (1: none; 2 or 4: every 2nd or 4th byte together,
//!   which lets zstd see the repeating sign and exponent bytes of 16- and 32-bit numbers such as
//!   model weights), then the zstd frame of the (split) plaintext. The table lists the sealed
//!   length of every compressed piece (`PieceTable::zstd`).
//!
//! The nonce is derived from the frame rather than the index because a frame is not a function
//! of the plaintext alone: two edges with different zstd builds, or one edge before and after
//! an upgrade, may compress the same piece to different bytes, and GCM must never seal two
//! different messages under one nonce. The leading `"z"` keeps these nonces apart from format 1's.
//!
//! Hashes in the table stay over the sealed bytes, so a receiver checks a compressed piece
//! exactly like any other before it opens it; nothing unauthenticated is ever decompressed, and
//! a frame is decompressed into a buffer of the piece's plaintext length, never more.
//!
//! [`PieceTable`]: crate::PieceTable

use bytes::{Bytes, BytesMut};

use crate::seal::{SealError, TaskKey, NONCE_LEN, TAG_LEN};

/// The zstd level pieces are compressed at: the fastest of the standard levels, several hundred
/// MB/s per core, for most of the ratio the slower levels reach on layers and weights.
pub const ZSTD_LEVEL: i32 = 1;

/// What a compressed piece adds to its frame: the nonce in front, the tag behind.
pub const COMPRESSED_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The newest sealed piece format this build reads and writes.
pub const PIECE_FORMAT: u32 = 2;

/// The byte plane counts a frame may name, the plaintext as it is first.
pub const PLANES: [u8; 3] = [1, 2, 4];

/// A compressed piece before it is sealed, in the buffer it will be sealed in: room for the
/// nonce, then the frame (the plane count and the zstd frame); the tag is appended by
/// [`Frame::seal`]. So a piece is compressed straight into its final place and sealed there.
pub struct Frame {
    buf: Vec<u8>,
}

impl Frame {
    /// `plain` split into `planes` byte planes (1: as it is) and compressed.
    pub fn compress(plain: &[u8], planes: u8) -> std::io::Result<Frame> {
        let split_planes;
        let arranged = match planes {
            1 => plain,
            n => {
                split_planes = split(plain, n as usize);
                &split_planes
            }
        };
        let bound = zstd::zstd_safe::compress_bound(arranged.len());
        let mut buf = vec![0u8; NONCE_LEN + 1 + bound];
        buf[NONCE_LEN] = planes;
        let written = zstd::bulk::compress_to_buffer(arranged, &mut buf[NONCE_LEN + 1..], ZSTD_LEVEL)?;
        buf.truncate(NONCE_LEN + 1 + written);
        Ok(Frame { buf })
    }

    /// The length of the piece once sealed: nonce, frame and tag.
    pub fn sealed_len(&self) -> usize {
        self.buf.len() + TAG_LEN
    }

    /// Whether the sealed piece is at least `min_saving` smaller than `plain_len` bytes sealed
    /// as they are.
    pub fn saves(&self, plain_len: usize, min_saving: f64) -> bool {
        self.sealed_len() as f64 <= (plain_len + TAG_LEN) as f64 * (1.0 - min_saving)
    }

    /// Seals the frame in place as piece `index` of format 2.
    pub fn seal(mut self, key: &TaskKey, index: u64) -> Vec<u8> {
        let nonce = frame_nonce(index, &self.buf[NONCE_LEN..]);
        self.buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = key.seal_with_nonce(nonce, &mut self.buf[NONCE_LEN..]);
        self.buf.extend_from_slice(&tag);
        self.buf
    }
}

/// Every `planes`th byte together: plane 0 (bytes 0, n, 2n…), then plane 1, and so on.
fn split(bytes: &[u8], planes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for plane in 0..planes {
        out.extend(bytes.iter().skip(plane).step_by(planes));
    }
    out
}

/// The inverse of [`split`].
fn join(split: &[u8], planes: usize) -> Vec<u8> {
    let mut out = vec![0u8; split.len()];
    let mut from = 0;
    for plane in 0..planes {
        let len = split.len().saturating_sub(plane).div_ceil(planes);
        for (k, byte) in split[from..from + len].iter().enumerate() {
            out[plane + k * planes] = *byte;
        }
        from += len;
    }
    out
}

/// Piece `index` compressed (split into `planes` byte planes) and sealed, when that saves at
/// least `min_saving` (a share of the plain piece's sealed size, `0.1` = 10%); `None` when it
/// does not pay.
pub fn compress_and_seal(
    key: &TaskKey,
    index: u64,
    plain: &[u8],
    planes: u8,
    min_saving: f64,
) -> Option<Vec<u8>> {
    let frame = Frame::compress(plain, planes).ok()?;
    frame
        .saves(plain.len(), min_saving)
        .then(|| frame.seal(key, index))
}

/// The plaintext of piece `index` as stored (see [`crate::PieceTable::zstd`]), authenticated
/// and decrypted where it lies in `sealed`: a compressed piece is then decompressed into a
/// buffer of exactly `plain_len` bytes; any other is `sealed` cut to its plaintext.
pub fn open_stored(
    key: &TaskKey,
    index: u64,
    mut sealed: BytesMut,
    compressed: bool,
    plain_len: usize,
) -> Result<Bytes, SealError> {
    if compressed {
        return open_compressed(key, &mut sealed, plain_len).map(Bytes::from);
    }
    let len = key.open(index, &mut sealed)?.len();
    sealed.truncate(len);
    Ok(sealed.freeze())
}

/// Authenticates and decrypts a compressed piece, then decompresses it into exactly
/// `plain_len` bytes (a frame that would give more, or less, is refused).
pub fn open_compressed(key: &TaskKey, sealed: &mut [u8], plain_len: usize) -> Result<Vec<u8>, SealError> {
    if sealed.len() < COMPRESSED_OVERHEAD {
        return Err(SealError::Truncated);
    }
    let (nonce, body) = sealed.split_at_mut(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| SealError::Truncated)?;
    if nonce[0] != b'z' {
        return Err(SealError::Unauthentic);
    }
    let frame = key.open_with_nonce(nonce, body)?;
    let refused = SealError::Decompress(plain_len);
    let (&planes, compressed) = frame.split_first().ok_or(refused.clone())?;
    if !PLANES.contains(&planes) {
        return Err(refused);
    }
    let plain = zstd::bulk::decompress(compressed, plain_len).map_err(|_| refused.clone())?;
    if plain.len() != plain_len {
        return Err(refused);
    }
    Ok(match planes {
        1 => plain,
        n => join(&plain, n as usize),
    })
}

fn frame_nonce(index: u64, frame: &[u8]) -> [u8; NONCE_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&index.to_be_bytes());
    hasher.update(frame);
    let hash = hasher.finalize();
    let mut nonce = [0u8; NONCE_LEN];
    nonce[0] = b'z';
    nonce[1..].copy_from_slice(&hash.as_bytes()[..NONCE_LEN - 1]);
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::ClusterSecret;
    use crate::Digest;
    use aes_gcm::aead::{Aead, KeyInit};

    fn key() -> TaskKey {
        ClusterSecret::new(&[3u8; 32])
            .unwrap()
            .task_key(&Digest::of(b"blob"))
    }

    /// Incompressible bytes (xorshift64).
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x2545F4914F6CDD1Du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        let words = b"layer config manifest sbom weights ";
        (0..len).map(|i| words[(i * 7 + i / 13) % words.len()]).collect()
    }

    #[test]
    fn a_compressed_piece_is_a_standard_aes_256_gcm_message_of_a_zstd_frame() {
        let plain = text(256 * 1024);
        let sealed = compress_and_seal(&key(), 4, &plain, 1, 0.1).expect("text compresses");
        assert!(sealed.len() < plain.len() / 4, "{} bytes", sealed.len());
        assert_eq!(sealed[0], b'z');
        // RustCrypto's aes-gcm is the reference: the nonce in front, then ciphertext and tag.
        let reference = aes_gcm::Aes256Gcm::new_from_slice(key().as_bytes()).unwrap();
        let nonce = aes_gcm::Nonce::from_slice(&sealed[..NONCE_LEN]);
        let frame = reference.decrypt(nonce, &sealed[NONCE_LEN..]).unwrap();
        assert_eq!(frame[0], 1, "one byte plane: the plaintext as it is");
        assert_eq!(zstd::bulk::decompress(&frame[1..], plain.len()).unwrap(), plain);
        let mut copy = sealed.clone();
        assert_eq!(open_compressed(&key(), &mut copy, plain.len()).unwrap(), plain);
        // The same frame seals to the same bytes (an edge sealing it again agrees with itself);
        // another index gives another nonce.
        assert_eq!(compress_and_seal(&key(), 4, &plain, 1, 0.1).unwrap(), sealed);
        assert_ne!(
            compress_and_seal(&key(), 5, &plain, 1, 0.1).unwrap()[..NONCE_LEN],
            sealed[..NONCE_LEN]
        );
    }

    #[test]
    fn a_piece_that_saves_too_little_is_not_compressed() {
        let mut random = noise(256 * 1024);
        assert!(compress_and_seal(&key(), 0, &random, 1, 0.1).is_none());
        // Half random, half text: saves about half, which passes 10% but not 60%.
        random[128 * 1024..].copy_from_slice(&text(128 * 1024));
        assert!(compress_and_seal(&key(), 0, &random, 1, 0.1).is_some());
        assert!(compress_and_seal(&key(), 0, &random, 1, 0.6).is_none());
    }

    #[test]
    fn byte_planes_round_trip_and_help_numbers_whose_high_bytes_repeat() {
        for len in [0, 1, 2, 3, 7, 1000, 1001, 1003] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for planes in [2, 4] {
                assert_eq!(
                    join(&split(&bytes, planes), planes),
                    bytes,
                    "{len} bytes, {planes} planes"
                );
            }
        }
        // 16-bit numbers with a random low byte and a high byte from a few values, as the sign
        // and exponent of small float16 weights: two planes let zstd see the repetition.
        let weights: Vec<u8> = noise(256 * 1024)
            .chunks(2)
            .flat_map(|pair| {
                [
                    pair[0],
                    [0x20, 0x21, 0x22, 0xa0, 0xa1, 0xa2][pair[1] as usize % 6],
                ]
            })
            .collect();
        let one = Frame::compress(&weights, 1).unwrap().sealed_len();
        let two = Frame::compress(&weights, 2).unwrap().sealed_len();
        assert!(two * 10 < one * 9, "two planes {two} B, one {one} B");
        let mut sealed = compress_and_seal(&key(), 3, &weights, 2, 0.1).unwrap();
        assert_eq!(
            open_compressed(&key(), &mut sealed, weights.len()).unwrap(),
            weights
        );
        // A frame naming another plane count is refused.
        let mut frame = Frame::compress(&weights, 2).unwrap();
        frame.buf[NONCE_LEN] = 3;
        let mut odd = frame.seal(&key(), 3);
        assert_eq!(
            open_compressed(&key(), &mut odd, weights.len()),
            Err(SealError::Decompress(weights.len()))
        );
    }

    #[test]
    fn tampered_wrong_key_or_oversized_pieces_are_refused_before_or_instead_of_decompression() {
        let plain = text(300_000);
        let sealed = compress_and_seal(&key(), 1, &plain, 1, 0.1).unwrap();
        for at in [0, 5, NONCE_LEN + 3, sealed.len() - 1] {
            let mut damaged = sealed.clone();
            damaged[at] ^= 1;
            assert!(
                matches!(
                    open_compressed(&key(), &mut damaged, plain.len()),
                    Err(SealError::Unauthentic)
                ),
                "byte {at}"
            );
        }
        let other = ClusterSecret::new(&[4u8; 32])
            .unwrap()
            .task_key(&Digest::of(b"blob"));
        assert_eq!(
            open_compressed(&other, &mut sealed.clone(), plain.len()),
            Err(SealError::Unauthentic)
        );
        // Authentic, but its frame holds more than the piece's length: refused, not grown.
        assert_eq!(
            open_compressed(&key(), &mut sealed.clone(), plain.len() - 1),
            Err(SealError::Decompress(plain.len() - 1))
        );
        // ...or less.
        assert_eq!(
            open_compressed(&key(), &mut sealed.clone(), plain.len() + 1),
            Err(SealError::Decompress(plain.len() + 1))
        );
        assert_eq!(
            open_compressed(&key(), &mut [0u8; 20], 10),
            Err(SealError::Truncated)
        );
        // A format-1 nonce in front is never taken for a compressed piece's.
        let mut plain_nonce = sealed.clone();
        plain_nonce[..NONCE_LEN].copy_from_slice(&TaskKey::nonce_bytes(1));
        assert_eq!(
            open_compressed(&key(), &mut plain_nonce, plain.len()),
            Err(SealError::Unauthentic)
        );
    }
}
