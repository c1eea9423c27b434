//! Content-addressed blob storage inside an OCI layout.
//!
//! Blobs are streamed to a temporary file while being hashed and only renamed to their digest
//! once complete, so a layout never contains a file whose name does not match its content, and
//! no blob is ever held in memory whole.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Buffer in front of blob files; large enough that the 64 KiB gzip blocks coalesce.
const FILE_BUFFER: usize = 1 << 20;

/// Passes writes through to `inner` while computing their SHA-256 and length.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Returns `("sha256:<hex>", length, inner)`.
    pub fn finish(self) -> (String, u64, W) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.len,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blob being written into `<layout>/blobs/sha256/`.
pub struct PendingBlob {
    dir: PathBuf,
    writer: HashingWriter<BufWriter<File>>,
    tmp: PartialFile,
}

/// Removes the temporary file unless it was renamed, so failed builds leave no stray partials.
struct PartialFile(PathBuf);

impl Drop for PartialFile {
    fn drop(&mut self) {
        // After a successful commit the file no longer exists and this is a no-op.
        let _ = std::fs::remove_file(&self.0);
    }
}

impl PendingBlob {
    /// Opens a temporary file in `blob_dir` (the layout's `blobs/sha256`).
    pub fn create(blob_dir: &Path) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp_path = blob_dir.join(format!(
            ".partial-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&tmp_path).with_context(|| format!("creating {}", tmp_path.display()))?;
        Ok(Self {
            dir: blob_dir.to_owned(),
            writer: HashingWriter::new(BufWriter::with_capacity(FILE_BUFFER, file)),
            tmp: PartialFile(tmp_path),
        })
    }

    /// The sink for blob content.
    pub fn writer(&mut self) -> &mut HashingWriter<BufWriter<File>> {
        &mut self.writer
    }

    /// Flushes (without fsync: tests do not need durability) and renames the file to its
    /// digest. Returns `(digest, size)`.
    pub fn commit(self) -> Result<(String, u64)> {
        let PendingBlob { dir, writer, tmp } = self;
        let (digest, size, buffered) = writer.finish();
        buffered
            .into_inner()
            .map_err(|err| err.into_error())
            .with_context(|| format!("flushing {}", tmp.0.display()))?;
        let final_path = dir.join(digest.trim_start_matches("sha256:"));
        std::fs::rename(&tmp.0, &final_path)
            .with_context(|| format!("renaming blob to {}", final_path.display()))?;
        Ok((digest, size))
    }
}

/// Stores a small in-memory blob (config, manifest, index). Returns `(digest, size)`.
pub fn store_bytes(blob_dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let mut pending = PendingBlob::create(blob_dir)?;
    pending.writer().write_all(bytes).context("writing blob")?;
    pending.commit()
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
