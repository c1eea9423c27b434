//! A private containerd daemon, driven through `ctr`.
//!
//! containerd is the runtime Kubernetes nodes actually pull with, and its mirror handling
//! differs from skopeo's in ways an edge cache must tolerate: it appends `?ns=<registry>` to
//! every mirror request, resolves tags with HEAD, skips the `/v2/` ping, and falls back to the
//! upstream `server` per request when the mirror errors. Each instance runs entirely inside its
//! own temporary directory (root, state, sockets, `certs.d`), so it never touches a system
//! containerd.
//!
//! Pulls use `ctr content fetch`, which downloads and verifies all content without unpacking
//! layers into snapshots; that keeps the tests independent of overlayfs support. Registry HTTP
//! is performed by the `ctr` client process, configured through the daemon-independent
//! `--hosts-dir`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tempfile::TempDir;
use tokio::process::Command as ClientCommand;

use crate::process::{run_command, scrub_proxy_env, ChildGuard};

/// containerd namespace used for all test content.
pub const NAMESPACE: &str = "damselfly";

/// Upper bound for daemon start-up (plugin loading takes about a second).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for one fetch; benchmarks move multi-GiB images.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Options for [`Containerd::pull`].
#[derive(Debug, Clone, Default)]
pub struct CtrPullOptions {
    /// Fetch every platform of an index instead of the host's.
    pub all_platforms: bool,
    /// Registry credentials `(user, password)`.
    pub user: Option<(String, String)>,
}

/// A running containerd; killed and its directory removed on drop. Requires root.
#[derive(Debug)]
pub struct Containerd {
    child: Option<ChildGuard>,
    socket: PathBuf,
    // Declared last so the daemon is stopped before its directory is removed.
    dir: TempDir,
}

impl Containerd {
    /// Writes a config into a fresh directory under `/tmp`, starts the daemon and waits until
    /// `ctr version` can talk to it.
    pub async fn start() -> Result<Containerd> {
        Containerd::start_with(render_config).await
    }

    /// As [`Containerd::start`], on the config `render` writes for a directory (every path of
    /// the daemon inside it): [`config_without_registry`] is containerd 1.6's packaged config,
    /// which does not read `certs.d`.
    pub async fn start_with(render: fn(&Path) -> String) -> Result<Containerd> {
        // Unix socket paths are limited to 108 bytes; a short prefix directly under /tmp keeps
        // well clear of that regardless of TMPDIR.
        let dir = tempfile::Builder::new()
            .prefix("dmsf-ctrd-")
            .tempdir_in("/tmp")
            .context("creating containerd directory")?;
        let root = dir.path();
        for sub in ["root", "state", "opt", "cni/bin", "cni/conf", "certs.d"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| format!("creating {sub}"))?;
        }
        let config_path = root.join("config.toml");
        std::fs::write(&config_path, render(root)).context("writing containerd config")?;

