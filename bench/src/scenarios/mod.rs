pub mod control;
pub mod demo;
pub mod edge;
pub mod host;
pub mod sim;
pub mod swarm;
pub mod warm;

use std::path::{Path, PathBuf};

use anyhow::Result;

/// A Damselfly binary built next to this one (or in `--bin-dir`).
pub fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    let path = bin_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it first (cargo build --release --bins)",
        path.display()
    );
    Ok(path)
}
