//! The cluster secret: read from the configured file (which must be readable by its owner
//! only), or generated once in the data directory for a lone edge or preheater.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The secret's bytes (hex text as written by [`load_or_create`], or any text of at least 32
/// bytes an operator put there).
pub fn load_or_create(configured: Option<&Path>, data_dir: &Path) -> Result<Vec<u8>, String> {
    let generated = data_dir.join("cluster.secret");
    let path = configured.unwrap_or(&generated);
    if configured.is_none() && !path.exists() {
        std::fs::create_dir_all(data_dir).map_err(|e| format!("create {}: {e}", data_dir.display()))?;
        let mut bytes = [0u8; 32];
        random_bytes(&mut bytes)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        file.write_all(hex.as_bytes())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), "generated a cluster secret (set cluster_secret_file to share one)");
    }
    // Anyone who reads it can decrypt what it seals and mint tickets.
    crate::tls::check_private(path).map_err(|e| format!("cluster secret: {e}"))?;
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read cluster secret {}: {e}", path.display()))?;
    Ok(text.trim().as_bytes().to_vec())
}

/// 32 random bytes from the operating system.
fn random_bytes(out: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(out))
        .map_err(|e| format!("no randomness for a cluster secret: {e}"))
}
