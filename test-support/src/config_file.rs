//! A daemon's configuration file for a test, in a directory of its own.

use std::path::PathBuf;

use tempfile::TempDir;

/// A file holding a configuration's text; the directory goes when this is dropped.
pub struct ConfigFile {
    _dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    /// `name` (`edge.toml`) holding `text`.
    pub fn new(name: &str, text: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = ConfigFile {
            path: dir.path().join(name),
            _dir: dir,
        };
        file.write(text);
        file
    }

    /// The path, as a flag's value (`--config <path>`).
    pub fn path(&self) -> &str {
        self.path.to_str().expect("a temporary path is UTF-8")
    }

    /// Replaces the text.
    pub fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("writing a configuration file");
    }
}
