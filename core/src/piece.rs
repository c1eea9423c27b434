//! How a blob is cut into pieces, and the table that proves each piece.
//!
//! The piece length rule: the smallest power of two that cuts the blob into at most
//! [`TARGET_PIECES`] pieces, clamped to [`MIN_PIECE_LENGTH`]..=[`MAX_PIECE_LENGTH`].
//! So a 64 MiB layer has 256 pieces of 256 KiB, a 512 MiB layer 256 pieces of 2 MiB, a 10 GiB
//! file 640 pieces of 16 MiB, and anything under 256 KiB is a single piece. A few hundred pieces
//! give peers enough units to trade without the bookkeeping outgrowing the data; the floor keeps
//! per-piece overhead (a request, a GCM tag, a table entry) small against the payload.
//!
//! The rule depends only on the blob size, so every edge and agent computes the same layout.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::encoding::COMPRESSED_OVERHEAD;
use crate::seal::TAG_LEN;

pub const TARGET_PIECES: u64 = 256;
pub const MIN_PIECE_LENGTH: u64 = 256 * 1024;
pub const MAX_PIECE_LENGTH: u64 = 16 * 1024 * 1024;
/// The largest blob a layout describes (1 PiB): every offset, range and sealed size of it fits
/// in a `u64` with room to spare, so a size read from the network cannot wrap the arithmetic.
pub const MAX_SIZE: u64 = 1 << 50;

/// A layout read from the network (a piece table) is checked against the rule: a size beyond
/// [`MAX_SIZE`] or a piece length the rule would not give (0 included) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLayout")]
pub struct PieceLayout {
    pub size: u64,
    pub piece_length: u64,
}

#[derive(Deserialize)]
struct RawLayout {
    size: u64,
    piece_length: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a blob of {0} bytes is larger than any layout describes ({MAX_SIZE} bytes)")]
    TooLarge(u64),
    #[error("piece length {got} is not the rule's {expected} for {size} bytes")]
    PieceLength { size: u64, got: u64, expected: u64 },
}

impl TryFrom<RawLayout> for PieceLayout {
    type Error = LayoutError;

    fn try_from(raw: RawLayout) -> Result<Self, LayoutError> {
        let layout = PieceLayout::try_for_size(raw.size)?;
        if layout.piece_length != raw.piece_length {
            return Err(LayoutError::PieceLength {
                size: raw.size,
                got: raw.piece_length,
                expected: layout.piece_length,
            });
        }
        Ok(layout)
    }
}

impl PieceLayout {
    /// The layout of a blob of `size` bytes as announced by someone else (a `Content-Length`):
    /// refused beyond [`MAX_SIZE`].
    pub fn try_for_size(size: u64) -> Result<Self, LayoutError> {
        if size > MAX_SIZE {
            return Err(LayoutError::TooLarge(size));
        }
        Ok(PieceLayout::for_size(size))
    }

    /// The layout of a blob of `size` bytes. Sizes from the network go through
    /// [`PieceLayout::try_for_size`]; beyond [`MAX_SIZE`] the offsets below saturate.
    pub fn for_size(size: u64) -> Self {
        let wanted = size.div_ceil(TARGET_PIECES).max(1).next_power_of_two();
        PieceLayout {
            size,
            piece_length: wanted.clamp(MIN_PIECE_LENGTH, MAX_PIECE_LENGTH),
        }
    }

    pub fn count(&self) -> u64 {
        // A layout only ever has a piece length of the rule (never 0); checked all the same.
        match self.piece_length {
            0 => 0,
            length => self.size.div_ceil(length),
        }
    }

    /// Plaintext byte range `[start, end)` of piece `index`.
    pub fn range(&self, index: u64) -> (u64, u64) {
        let start = index.saturating_mul(self.piece_length).min(self.size);
        (start, start.saturating_add(self.piece_length).min(self.size))
    }

    pub fn plain_len(&self, index: u64) -> u64 {
        let (start, end) = self.range(index);
        end - start
    }

    /// Where piece `index` starts in the sealed file: every piece occupies its plaintext length
    /// plus one GCM tag, so offsets are computable without an index.
    pub fn sealed_offset(&self, index: u64) -> u64 {
        index.saturating_mul(self.piece_length + TAG_LEN as u64)
    }

