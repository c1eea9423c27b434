//! Gzip framing with stored (uncompressed) deflate blocks.
//!
//! Layer payloads are random and would not shrink anyway; stored blocks keep the output a pure
//! function of the input (no compressor version can change it) and run at memory speed, while
//! still producing a genuine `tar+gzip` layer that every client must decompress and verify.
//! General-purpose encoders at level 0 still run their match machinery and are several times
//! slower.

use std::io::{self, Write};

use flate2::Crc;

/// Largest payload of one stored deflate block.
const MAX_STORED: usize = 65_535;

/// Gzip header: magic, CM=deflate, no flags, mtime 0, no extra flags, OS "unknown".
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Streams its input into a gzip member made of stored deflate blocks of exactly
/// [`MAX_STORED`] bytes (except the final one), so block boundaries depend only on the data,
/// never on how callers chunk their writes.
pub struct StoredGzWriter<W: Write> {
    inner: W,
    block: Vec<u8>,
    crc: Crc,
}

impl<W: Write> StoredGzWriter<W> {
    /// Writes the gzip header to `inner` and returns the encoder.
    pub fn new(mut inner: W) -> io::Result<Self> {
        inner.write_all(&HEADER)?;
        Ok(Self {
            inner,
            block: Vec::with_capacity(MAX_STORED),
            crc: Crc::new(),
        })
    }

    /// Emits the final block and the CRC32/ISIZE trailer, returning the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit_block(true)?;
        let crc = self.crc.sum().to_le_bytes();
        // ISIZE: input length modulo 2^32, which is exactly what `Crc::amount` tracks.
        let isize = self.crc.amount().to_le_bytes();
        self.inner.write_all(&crc)?;
        self.inner.write_all(&isize)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn emit_block(&mut self, last: bool) -> io::Result<()> {
        let len = u16::try_from(self.block.len()).map_err(io::Error::other)?;
        let mut head = [0u8; 5];
        head[0] = u8::from(last); // BFINAL bit, BTYPE 00 (stored)
        head[1..3].copy_from_slice(&len.to_le_bytes());
        head[3..5].copy_from_slice(&(!len).to_le_bytes());
        self.inner.write_all(&head)?;
        self.inner.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }
}

impl<W: Write> Write for StoredGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(MAX_STORED - self.block.len());
        self.block.extend_from_slice(&buf[..take]);
        self.crc.update(&buf[..take]);
        if self.block.len() == MAX_STORED {
            self.emit_block(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn encode(data: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut enc = StoredGzWriter::new(Vec::new())?;
        for piece in data.chunks(chunk.max(1)) {
            enc.write_all(piece)?;
        }
        enc.finish()
    }

    #[test]
    fn round_trips_through_a_real_decoder() -> io::Result<()> {
        for len in [
            0usize,
            1,
            MAX_STORED - 1,
            MAX_STORED,
            MAX_STORED + 1,
            3 * MAX_STORED + 17,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let gz = encode(&data, 4096)?;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out)?;
            assert_eq!(out, data, "length {len}");
        }
        Ok(())
    }

    #[test]
    fn output_does_not_depend_on_write_chunking() -> io::Result<()> {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        assert_eq!(encode(&data, 1000)?, encode(&data, 70_001)?);
        Ok(())
    }
}
