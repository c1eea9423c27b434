//! skopeo as the reference registry client.
//!
//! skopeo implements the client side of the distribution protocol independently of anything in
//! this workspace (containers/image), so an image it pushes and pulls successfully through an
//! edge cache is strong evidence of wire compatibility.
//!
//! Facts about skopeo 1.9 this module is built around: registry configuration is only taken from
//! the global `--registries-conf` flag (the environment variables are ignored); a `dir:`
//! destination needs an existing parent; and when a mirror fails, skopeo quietly falls back to
//! the origin, so callers must prove use of the mirror from the mirror's own counters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::image::BuiltImage;
use crate::process::{run_command, scrub_proxy_env};

/// Upper bound for one copy; generous because benchmarks move multi-GiB images.
pub const SKOPEO_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Options for [`push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Copy every instance of an index (`--all`); required to push a multi-platform image whole.
    pub all: bool,
    /// Convert to Docker schema 2 / manifest list (`--format v2s2`). The pushed digest then
    /// differs from [`BuiltImage::top_digest`]; without it digests are preserved exactly.
    pub format_v2s2: bool,
    /// Registry credentials `(user, password)`.
    pub creds: Option<(String, String)>,
}

/// Options for [`pull_via_mirror`] and [`pull_direct`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Copy every instance of an index (`--all`) instead of the host platform's.
    pub all: bool,
    /// Credentials `(user, password)`, offered to the mirror and the origin alike.
    pub creds: Option<(String, String)>,
}

/// An image copied into a skopeo `dir:` directory.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The destination directory.
    pub dir: PathBuf,
    /// `sha256:` digest of the top-level `manifest.json`, comparable with the pushed digest.
    pub manifest_digest: String,
    /// File names in `dir`, sorted (blobs are named by hex digest).
    pub files: Vec<String>,
}

/// Pushes `image` to `dest` (`host:port/repo:tag`) over plain HTTP. Returns the digest of the
/// pushed top-level manifest as reported by skopeo.
pub async fn push(image: &BuiltImage, dest: &str, opts: &PushOptions) -> Result<String> {
    let scratch = tempfile::tempdir().context("creating skopeo scratch directory")?;
    let digest_file = scratch.path().join("digest");
    let mut cmd = skopeo_command(None);
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if opts.all {
        cmd.arg("--all");
    }
    if opts.format_v2s2 {
        cmd.args(["--format", "v2s2"]);
    } else {
        // Without this skopeo may recompress plain-tar layers for a registry destination, which
        // would change every digest the test computed in advance.
        cmd.arg("--preserve-digests");
    }
    if let Some((user, password)) = &opts.creds {
        cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
    }
    cmd.arg("--digestfile").arg(&digest_file);
    cmd.arg(image.oci_reference()).arg(format!("docker://{dest}"));
    run_command(cmd, SKOPEO_TIMEOUT)
        .await
        .with_context(|| format!("pushing {} to {dest}", image.tag))?;
    let digest = std::fs::read_to_string(&digest_file).context("reading skopeo digest file")?;
    Ok(digest.trim().to_owned())
}

/// Pulls `image_ref` (`origin-host:port/repo:tag`) into `out_dir` with `mirror` configured as a
/// registry mirror for `origin`, the way a node would use an edge cache.
pub async fn pull_via_mirror(
    origin: &str,
    mirror: &str,
    image_ref: &str,
    out_dir: &Path,
    opts: &PullOptions,
) -> Result<PulledImage> {
    pull(origin, Some(mirror), image_ref, out_dir, opts).await
}

/// Pulls `image_ref` straight from `origin` into `out_dir`: the no-cache baseline.
pub async fn pull_direct(
    origin: &str,
    image_ref: &str,
    out_dir: &Path,
    opts: &PullOptions,
) -> Result<PulledImage> {
    pull(origin, None, image_ref, out_dir, opts).await
}

/// `skopeo inspect --raw <reference>`: the raw top-level manifest bytes of any transport
/// reference (`oci:<dir>:<tag>`, `docker://host:port/repo:tag`).
pub async fn inspect_raw(reference: &str) -> Result<Vec<u8>> {
    let mut cmd = skopeo_command(None);
    cmd.args(["inspect", "--raw", "--tls-verify=false", reference]);
    let out = run_command(cmd, SKOPEO_TIMEOUT).await?;
    Ok(out.stdout.into_bytes())
}

/// `skopeo inspect <reference>`: skopeo's JSON summary (`Digest`, `Architecture`, `Layers`,
/// ...) of the host platform's image, which requires reading its config blob too.
pub async fn inspect(reference: &str) -> Result<serde_json::Value> {
    let mut cmd = skopeo_command(None);
    cmd.args(["inspect", "--tls-verify=false", reference]);
    let out = run_command(cmd, SKOPEO_TIMEOUT).await?;
    serde_json::from_str(&out.stdout).context("parsing skopeo inspect output")
}

async fn pull(
    origin: &str,
    mirror: Option<&str>,
    image_ref: &str,
    out_dir: &Path,
    opts: &PullOptions,
) -> Result<PulledImage> {
    let scratch = tempfile::tempdir().context("creating skopeo scratch directory")?;
    let conf = scratch.path().join("registries.conf");
    std::fs::write(&conf, registries_conf(origin, mirror)).context("writing registries.conf")?;
    if let Some(parent) = out_dir.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }

    let mut cmd = skopeo_command(Some(&conf));
    cmd.args(["copy", "--quiet"]);
    if opts.all {
        cmd.arg("--all");
    }
    if let Some((user, password)) = &opts.creds {
        // containers/image never sends `--src-creds` to a mirror (they are meant for the
        // primary registry), so credentials go in an auth file that names both hosts, as a
        // user who logged in to each would have.
        let auth = scratch.path().join("auth.json");
        std::fs::write(&auth, auth_json(&[Some(origin), mirror], user, password))
            .context("writing auth.json")?;
        cmd.arg("--src-authfile").arg(&auth);
    }
    cmd.arg("--src-tls-verify=false")
        .arg(format!("docker://{image_ref}"));
    cmd.arg(format!("dir:{}", out_dir.display()));
    let via = mirror.map(|m| format!(" via mirror {m}")).unwrap_or_default();
    run_command(cmd, SKOPEO_TIMEOUT)
        .await
        .with_context(|| format!("pulling {image_ref}{via}"))?;

    let manifest = std::fs::read(out_dir.join("manifest.json")).context("reading pulled manifest.json")?;
    let mut files = std::fs::read_dir(out_dir)
        .with_context(|| format!("listing {}", out_dir.display()))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    files.sort();
    Ok(PulledImage {
        dir: out_dir.to_owned(),
        manifest_digest: format!("sha256:{}", hex::encode(Sha256::digest(&manifest))),
        files,
    })
}

