//! Single `Range: bytes=...` requests (RFC 9110 §14). Multi-range requests are answered with the
//! whole body, which the RFC allows and no registry client sends.

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("range not satisfiable for {size} bytes")]
pub struct RangeNotSatisfiable {
    pub size: u64,
}

/// The half-open byte span a `Range` header asks of a `size`-byte body, or `None` for all of it.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, RangeNotSatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let err = RangeNotSatisfiable { size };
    let (first, last) = spec.split_once('-').ok_or(err.clone())?;
    let (first, last) = (first.trim(), last.trim());
    let span = if first.is_empty() {
        // Suffix range: the last N bytes.
        let n: u64 = last.parse().map_err(|_| err.clone())?;
        if n == 0 || size == 0 {
            return Err(err);
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = first.parse().map_err(|_| err.clone())?;
        let end = if last.is_empty() {
            size
        } else {
            let last: u64 = last.parse().map_err(|_| err.clone())?;
            if last < start {
                return Err(err);
            }
            // `bytes=0-18446744073709551615` is a valid way of asking for everything.
            last.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(err);
        }
        (start, end)
    };
    Ok(Some(span))
}

/// A `Content-Range: bytes <first>-<last>/<complete length>` header (RFC 9110 §14.4), as a
/// registry or file server answers a resumed fetch: the half-open span `[start, end)`, never
/// empty, within `total` when the sender knows the whole length (`/*` when it does not). The
/// unsatisfied form `bytes */<length>` names no span and does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
    pub total: Option<u64>,
}

impl ContentRange {
    pub fn parse(header: &str) -> Option<ContentRange> {
        let (span, total) = header.trim().strip_prefix("bytes ")?.split_once('/')?;
        let (first, last) = span.trim().split_once('-')?;
        let total = match total.trim() {
            "*" => None,
            total => Some(digits(total)?),
        };
        let (start, last) = (digits(first)?, digits(last)?);
        if last < start || total.is_some_and(|total| last >= total) {
            return None;
        }
        Some(ContentRange {
            start,
            end: last.checked_add(1)?,
            total,
        })
    }
}

/// A decimal number as RFC 9110 writes one: digits only (`u64::from_str` also takes a `+`).
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl std::fmt::Display for ContentRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bytes {}-{}/", self.start, self.end.saturating_sub(1))?;
        match self.total {
            Some(total) => write!(f, "{total}"),
            None => f.write_str("*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_registries_see() {
        assert_eq!(parse_range(None, 10).unwrap(), None);
        assert_eq!(parse_range(Some("bytes=0-3"), 10).unwrap(), Some((0, 4)));
        assert_eq!(parse_range(Some("bytes=4-"), 10).unwrap(), Some((4, 10)));
        assert_eq!(parse_range(Some("bytes=-3"), 10).unwrap(), Some((7, 10)));
        assert_eq!(parse_range(Some("bytes=5-100"), 10).unwrap(), Some((5, 10)));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10).unwrap(), None);
        assert!(parse_range(Some("bytes=10-"), 10).is_err());
        assert!(parse_range(Some("bytes=5-2"), 10).is_err());
        assert!(parse_range(Some("bytes=x-"), 10).is_err());
    }

    #[test]
    fn a_last_byte_of_u64_max_means_to_the_end() {
        // Found by fuzzing: `last + 1` overflowed (a panic in debug builds, an empty span and a
        // `Content-Range` ending at u64::MAX in release builds).
        let max = format!("bytes=3-{}", u64::MAX);
        assert_eq!(parse_range(Some(&max), 10).unwrap(), Some((3, 10)));
    }

    #[test]
    fn content_ranges_name_a_span_within_the_total() {
        let r = ContentRange::parse("bytes 100-199/1000").unwrap();
        assert_eq!((r.start, r.end, r.total), (100, 200, Some(1000)));
        assert_eq!(r.to_string(), "bytes 100-199/1000");
        let unknown = ContentRange::parse("bytes 0-0/*").unwrap();
        assert_eq!((unknown.start, unknown.end, unknown.total), (0, 1, None));
        assert_eq!(unknown.to_string(), "bytes 0-0/*");
        for bad in [
            "bytes */1000",
            "bytes 5-3/10",
            "bytes 5-10/10",
            "bytes +5-6/10",
            "bytes 5-/10",
            "bytes 0-18446744073709551615/*",
            "items 0-1/2",
            "bytes 0-1",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_largest_numbers_neither_overflow_nor_panic() {
        let max = u64::MAX;
        assert_eq!(
            parse_range(Some(&format!("bytes=0-{max}")), 10).unwrap(),
            Some((0, 10))
        );
        assert_eq!(
            parse_range(Some(&format!("bytes={max}-{max}")), 10),
            Err(RangeNotSatisfiable { size: 10 })
        );
        assert_eq!(
            parse_range(Some(&format!("bytes=-{max}")), 10).unwrap(),
            Some((0, 10))
        );
        assert_eq!(
            parse_range(Some(&format!("bytes=5-{max}")), max).unwrap(),
            Some((5, max))
        );
        // Beyond u64: not a number this parser knows.
        assert!(parse_range(Some("bytes=0-18446744073709551616"), 10).is_err());
    }
}