    pub fn sealed_len(&self, index: u64) -> u64 {
        self.plain_len(index) + TAG_LEN as u64
    }

    /// Total size of the sealed file.
    pub fn sealed_size(&self) -> u64 {
        self.size
            .saturating_add(self.count().saturating_mul(TAG_LEN as u64))
    }

    /// The piece holding plaintext byte `offset`.
    pub fn piece_of(&self, offset: u64) -> u64 {
        offset.checked_div(self.piece_length).unwrap_or(0)
    }
}

/// The hash a piece table lists: SHA-256 by default (what every agent understands), BLAKE3 for
/// callers that ask for it (`TaskQuery::hash`). Either is over the sealed bytes; the blob's own
/// digest stays SHA-256, checked by the edge at ingest. BLAKE3 costs a receiver about a quarter
/// of SHA-256's CPU per byte on x86 with SHA extensions (`bench host` measures both), and the
/// piece hash is the receive path's largest cost after the copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PieceHash {
    #[default]
    Sha256,
    Blake3,
}

impl PieceHash {
    /// The hash of one sealed piece.
    pub fn of(self, sealed: &[u8]) -> [u8; 32] {
        match self {
            PieceHash::Sha256 => *Digest::of(sealed).as_bytes(),
            PieceHash::Blake3 => *blake3::hash(sealed).as_bytes(),
        }
    }

    pub fn is_sha256(&self) -> bool {
        *self == PieceHash::Sha256
    }
}

/// The piece table of a task: the layout and the hash of every *sealed* piece (ciphertext and
/// tag, as stored and sent), computed by the edge at ingest. Receivers verify what they receive
/// against it before storing or decrypting anything, never against a peer's word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReceivedTable")]
pub struct PieceTable {
    pub digest: Digest,
    #[serde(flatten)]
    pub layout: PieceLayout,
    /// What `pieces` are hashes of; left out for SHA-256, so tables read the same as before
    /// there was a choice.
    #[serde(default, skip_serializing_if = "PieceHash::is_sha256")]
    pub hash: PieceHash,
    /// One hex hash of the sealed piece per piece, in order.
    #[serde(with = "hex_list")]
    pub pieces: Vec<[u8; 32]>,
    /// Sealed piece format 2 (`encoding.rs`): one entry per piece listed, the sealed length of
    /// a compressed piece or 0 for a piece sealed as it is. Empty when no piece is compressed,
    /// and then left out: such a table is format 1, read by every agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zstd: Vec<u32>,
}

impl PieceTable {
    /// The oldest sealed piece format a reader needs to use this table's pieces.
    pub fn format(&self) -> u32 {
        if self.zstd.iter().any(|&n| n > 0) {
            crate::encoding::PIECE_FORMAT
        } else {
            1
        }
    }

    /// Whether piece `index` is stored compressed.
    pub fn is_compressed(&self, index: u64) -> bool {
        self.compressed_len(index).is_some()
    }

    /// The sealed length of piece `index` when it is compressed.
    fn compressed_len(&self, index: u64) -> Option<u64> {
        let listed = usize::try_from(index).ok().and_then(|i| self.zstd.get(i));
        listed.filter(|&&n| n > 0).map(|&n| n as u64)
    }

    /// How many bytes piece `index` has as stored and sent: its compressed length, or its
    /// plaintext and tag. Never beyond the piece's slot in the sealed file (which holds it at
    /// [`PieceLayout::sealed_offset`] either way), whatever a table from elsewhere says.
    pub fn stored_len(&self, index: u64) -> u64 {
        let slot = self.layout.sealed_len(index);
        self.compressed_len(index).map_or(slot, |n| n.min(slot))
    }

    /// Drops the first `count` listed pieces (a caller holds them already); returns how many
    /// went.
    pub fn drain_front(&mut self, count: usize) -> usize {
        let count = count.min(self.pieces.len());
        self.pieces.drain(..count);
        self.zstd.drain(..count.min(self.zstd.len()));
        self.zstd = compressed_lengths(std::mem::take(&mut self.zstd));
        count
    }

