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
