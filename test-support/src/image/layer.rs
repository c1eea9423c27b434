//! Generation of one layer blob.
//!
//! A layer is a tar archive holding a single `data.bin` of seeded pseudo-random bytes. Random
//! content is incompressible and free of repeats, so neither transport compression nor
//! chunk-level deduplication can make a benchmark look better than it would on real images.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::blobs::{HashingWriter, PendingBlob};
use super::gzip::StoredGzWriter;
use super::oci::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR};
use super::tar;

/// Name of the single file inside every generated layer.
pub const LAYER_FILE_NAME: &str = "data.bin";

/// Payload generation granularity; also the largest transient allocation per layer.
const CHUNK: usize = 1 << 20;

/// Identity of a written layer.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed if gzip).
    pub digest: String,
    /// Size of the blob as stored.
    pub size: u64,
    /// Digest of the uncompressed tar, for the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// Layer media type.
    pub media_type: &'static str,
}

/// Derives the 32-byte generator seed for one layer from the image seed, the platform and the
/// layer position, so every layer of every platform has distinct content.
pub fn layer_seed(image_seed: &str, platform_key: &str, index: usize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [
        "damselfly-test-layer",
        image_seed,
        platform_key,
        &index.to_string(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher.finalize().into()
}

/// `len` seeded pseudo-random bytes from the generator layer payloads use: for tests that need
/// incompressible content outside an image (a plain file), so they need no generator of their own.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Streams one layer with a `size`-byte payload into `blob_dir`.
///
/// The payload generator is ChaCha12 (`rand`'s `StdRng`): it is seedable, its output is fixed
/// for a given `rand` release (pinned by `Cargo.lock`), and being compiled as an optimised
/// dependency it fills about 1 GiB/s even in debug test builds, which a hand-written generator in
/// this crate would not.
pub fn write_layer(blob_dir: &Path, size: u64, seed: [u8; 32], gzip: bool) -> Result<LayerBlob> {
    let mut pending = PendingBlob::create(blob_dir)?;
    let diff_id = if gzip {
        let gz = StoredGzWriter::new(pending.writer()).context("writing gzip header")?;
        let mut tar_stream = HashingWriter::new(gz);
        write_tar(&mut tar_stream, size, seed)?;
        let (diff_id, _, gz) = tar_stream.finish();
        gz.finish().context("finishing gzip stream")?;
        Some(diff_id)
    } else {
        write_tar(pending.writer(), size, seed)?;
        None
    };
    let (digest, blob_size) = pending.commit()?;
    Ok(LayerBlob {
        diff_id: diff_id.unwrap_or_else(|| digest.clone()),
        digest,
        size: blob_size,
        media_type: if gzip {
            MEDIA_TYPE_LAYER_GZIP
        } else {
            MEDIA_TYPE_LAYER_TAR
        },
    })
}

/// Streams a plain `tar` layer of the regular files under `root` into `blob_dir`, until
/// `max_bytes` of file content (see `FileLayer`).
pub fn write_file_layer(blob_dir: &Path, root: &Path, max_bytes: u64) -> Result<LayerBlob> {
    let mut pending = PendingBlob::create(blob_dir)?;
    let out = pending.writer();
    let mut written = 0u64;
    for (name, path) in regular_files(root)? {
        // Whole files only, and none that would pass the size asked for.
        let fits = std::fs::metadata(&path).is_ok_and(|m| written + m.len() <= max_bytes);
        if !fits {
            continue;
        }
        let Ok(content) = std::fs::read(&path) else {
            continue;
        };
        let Ok(header) = tar::file_header(&name, content.len() as u64) else {
            continue;
        };
        out.write_all(&header)?;
        out.write_all(&content)?;
        out.write_all(&[0u8; tar::BLOCK][..tar::padding_len(content.len() as u64)])?;
        written += content.len() as u64;
    }
    out.write_all(&tar::TRAILER)?;
    let (digest, size) = pending.commit()?;
    Ok(LayerBlob {
        diff_id: digest.clone(),
        digest,
        size,
        media_type: MEDIA_TYPE_LAYER_TAR,
    })
}

/// (name in the archive, path) of every regular file under `root`, sorted by name.
fn regular_files(root: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                let name = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .to_string();
                if name.len() < 100 {
                    found.push((name, path));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Writes the tar archive: header, payload, padding, end-of-archive marker.
fn write_tar(out: &mut impl Write, size: u64, seed: [u8; 32]) -> Result<()> {
    out.write_all(&tar::file_header(LAYER_FILE_NAME, size)?)?;
    let mut rng = StdRng::from_seed(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = size;
    while remaining > 0 {
        let take = usize::try_from(remaining).map_or(CHUNK, |left| left.min(CHUNK));
        rng.fill_bytes(&mut buf[..take]);
        out.write_all(&buf[..take]).context("writing layer payload")?;
        remaining -= take as u64;
    }
    out.write_all(&[0u8; tar::BLOCK][..tar::padding_len(size)])?;
    out.write_all(&tar::TRAILER)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn payload_of(tar_bytes: &[u8]) -> &[u8] {
        let size = usize::from_str_radix(
            std::str::from_utf8(&tar_bytes[124..135]).expect("octal size is ASCII"),
            8,
        )
        .expect("octal size");
        &tar_bytes[tar::BLOCK..tar::BLOCK + size]
    }

    #[test]
    fn gzip_layer_decompresses_to_its_diff_id() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let seed = layer_seed("s", "amd64", 0);
        let gz = write_layer(dir.path(), 100_000, seed, true)?;
        let tar = write_layer(dir.path(), 100_000, seed, false)?;
        assert_eq!(gz.diff_id, tar.digest, "diff_id must be the uncompressed digest");
        assert_eq!(tar.diff_id, tar.digest);

        let compressed = std::fs::read(dir.path().join(gz.digest.trim_start_matches("sha256:")))?;
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut plain)?;
        assert_eq!(super::super::blobs::digest_of(&plain), gz.diff_id);
        assert_eq!(plain.len() % tar::BLOCK, 0);
        assert_eq!(payload_of(&plain).len(), 100_000);
        Ok(())
    }

    #[test]
    fn payload_is_incompressible() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let layer = write_layer(dir.path(), 1 << 20, layer_seed("s", "amd64", 1), false)?;
        let bytes = std::fs::read(dir.path().join(layer.digest.trim_start_matches("sha256:")))?;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(payload_of(&bytes))?;
        let squeezed = enc.finish()?.len();
        assert!(
            squeezed > (1 << 20),
            "random payload compressed to {squeezed} bytes"
        );
        Ok(())
    }

    #[test]
    fn seeds_differ_per_platform_and_position() {
        let base = layer_seed("s", "amd64", 0);
        assert_ne!(base, layer_seed("s", "arm64/v8", 0));
        assert_ne!(base, layer_seed("s", "amd64", 1));
        assert_ne!(base, layer_seed("t", "amd64", 0));
        assert_eq!(base, layer_seed("s", "amd64", 0));
    }
}
