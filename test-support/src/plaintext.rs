//! Looking for layer plaintext on disk. No layer byte may be written unsealed, so tests take
//! samples of a layer and read every file the daemons wrote in search of them.

use std::io;
use std::path::{Path, PathBuf};

/// 64-byte samples from inside a layer's random payload (the tar and gzip framing at either end
/// is mostly zeros, which any file might contain).
pub fn layer_samples(layer: &[u8]) -> Vec<&[u8]> {
    [4096, layer.len() / 2, layer.len() * 3 / 4]
        .into_iter()
        .map(|at| &layer[at..at + 64])
        .collect()
}

/// What [`scan`] read, and where it found plaintext.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: usize,
    pub bytes: u64,
    /// Files holding at least one sample.
    pub leaks: Vec<PathBuf>,
}

/// Reads every file below each of `dirs`, noting those that contain any of `samples`.
pub fn scan(dirs: &[&Path], samples: &[&[u8]]) -> io::Result<Scan> {
    let mut scan = Scan::default();
    for dir in dirs {
        for file in files_under(dir)? {
            let content = std::fs::read(&file)?;
            scan.files += 1;
            scan.bytes += content.len() as u64;
            if samples.iter().any(|s| contains_subslice(&content, s)) {
                scan.leaks.push(file);
            }
        }
    }
    Ok(scan)
}

/// Every file below `dir`, at any depth.
pub fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Whether `needle` occurs in `haystack` (compiled optimised with this crate, so tests can scan
/// whole data directories quickly).
pub fn contains_subslice(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
