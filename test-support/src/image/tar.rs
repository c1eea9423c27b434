//! Minimal ustar writer for single-file layers.
//!
//! Only what a layer needs is implemented: one regular file with fixed metadata, so that the
//! archive bytes depend on nothing but the payload. Using a full tar library would pull in
//! host-dependent defaults (user names, mtimes) that break reproducible digests.

use anyhow::{ensure, Result};

/// Tar block size; headers and payloads are padded to it.
pub const BLOCK: usize = 512;

/// Largest payload the 11-digit octal size field can describe (8 GiB - 1).
pub const MAX_FILE_SIZE: u64 = 0o77_777_777_777;

/// Builds the 512-byte ustar header for a regular file `name` of `size` bytes with mode 0644,
/// uid/gid 0 and mtime 0.
pub fn file_header(name: &str, size: u64) -> Result<[u8; BLOCK]> {
    ensure!(
        name.len() < 100,
        "tar entry name {name:?} too long for a plain ustar header"
    );
    ensure!(
        size <= MAX_FILE_SIZE,
        "tar entry of {size} bytes exceeds the ustar size field"
    );
    let mut header = [0u8; BLOCK];
    header[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut header[100..108], 0o644); // mode
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], size);
    octal(&mut header[136..148], 0); // mtime
    header[156] = b'0'; // regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    octal(&mut header[329..337], 0); // devmajor
    octal(&mut header[337..345], 0); // devminor

    // The checksum is computed with its own field filled with spaces, then stored as six octal
    // digits, NUL, space (the historical layout every reader accepts).
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let digits = format!("{sum:06o}");
    header[148..154].copy_from_slice(digits.as_bytes());
    header[154] = 0;
    header[155] = b' ';
    Ok(header)
}

/// Zero bytes needed after a payload of `size` bytes to reach a block boundary.
pub fn padding_len(size: u64) -> usize {
    // The remainder is below BLOCK, so the conversion cannot truncate.
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

/// End-of-archive marker: two zero blocks.
pub const TRAILER: [u8; 2 * BLOCK] = [0u8; 2 * BLOCK];

/// Writes `value` as zero-padded octal followed by a NUL terminator filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(&digits.as_bytes()[digits.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_checksum() -> Result<()> {
        let header = file_header("data.bin", 1234)?;
        assert_eq!(&header[..9], b"data.bin\0");
        assert_eq!(&header[124..136], b"00000002322\0");
        assert_eq!(&header[257..265], b"ustar\x0000");
        let stored = std::str::from_utf8(&header[148..154])?;
        let mut blank = header;
        blank[148..156].fill(b' ');
        let sum: u32 = blank.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8)?, sum);
        Ok(())
    }

    #[test]
    fn padding_reaches_block_boundary() {
        assert_eq!(padding_len(0), 0);
        assert_eq!(padding_len(1), 511);
        assert_eq!(padding_len(512), 0);
        assert_eq!(padding_len(513), 511);
    }

    #[test]
    fn rejects_unrepresentable_entries() {
        assert!(file_header(&"x".repeat(100), 1).is_err());
        assert!(file_header("big", MAX_FILE_SIZE + 1).is_err());
    }
}