    /// `later` (hashes from piece `from` on) completed with this table's first `from` pieces.
    pub fn followed_by(&self, from: usize, mut later: PieceTable) -> PieceTable {
        let from = from.min(self.pieces.len());
        let mut pieces = self.pieces[..from].to_vec();
        pieces.append(&mut later.pieces);
        let held = (0..from).map(|i| self.zstd.get(i).copied().unwrap_or(0));
        let added = (0..pieces.len() - from).map(|i| later.zstd.get(i).copied().unwrap_or(0));
        let zstd = compressed_lengths(held.chain(added).collect());
        PieceTable {
            pieces,
            zstd,
            ..later
        }
    }

    /// Whether `sealed` is piece `index` as the table lists it (false for a piece not listed).
    pub fn proves(&self, index: u64, sealed: &[u8]) -> bool {
        let listed = usize::try_from(index).ok().and_then(|i| self.pieces.get(i));
        listed.is_some_and(|expected| self.hash.of(sealed) == *expected)
    }
}

/// A new file of sealed pieces at `path` (one there before is emptied), open for reading and
/// writing: pieces are written and read at their offsets, in any order.
pub fn create_pieces_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// A table's `zstd` list from per-piece compressed lengths: empty when no piece is compressed
/// (a format-1 table), else as given.
pub fn compressed_lengths(lengths: Vec<u32>) -> Vec<u32> {
    match lengths.iter().any(|&n| n > 0) {
        true => lengths,
        false => Vec::new(),
    }
}

/// A table as received: never more hashes than its layout has pieces.
#[derive(Deserialize)]
struct ReceivedTable {
    digest: Digest,
    #[serde(flatten)]
    layout: PieceLayout,
    #[serde(default)]
    hash: PieceHash,
    #[serde(with = "hex_list")]
    pieces: Vec<[u8; 32]>,
    #[serde(default)]
    zstd: Vec<u32>,
}

impl TryFrom<ReceivedTable> for PieceTable {
    type Error = String;

    fn try_from(received: ReceivedTable) -> Result<Self, String> {
        if received.pieces.len() as u64 > received.layout.count() {
            return Err(format!(
                "{} piece hashes for {} pieces",
                received.pieces.len(),
                received.layout.count()
            ));
        }
        if !received.zstd.is_empty() && received.zstd.len() != received.pieces.len() {
            return Err(format!(
                "{} compressed lengths for {} pieces",
                received.zstd.len(),
                received.pieces.len()
            ));
        }
        // A compressed piece has a nonce, a frame and a tag, and fits in a piece's slot.
        let slot = received.layout.piece_length + TAG_LEN as u64;
        let bad = |&n: &u32| n > 0 && ((n as usize) <= COMPRESSED_OVERHEAD || n as u64 > slot);
        if let Some(n) = received.zstd.iter().find(|n| bad(n)) {
            return Err(format!("a compressed piece of {n} bytes in slots of {slot}"));
        }
        Ok(PieceTable {
            digest: received.digest,
            layout: received.layout,
            hash: received.hash,
            pieces: received.pieces,
            zstd: received.zstd,
        })
    }
}

