//! htpasswd files without the `htpasswd` binary, which minimal hosts often lack.

use std::path::Path;

use anyhow::{Context, Result};

/// bcrypt cost for test credentials. The minimum cost Go's bcrypt accepts is 4; 5 keeps each
/// login check at a few milliseconds so authenticated pulls are not dominated by hashing.
pub const TEST_BCRYPT_COST: u32 = 5;

/// Formats one `user:hash` htpasswd line.
///
/// Distribution only accepts bcrypt entries. The `$2y$` prefix is what Apache's `htpasswd -B`
/// writes and Go's bcrypt parser accepts any minor version letter, so this matches real files.
pub fn htpasswd_line(user: &str, password: &str) -> Result<String> {
    let hash = bcrypt::hash_with_result(password, TEST_BCRYPT_COST)
        .with_context(|| format!("hashing password for {user}"))?
        .format_for_version(bcrypt::Version::TwoY);
    Ok(format!("{user}:{hash}"))
}

/// Writes an htpasswd file with one entry per `(user, password)` pair.
pub fn write_htpasswd(path: &Path, entries: &[(String, String)]) -> Result<()> {
    let mut text = String::new();
    for (user, password) in entries {
        text.push_str(&htpasswd_line(user, password)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_is_verifiable_bcrypt_with_2y_prefix() -> Result<()> {
        let line = htpasswd_line("alice", "wonderland")?;
        let (user, hash) = line.split_once(':').context("separator")?;
        assert_eq!(user, "alice");
        assert!(hash.starts_with("$2y$05$"), "{hash}");
        assert!(bcrypt::verify("wonderland", hash)?);
        assert!(!bcrypt::verify("wrong", hash)?);
        Ok(())
    }
}
