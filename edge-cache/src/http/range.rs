//! `Range` requests on blobs: the rule lives in `core`, the error mapping here.

use crate::error::EdgeError;

pub fn parse(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, EdgeError> {
    damselfly_core::parse_range(header, size).map_err(|e| EdgeError::RangeNotSatisfiable { size: e.size })
}
