//! A small tmpfs on a fresh directory, for "the disk is full" tests (needs root).

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};

/// Mounted on creation, unmounted (lazily) on drop.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A tmpfs of `size` (`mount` syntax: `20m`).
    pub fn mount(size: &str) -> Result<SmallDisk> {
        let dir = tempfile::Builder::new()
            .prefix("damselfly-small-disk-")
            .tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        ensure!(status.success(), "mounting a {size} tmpfs failed (it needs root)");
        Ok(SmallDisk { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