pub mod hex_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn piece_length_rule_gives_a_few_hundred_pieces() {
        assert_eq!(PieceLayout::for_size(0).count(), 0);
        assert_eq!(PieceLayout::for_size(1).count(), 1);
        assert_eq!(PieceLayout::for_size(100 * 1024).piece_length, MIN_PIECE_LENGTH);
        let l = PieceLayout::for_size(64 * MIB);
        assert_eq!((l.piece_length, l.count()), (256 * 1024, 256));
        let l = PieceLayout::for_size(512 * MIB);
        assert_eq!((l.piece_length, l.count()), (2 * MIB, 256));
        let l = PieceLayout::for_size(512 * MIB + 1);
        assert_eq!((l.piece_length, l.count()), (4 * MIB, 129));
        let l = PieceLayout::for_size(10 * 1024 * MIB);
        assert_eq!((l.piece_length, l.count()), (MAX_PIECE_LENGTH, 640));
        for size in [1, 1000, 5 * MIB + 7, 300 * MIB, 3 * 1024 * MIB] {
            let l = PieceLayout::for_size(size);
            assert!(l.count() <= TARGET_PIECES || l.piece_length == MAX_PIECE_LENGTH);
        }
    }

    #[test]
    fn ranges_cover_the_blob_exactly() {
        let l = PieceLayout::for_size(3 * MIB + 5);
        let mut next = 0;
        for i in 0..l.count() {
            let (s, e) = l.range(i);
            assert_eq!(s, next);
            assert!(e > s);
            next = e;
            assert_eq!(l.piece_of(s), i);
        }
        assert_eq!(next, l.size);
        let last = l.count() - 1;
        assert_eq!(l.sealed_offset(last) + l.sealed_len(last), l.sealed_size());
    }

    #[test]
    fn sizes_from_the_network_cannot_wrap_the_arithmetic() {
        assert_eq!(
            PieceLayout::try_for_size(u64::MAX),
            Err(LayoutError::TooLarge(u64::MAX))
        );
        assert_eq!(
            PieceLayout::try_for_size(1 << 63),
            Err(LayoutError::TooLarge(1 << 63))
        );
        let largest = PieceLayout::try_for_size(MAX_SIZE).unwrap();
        assert_eq!(largest.sealed_size(), MAX_SIZE + largest.count() * TAG_LEN as u64);
        let last = largest.count() - 1;
        assert_eq!(
            largest.sealed_offset(last) + largest.sealed_len(last),
            largest.sealed_size()
        );
        // Whatever the size, nothing panics or wraps: it saturates.
        let huge = PieceLayout::for_size(u64::MAX);
        assert_eq!(huge.sealed_size(), u64::MAX);
        assert_eq!(huge.sealed_offset(u64::MAX), u64::MAX);
        assert_eq!(huge.range(u64::MAX), (u64::MAX, u64::MAX));
        assert_eq!(huge.plain_len(u64::MAX), 0);
        let zero = PieceLayout {
            size: 10,
            piece_length: 0,
        };
        assert_eq!((zero.count(), zero.piece_of(5)), (0, 0));
    }

    #[test]
    fn layouts_read_from_the_network_follow_the_rule() {
        let read = |json: &str| serde_json::from_str::<PieceLayout>(json);
        assert_eq!(
            read(r#"{"size":1000,"piece_length":262144}"#).unwrap(),
            PieceLayout::for_size(1000)
        );
        for bad in [
            r#"{"size":1000,"piece_length":0}"#,
            r#"{"size":1000,"piece_length":1}"#,
            r#"{"size":18446744073709551615,"piece_length":16777216}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let table = format!(
            r#"{{"digest":"{}","size":1000,"piece_length":0,"pieces":[]}}"#,
            Digest::of(b"x")
        );
        assert!(serde_json::from_str::<PieceTable>(&table).is_err());
    }

    #[test]
    fn a_table_proves_pieces_with_the_hash_it_names() {
        let sealed = vec![9u8; 1000];
        let digest = Digest::of(b"x");
        for hash in [PieceHash::Sha256, PieceHash::Blake3] {
            let table = PieceTable {
                digest,
                layout: PieceLayout::for_size(1000),
                hash,
                pieces: vec![hash.of(&sealed)],
                zstd: Vec::new(),
            };
            assert!(table.proves(0, &sealed), "{hash:?}");
            let mut damaged = sealed.clone();
            damaged[500] ^= 1;
            assert!(!table.proves(0, &damaged), "{hash:?}");
            assert!(!table.proves(1, &sealed), "{hash:?}: a piece not listed");
            let json = serde_json::to_string(&table).unwrap();
            // A SHA-256 table reads as one from before the choice; a BLAKE3 one names its hash.
            assert_eq!(
                json.contains(r#""hash":"blake3""#),
                hash == PieceHash::Blake3,
                "{json}"
            );
            assert_eq!(json.contains(r#""hash""#), hash == PieceHash::Blake3, "{json}");
            assert_eq!(serde_json::from_str::<PieceTable>(&json).unwrap(), table);
        }
        // The two hashes differ, so a table's hash is never mistaken for the other's.
        assert_ne!(PieceHash::Sha256.of(&sealed), PieceHash::Blake3.of(&sealed));
        assert_eq!(
            PieceHash::Blake3.of(b"abc").to_vec(),
            hex::decode("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85").unwrap(),
            "BLAKE3's published test vector"
        );
    }

    #[test]
    fn tables_from_elsewhere_hold_no_more_hashes_than_pieces() {
        // Found with the pieces fuzz target's property: a table of 1 byte listed 2 hashes.
        let hash = hex::encode([1u8; 32]);
        let table = |size: u64, hashes: usize| {
            let pieces = vec![format!("\"{hash}\""); hashes].join(",");
            let json = format!(
                r#"{{"digest":"{}","size":{size},"piece_length":262144,"pieces":[{pieces}]}}"#,
                Digest::of(b"x")
            );
            serde_json::from_str::<PieceTable>(&json)
        };
        assert_eq!(table(MIB, 4).unwrap().pieces.len(), 4);
        assert_eq!(
            table(MIB, 2).unwrap().pieces.len(),
            2,
            "a table still being filled"
        );
        assert!(table(MIB, 5).is_err());
        assert!(table(1, 2).is_err());
        assert!(table(0, 1).is_err());
    }

    #[test]
    fn compressed_pieces_make_a_format_2_table_and_stay_within_their_slots() {
        let mib = PieceLayout::for_size(MIB);
        let table = |zstd: Vec<u32>| PieceTable {
            digest: Digest::of(b"x"),
            layout: mib,
            hash: PieceHash::Blake3,
            pieces: vec![[1; 32]; 4],
            zstd,
        };
        let plain = table(Vec::new());
        assert_eq!((plain.format(), plain.stored_len(1)), (1, mib.sealed_len(1)));
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("zstd"), "a format 1 table reads as before: {json}");
        let mixed = table(vec![0, 5000, 0, 9000]);
        assert_eq!(mixed.format(), crate::encoding::PIECE_FORMAT);
        assert_eq!(
            (0..4).map(|i| mixed.stored_len(i)).collect::<Vec<_>>(),
            [mib.sealed_len(0), 5000, mib.sealed_len(2), 9000]
        );
        assert!(mixed.is_compressed(1) && !mixed.is_compressed(2) && !mixed.is_compressed(9));
        let json = serde_json::to_string(&mixed).unwrap();
        assert_eq!(serde_json::from_str::<PieceTable>(&json).unwrap(), mixed);
        // Tables from elsewhere: one length per piece, each a real compressed piece in a slot.
        for bad in [
            vec![5000],
            vec![0, 5000, 0, 9000, 1],
            vec![0, 20, 0, 0],
            vec![0, 300_000, 0, 0],
        ] {
            let json = serde_json::to_string(&table(bad.clone())).unwrap();
            assert!(serde_json::from_str::<PieceTable>(&json).is_err(), "{bad:?}");
        }
        // Split for a caller that holds the first pieces, and joined again on its side.
        let mut later = mixed.clone();
        assert_eq!(later.drain_front(2), 2);
        assert_eq!(later.zstd, [0, 9000]);
        assert_eq!(mixed.followed_by(2, later), mixed);
        let mut tail = mixed.clone();
        tail.drain_front(3);
        assert_eq!(tail.zstd, [9000]);
        // What a caller held before any piece was compressed joins a compressed rest.
        let head = PieceTable {
            pieces: vec![[1; 32]; 3],
            ..table(Vec::new())
        };
        assert_eq!(head.followed_by(3, tail).zstd, [0, 0, 0, 9000]);
        let mut uncompressed_rest = mixed.clone();
        uncompressed_rest.drain_front(2);
        uncompressed_rest.drain_front(1);
        assert_eq!(uncompressed_rest.zstd, [9000]);
        let mut none = table(vec![0, 0, 7000, 0]);
        none.drain_front(3);
        assert!(
            none.zstd.is_empty(),
            "only uncompressed pieces left: format 1 again"
        );
    }

    #[test]
    fn table_serialises_as_hex() {
        let t = PieceTable {
            digest: Digest::of(b"x"),
            layout: PieceLayout::for_size(1),
            hash: PieceHash::Sha256,
            pieces: vec![*Digest::of(b"x").as_bytes()],
            zstd: Vec::new(),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"piece_length\":262144"), "{json}");
        assert_eq!(serde_json::from_str::<PieceTable>(&json).unwrap(), t);
    }
}
