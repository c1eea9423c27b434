//! The cluster secret: read from the configured file, or generated once for a lone edge.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use damselfly_core::ClusterSecret;
use rand::RngCore;

use crate::config::Config;
use crate::error::{EdgeError, EdgeResult};

pub fn load_or_create(config: &Config) -> EdgeResult<ClusterSecret> {
    let (path, generated) = match &config.cluster_secret_file {
        Some(p) => (p.clone(), false),
        None => (config.data_dir.join("cluster.secret"), true),
    };
    if generated && !path.exists() {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| EdgeError::Internal(format!("create {}: {e}", path.display())))?;
        file.write_all(hex::encode(bytes).as_bytes())
            .map_err(|e| EdgeError::Internal(format!("write {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "generated a cluster secret (set cluster_secret_file to share one between edges)");
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| EdgeError::Internal(format!("read cluster secret {}: {e}", path.display())))?;
    ClusterSecret::new(text.trim().as_bytes())
        .map_err(|e| EdgeError::Internal(format!("cluster secret {}: {e}", path.display())))
}
