//! `Range` requests as the edge and the agent answer them, and `Content-Range` answers as the
//! edge reads them from an upstream. Input: the body size (8 bytes, little endian) and the
//! header text.
//!
//! Properties: a satisfiable range lies inside the body and is not empty; the span answered as
//! `Content-Range` reads back as the same span; each span printed as a request asks for itself.

#![no_main]

use damselfly_core::{parse_range, ContentRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, header) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (1000, data),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    assert_eq!(parse_range(None, size), Ok(None));
    match parse_range(Some(header), size) {
        Ok(Some((start, end))) => {
            assert!(start < end && end <= size, "{header:?} of {size}: {start}..{end}");
            let answered = ContentRange {
                start,
                end,
                total: Some(size),
            };
            assert_eq!(ContentRange::parse(&answered.to_string()), Some(answered));
            let asked = format!("bytes={start}-{}", end - 1);
            assert_eq!(parse_range(Some(&asked), size), Ok(Some((start, end))));
        }
        Ok(None) => {}
        Err(e) => assert_eq!(e.size, size),
    }
    if let Some(range) = ContentRange::parse(header) {
        assert!(range.start < range.end, "{header:?}: {range:?}");
        if let Some(total) = range.total {
            assert!(range.end <= total, "{header:?}: {range:?}");
        }
        assert_eq!(ContentRange::parse(&range.to_string()), Some(range), "{header:?}");
    }
});