        let mut cmd = std::process::Command::new("containerd");
        cmd.arg("--config").arg(&config_path).current_dir(root);
        let child = ChildGuard::spawn_logged("containerd", cmd, root)?;
        let mut daemon = Containerd {
            child: Some(child),
            socket: root.join("containerd.sock"),
            dir,
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    /// Stops the daemon and starts it again on the same directory, reading its config anew.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
        }
        let mut cmd = std::process::Command::new("containerd");
        cmd.arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path());
        self.child = Some(ChildGuard::spawn_logged("containerd", cmd, self.dir.path())?);
        self.wait_ready().await
    }

    /// The daemon's `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Pulls `image_ref` as a kubelet would, through the daemon's CRI plugin and so with the
    /// registry configuration of its `config.toml`; returns the image id.
    pub async fn cri_pull(&self, image_ref: &str) -> Result<String> {
        crate::cri::pull_image(&self.socket, image_ref, FETCH_TIMEOUT).await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let Some(child) = self.child.as_mut() else {
            return Err(anyhow!("containerd is not running"));
        };
        child
            .wait_answering("containerd to accept ctr connections", READY_TIMEOUT, || {
                let mut cmd = ctr_command(&socket);
                cmd.arg("version");
                cmd
            })
            .await
    }

    /// The daemon's gRPC socket (`ctr -a`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Directory holding per-registry `hosts.toml` files.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// The daemon's combined stdout/stderr log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// Routes pulls for `registry_host` (`host:port`) through `mirror_url`
    /// (`http://host:port`), keeping the registry itself as plain-HTTP fallback.
    pub fn write_hosts_toml(&self, registry_host: &str, mirror_url: &str) -> Result<()> {
        let host_dir = self.hosts_dir().join(registry_host);
        std::fs::create_dir_all(&host_dir).with_context(|| format!("creating {}", host_dir.display()))?;
        let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let text = format!(
            "server = {server}\n\n[host.{mirror}]\n  capabilities = [\"pull\", \"resolve\"]\n",
            server = quote(&format!("http://{registry_host}")),
            mirror = quote(mirror_url),
        );
        std::fs::write(host_dir.join("hosts.toml"), text).context("writing hosts.toml")
    }

    /// Removes any `hosts.toml` for `registry_host`. Without one, ctr assumes HTTPS, so a
    /// plain-HTTP baseline should use [`Containerd::write_direct_hosts_toml`] instead.
    pub fn remove_hosts_toml(&self, registry_host: &str) -> Result<()> {
        let host_dir = self.hosts_dir().join(registry_host);
        match std::fs::remove_dir_all(&host_dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("removing {}", host_dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Points `registry_host` at itself over plain HTTP with no mirror: the no-cache baseline.
    pub fn write_direct_hosts_toml(&self, registry_host: &str) -> Result<()> {
        let host_dir = self.hosts_dir().join(registry_host);
        std::fs::create_dir_all(&host_dir).with_context(|| format!("creating {}", host_dir.display()))?;
        let text = format!("server = \"http://{registry_host}\"\n");
        std::fs::write(host_dir.join("hosts.toml"), text).context("writing hosts.toml")
    }

    /// Fetches all content of `image_ref` (`host:port/repo:tag`) and returns the digest the
    /// image record points at (manifest, or index for multi-platform images).
    pub async fn pull(&self, image_ref: &str, opts: &CtrPullOptions) -> Result<String> {
        let mut cmd = ctr_command(&self.socket);
        cmd.args(["-n", NAMESPACE, "content", "fetch", "--hosts-dir"])
            .arg(self.hosts_dir());
        if opts.all_platforms {
            cmd.arg("--all-platforms");
        }
        if let Some((user, password)) = &opts.user {
            cmd.arg("-u").arg(format!("{user}:{password}"));
        }
        cmd.arg(image_ref);
        run_command(cmd, FETCH_TIMEOUT)
            .await
            .with_context(|| format!("ctr fetch of {image_ref}"))?;
        self.image_digest(image_ref)
            .await?
            .ok_or_else(|| anyhow!("ctr fetch of {image_ref} succeeded but no image record exists"))
    }

    /// Target digest of the image record named `image_ref`, if present.
    pub async fn image_digest(&self, image_ref: &str) -> Result<Option<String>> {
        let mut cmd = ctr_command(&self.socket);
        cmd.args(["-n", NAMESPACE, "images", "ls"]);
        let out = run_command(cmd, Duration::from_secs(30)).await?;
        Ok(parse_image_digest(&out.stdout, image_ref))
    }

    /// Deletes the image record and synchronously garbage-collects its content, so the next
    /// pull of the same image transfers everything again (used between benchmark rounds).
    pub async fn remove_image(&self, image_ref: &str) -> Result<()> {
        let mut cmd = ctr_command(&self.socket);
        cmd.args(["-n", NAMESPACE, "images", "rm", "--sync", image_ref]);
        run_command(cmd, Duration::from_secs(60)).await?;
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(err) = child.kill() {
                tracing::warn!("stopping containerd: {err:#}");
            }
        }
        // The TempDir field then removes the directory, ignoring errors.
    }
}

fn ctr_command(socket: &Path) -> ClientCommand {
    let mut cmd = ClientCommand::new("ctr");
    scrub_proxy_env(&mut cmd);
    cmd.arg("-a").arg(socket);
    cmd
}

/// Finds the DIGEST column of `ctr images ls` for the row whose REF is `image_ref`.
/// Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS.
fn parse_image_digest(listing: &str, image_ref: &str) -> Option<String> {
    listing.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next() == Some(image_ref))
            .then(|| cols.nth(1).map(str::to_owned))
            .flatten()
    })
}

/// Renders `config.toml`: every path inside `w`, CRI's network-facing pieces neutralised (no TCP
/// service, ephemeral stream port, private CNI dirs) and registry hosts read from `w/certs.d`.
fn render_config(w: &Path) -> String {
    format!(
        "{}  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{}/certs.d\"\n",
        config_without_registry(w),
        w.display()
    )
}

/// [`render_config`] without `config_path`, as containerd 1.6 is packaged: its CRI plugin then
/// reads no hosts directory.
pub fn config_without_registry(w: &Path) -> String {
    let w = w.display();
    format!(
        r#"version = 2
root = "{w}/root"
state = "{w}/state"
[grpc]
  address = "{w}/containerd.sock"
[ttrpc]
  address = "{w}/containerd.sock.ttrpc"
[debug]
  address = "{w}/debug.sock"
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{w}/cni/bin"
    conf_dir = "{w}/cni/conf"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_digest_column() {
        let listing = "REF                        TYPE                                       DIGEST         SIZE    PLATFORMS   LABELS\n\
                       127.0.0.1:5000/a:v1        application/vnd.oci.image.manifest.v1+json sha256:aaa     3.2 MiB linux/amd64 -\n\
                       127.0.0.1:5000/b:v1        application/vnd.oci.image.index.v1+json    sha256:bbb     1.0 KiB linux/amd64,linux/arm64/v8 -\n";
        assert_eq!(
            parse_image_digest(listing, "127.0.0.1:5000/b:v1").as_deref(),
            Some("sha256:bbb")
        );
        assert_eq!(
            parse_image_digest(listing, "127.0.0.1:5000/a:v1").as_deref(),
            Some("sha256:aaa")
        );
        assert_eq!(parse_image_digest(listing, "127.0.0.1:5000/c:v1"), None);
    }

    #[test]
    fn config_keeps_everything_inside_its_directory() {
        let text = render_config(Path::new("/tmp/dmsf-ctrd-x"));
        assert!(text.contains("address = \"/tmp/dmsf-ctrd-x/containerd.sock\""));
        assert!(text.contains("config_path = \"/tmp/dmsf-ctrd-x/certs.d\""));
        assert!(!text.contains("/var/lib") && !text.contains("/run/"));
    }
}
