//! Piece bookkeeping as it travels between edges and agents: bitfields (`"<len>:<base64>"`, in
//! announcements and parent lists) and piece tables (in task answers).
//!
//! Properties: no panic; a bitfield read back from what it wrote is equal, counts no more bits
//! than it has and counts what `get` says; a piece table round-trips, follows the layout rule,
//! lists no more hashes than it has pieces, and its pieces tile the blob and the sealed file; a
//! compressed piece's length never passes its slot, and a table split for a caller who holds
//! its first pieces joins again into the same pieces and lengths.

#![no_main]

use damselfly_core::piece::PieceLayout;
use damselfly_core::{Bitfield, PieceTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bits) = serde_json::from_slice::<Bitfield>(data) {
        check_bitfield(&bits);
    }
    if let Ok(table) = serde_json::from_slice::<PieceTable>(data) {
        let text = serde_json::to_string(&table).expect("a table serialises");
        let again: PieceTable = serde_json::from_str(&text).expect("a table reads back");
        assert_eq!(again, table);
        check_layout(&table.layout);
        assert!(table.pieces.len() as u64 <= table.layout.count());
        check_encodings(&table);
    }
    if let Ok(layout) = serde_json::from_slice::<PieceLayout>(data) {
        check_layout(&layout);
    }
});

fn check_bitfield(bits: &Bitfield) {
    assert!(bits.count() <= bits.len(), "{bits:?}");
    assert_eq!(bits.is_complete(), bits.count() == bits.len());
    let text = serde_json::to_string(bits).expect("a bitfield serialises");
    assert_eq!(
        &serde_json::from_str::<Bitfield>(&text).expect("reads back"),
        bits
    );
    if bits.len() <= 1 << 16 {
        let set = (0..bits.len()).filter(|i| bits.get(*i)).count() as u64;
        assert_eq!(set, bits.count(), "{bits:?}");
        assert!(!bits.get(bits.len()));
    }
}

fn check_encodings(table: &PieceTable) {
    assert!(table.zstd.is_empty() || table.zstd.len() == table.pieces.len());
    let listed = table.pieces.len() as u64;
    for i in 0..listed {
        assert!(table.stored_len(i) <= table.layout.sealed_len(i), "piece {i}");
    }
    let held = (table.pieces.len() / 2, table.pieces.len());
    for from in [held.0, held.1] {
        let mut later = table.clone();
        let dropped = later.drain_front(from);
        let joined = table.followed_by(dropped, later);
        assert_eq!(joined.pieces, table.pieces);
        for i in 0..listed {
            assert_eq!(joined.stored_len(i), table.stored_len(i), "piece {i}");
            assert_eq!(joined.is_compressed(i), table.is_compressed(i), "piece {i}");
        }
    }
}

fn check_layout(layout: &PieceLayout) {
    assert_eq!(*layout, PieceLayout::for_size(layout.size));
    let count = layout.count();
    if count == 0 {
        assert_eq!(layout.size, 0);
        return;
    }
    let last = count - 1;
    assert_eq!(layout.range(last).1, layout.size);
    assert!(layout.plain_len(last) > 0 && layout.plain_len(last) <= layout.piece_length);
    assert_eq!(layout.piece_of(layout.size - 1), last);
    assert_eq!(
        layout.sealed_offset(last) + layout.sealed_len(last),
        layout.sealed_size()
    );
}
