//! Single `Range: bytes=...` requests (RFC 9110 §14). Multi-range requests are answered with the
//! whole blob, which the RFC allows and no registry client sends.

use crate::error::EdgeError;

/// Returns the half-open byte span to serve, or `None` for the whole blob.
pub fn parse(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, EdgeError> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec
        .split_once('-')
        .ok_or(EdgeError::RangeNotSatisfiable { size })?;
    let (first, last) = (first.trim(), last.trim());
    let unsatisfiable = EdgeError::RangeNotSatisfiable { size };
    let span = if first.is_empty() {
        // Suffix range: the last N bytes.
        let n: u64 = last
            .parse()
            .map_err(|_| EdgeError::RangeNotSatisfiable { size })?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable);
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = first
            .parse()
            .map_err(|_| EdgeError::RangeNotSatisfiable { size })?;
        let end = if last.is_empty() {
            size
        } else {
            let last: u64 = last
                .parse()
                .map_err(|_| EdgeError::RangeNotSatisfiable { size })?;
            if last < start {
                return Err(unsatisfiable);
            }
            (last + 1).min(size)
        };
        if start >= size {
            return Err(unsatisfiable);
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
        assert_eq!(parse(None, 10).unwrap(), None);
        assert_eq!(parse(Some("bytes=0-3"), 10).unwrap(), Some((0, 4)));
        assert_eq!(parse(Some("bytes=4-"), 10).unwrap(), Some((4, 10)));
        assert_eq!(parse(Some("bytes=-3"), 10).unwrap(), Some((7, 10)));
        assert_eq!(parse(Some("bytes=5-100"), 10).unwrap(), Some((5, 10)));
        assert_eq!(parse(Some("bytes=0-1,4-5"), 10).unwrap(), None);
        assert!(parse(Some("bytes=10-"), 10).is_err());
        assert!(parse(Some("bytes=5-2"), 10).is_err());
        assert!(parse(Some("bytes=x-"), 10).is_err());
    }
}
