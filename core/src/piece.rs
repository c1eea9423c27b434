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
use crate::seal::TAG_LEN;

pub const TARGET_PIECES: u64 = 256;
pub const MIN_PIECE_LENGTH: u64 = 256 * 1024;
pub const MAX_PIECE_LENGTH: u64 = 16 * 1024 * 1024;
/// The largest blob a layout read from another party may describe (16 TiB, a million pieces):
/// beyond it a bitfield of its pieces alone would take what a host cannot give, and near 2^64
/// the sealed size overflows.
pub const MAX_SIZE: u64 = 1 << 44;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReceivedLayout")]
pub struct PieceLayout {
    pub size: u64,
    pub piece_length: u64,
}

/// A layout as another edge or agent sent it (or as stored): accepted only when it is the one
/// the rule gives for its size, so a peer cannot make us cut a blob differently (a piece length
/// of 0 divided by zero) or describe a blob no host could track.
#[derive(Deserialize)]
struct ReceivedLayout {
    size: u64,
    piece_length: u64,
}

impl TryFrom<ReceivedLayout> for PieceLayout {
    type Error = String;

    fn try_from(received: ReceivedLayout) -> Result<Self, String> {
        if received.size > MAX_SIZE {
            return Err(format!(
                "a blob of {} bytes is larger than the {MAX_SIZE} a layout may describe",
                received.size
            ));
        }
        let layout = PieceLayout::for_size(received.size);
        if received.piece_length != layout.piece_length {
            return Err(format!(
                "piece length {} is not the {} the rule gives for {} bytes",
                received.piece_length, layout.piece_length, received.size
            ));
        }
        Ok(layout)
    }
}

impl PieceLayout {
    pub fn for_size(size: u64) -> Self {
        let wanted = size.div_ceil(TARGET_PIECES).max(1).next_power_of_two();
        PieceLayout {
            size,
            piece_length: wanted.clamp(MIN_PIECE_LENGTH, MAX_PIECE_LENGTH),
        }
    }

    pub fn count(&self) -> u64 {
        self.size.div_ceil(self.piece_length)
    }

    /// Plaintext byte range `[start, end)` of piece `index`.
    pub fn range(&self, index: u64) -> (u64, u64) {
        let start = index * self.piece_length;
        (start, (start + self.piece_length).min(self.size))
    }

    pub fn plain_len(&self, index: u64) -> u64 {
        let (start, end) = self.range(index);
        end - start
    }

    /// Where piece `index` starts in the sealed file: every piece occupies its plaintext length
    /// plus one GCM tag, so offsets are computable without an index.
    pub fn sealed_offset(&self, index: u64) -> u64 {
        index * (self.piece_length + TAG_LEN as u64)
    }

    pub fn sealed_len(&self, index: u64) -> u64 {
        self.plain_len(index) + TAG_LEN as u64
    }

    /// Total size of the sealed file.
    pub fn sealed_size(&self) -> u64 {
        self.size + self.count() * TAG_LEN as u64
    }

    /// The piece holding plaintext byte `offset`.
    pub fn piece_of(&self, offset: u64) -> u64 {
        offset / self.piece_length
    }
}

/// The piece table of a task: the layout and the sha256 of every *sealed* piece (ciphertext and
/// tag, as stored and sent), computed by the edge at ingest. Receivers verify what they receive
/// against it before storing or decrypting anything, never against a peer's word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReceivedTable")]
pub struct PieceTable {
    pub digest: Digest,
    #[serde(flatten)]
    pub layout: PieceLayout,
    /// One hex sha256 of the sealed piece per piece, in order.
    #[serde(with = "hex_list")]
    pub pieces: Vec<[u8; 32]>,
}

/// A table as received: never more hashes than its layout has pieces.
#[derive(Deserialize)]
struct ReceivedTable {
    digest: Digest,
    #[serde(flatten)]
    layout: PieceLayout,
    #[serde(with = "hex_list")]
    pieces: Vec<[u8; 32]>,
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
        Ok(PieceTable {
            digest: received.digest,
            layout: received.layout,
            pieces: received.pieces,
        })
    }
}

mod hex_list {
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
    fn layouts_from_elsewhere_follow_the_rule() {
        // Found by fuzzing: any piece length was accepted, 0 too (a division by zero in
        // `count`), and sizes near 2^64 overflowed `sealed_size`.
        let read = |json: &str| serde_json::from_str::<PieceLayout>(json);
        assert_eq!(
            read(r#"{"size":1048576,"piece_length":262144}"#).unwrap(),
            PieceLayout::for_size(MIB)
        );
        for bad in [
            r#"{"size":1048576,"piece_length":0}"#,
            r#"{"size":0,"piece_length":262143}"#,
            r#"{"size":1048576,"piece_length":524288}"#,
            r#"{"size":18446744073709551615,"piece_length":16777216}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let largest = PieceLayout::for_size(MAX_SIZE);
        assert_eq!(read(&serde_json::to_string(&largest).unwrap()).unwrap(), largest);
        let table = format!(
            r#"{{"digest":"{}","size":1,"piece_length":1,"pieces":[]}}"#,
            Digest::of(b"x")
        );
        assert!(
            serde_json::from_str::<PieceTable>(&table).is_err(),
            "checked when flattened too"
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
    fn table_serialises_as_hex() {
        let t = PieceTable {
            digest: Digest::of(b"x"),
            layout: PieceLayout::for_size(1),
            pieces: vec![*Digest::of(b"x").as_bytes()],
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"piece_length\":262144"), "{json}");
        assert_eq!(serde_json::from_str::<PieceTable>(&json).unwrap(), t);
    }
}