/// A containers auth file (`auth.json`) holding the same credentials for every given host.
pub fn auth_json(hosts: &[Option<&str>], user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let auths: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .flatten()
        .map(|h| (h.to_string(), serde_json::json!({ "auth": token })))
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

/// A registries.conf that marks `origin` as plain-HTTP and, if given, routes its pulls through
/// `mirror`. Search registries are cleared so short names can never reach the internet.
pub fn registries_conf(origin: &str, mirror: Option<&str>) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut text = format!(
        "unqualified-search-registries = []\n\n[[registry]]\nprefix = {o}\nlocation = {o}\ninsecure = true\n",
        o = quote(origin)
    );
    if let Some(mirror) = mirror {
        text.push_str(&format!(
            "\n[[registry.mirror]]\nlocation = {}\ninsecure = true\n",
            quote(mirror)
        ));
    }
    text
}

fn skopeo_command(registries_conf: Option<&Path>) -> Command {
    let mut cmd = Command::new("skopeo");
    scrub_proxy_env(&mut cmd);
    // Tests copy unsigned images; do not depend on the host's /etc/containers/policy.json.
    cmd.arg("--insecure-policy");
    if let Some(conf) = registries_conf {
        cmd.arg("--registries-conf").arg(conf);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_conf_with_and_without_mirror() {
        let with = registries_conf("127.0.0.1:5000", Some("127.0.0.1:6000"));
        assert!(with.contains("prefix = \"127.0.0.1:5000\"\nlocation = \"127.0.0.1:5000\"\ninsecure = true"));
        assert!(with.contains("[[registry.mirror]]\nlocation = \"127.0.0.1:6000\"\ninsecure = true"));
        assert!(!registries_conf("127.0.0.1:5000", None).contains("mirror"));
    }
}
