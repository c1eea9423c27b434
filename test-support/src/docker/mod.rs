//! A private Docker Engine (`dockerd`), driven through the `docker` CLI.
//!
//! Docker reaches a mirror differently from containerd and skopeo: `registry-mirrors` in
//! `daemon.json` applies to Docker Hub only, requests carry no `?ns=`, the daemon itself does the
//! HTTP work (the CLI only talks to its socket), and when a mirror fails the daemon moves on to
//! Docker Hub by itself. So tests need a real daemon, and never the machine's own.
//!
//! Each instance runs in a private mount and PID namespace (`unshare`) with its own data root,
//! exec root, pidfile, socket, `/etc/docker` and CLI config directory. That is what makes it
//! disposable: killing the namespace's first process kills `dockerd` and the `containerd` it
//! started, and every mount `dockerd` made (it bind-mounts its data root onto itself) vanishes
//! with the namespace instead of lingering on the host after a SIGKILL.

mod hub;
mod token;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::process::Command as ClientCommand;

pub use self::hub::{DockerHubStandIn, HUB_HOST};
pub use self::token::TokenService;
use crate::image::{BlobInfo, BuiltImage};
use crate::process::{describe, run_command, scrub_proxy_env, ChildGuard, CommandOutput};

/// Upper bound for daemon start-up (about two seconds here, most of it containerd's plugins).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound for one pull. Docker waits 5, 10, 15 and 20 s between the attempts at a failing
/// layer before it gives up on a mirror, so a pull that ends on another endpoint takes a minute.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Upper bound for the short CLI commands (inspect, save, login, rmi).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a [`Dockerd`].
#[derive(Debug, Clone, Default)]
pub struct DockerdOptions {
    /// The `daemon.json` the daemon reads (`--config-file`), say one written by
    /// `peer-agent configure docker`.
    pub config_file: PathBuf,
    /// Environment of the daemon besides the scrubbed host environment: a proxy for Docker Hub
    /// (`HTTPS_PROXY`), the trust store it is checked against (`SSL_CERT_FILE`).
    pub env: Vec<(String, String)>,
}

/// A running Docker Engine; it, its containerd and its mounts are gone and its directory
/// removed on drop. Requires root, `setpriv` and `unshare` (util-linux), `dockerd` and `docker`.
#[derive(Debug)]
pub struct Dockerd {
    child: Option<ChildGuard>,
    socket: PathBuf,
    // Declared last so the daemon is stopped before its directory is removed.
    dir: TempDir,
}

/// What `docker save` wrote for one image, unpacked.
#[derive(Debug, Clone)]
pub struct SavedImage {
    /// The image config exactly as stored (its sha256 is the image ID).
    pub config: Vec<u8>,
    /// The uncompressed layer tars, base layer first.
    pub layers: Vec<PathBuf>,
    /// `RepoTags` of the archive's manifest.
    pub repo_tags: Vec<String>,
}

impl Dockerd {
    /// Starts a daemon in a fresh directory under `/tmp` and waits until its socket answers.
    pub async fn start(options: &DockerdOptions) -> Result<Dockerd> {
        // Unix socket paths are limited to 108 bytes and containerd's sits two levels below the
        // exec root: a short prefix directly under /tmp keeps clear of that whatever TMPDIR is.
        let dir = tempfile::Builder::new()
            .prefix("dmsf-dockerd-")
            .tempdir_in("/tmp")
            .context("creating dockerd directory")?;
        let root = dir.path();
        for sub in ["data", "exec", "etc", "cli", "saved"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| format!("creating {sub}"))?;
        }
        let socket = root.join("docker.sock");
        // If the test process dies without dropping this guard (a CI timeout), the daemon must
        // not outlive it: the kernel kills `unshare` when its parent goes, and the namespace with it.
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "unshare"])
            .args(unshare_args())
            .arg("sh")
            .arg("-c")
            // Its own /etc/docker (key.json, certs.d) in the test directory, over the host's in
            // this namespace only. Debian's docker.io ships the directory; elsewhere it is made
            // empty, so the daemon never writes the host's.
            .arg("mkdir -p /etc/docker && mount --bind \"$0\" /etc/docker && exec \"$@\"")
            .arg(root.join("etc"))
            .args(dockerd_args(root, &options.config_file))
            .current_dir(root);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        let child = ChildGuard::spawn_logged("dockerd", cmd, root)?;
        let mut daemon = Dockerd {
            child: Some(child),
            socket,
            dir,
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let cli = self.cli_dir();
        let Some(child) = self.child.as_mut() else {
            return Err(anyhow!("dockerd is not running"));
        };
        child
            .wait_answering("dockerd to answer on its socket", READY_TIMEOUT, || {
                let mut cmd = cli_command(&socket, &cli);
                cmd.args(["version", "--format", "{{.Server.Version}}"]);
                cmd
            })
            .await
    }

    /// The daemon's API socket (`docker -H unix://…`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn cli_dir(&self) -> PathBuf {
        self.dir.path().join("cli")
    }

    /// The daemon's log (started with `--debug`: it names every endpoint it tries).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    /// The whole log so far, for assertions about what the daemon did.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last few KiB of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        crate::process::read_log_tail(&self.log_path(), crate::process::LOG_TAIL_BYTES)
    }

    /// `docker <args>` against this daemon, with a CLI config directory of its own (so a login
    /// never reaches the user's `~/.docker`).
    pub fn command(&self) -> ClientCommand {
        cli_command(&self.socket, &self.cli_dir())
    }

    /// The engine's version, as `docker version` reports it.
    pub async fn server_version(&self) -> Result<String> {
        let mut cmd = self.command();
        cmd.args(["version", "--format", "{{.Server.Version}}"]);
        Ok(run_command(cmd, COMMAND_TIMEOUT).await?.stdout.trim().to_owned())
    }

    /// `docker pull <reference>`; the error quotes what docker printed.
    pub async fn pull(&self, reference: &str) -> Result<CommandOutput> {
        let mut cmd = self.command();
        cmd.args(["pull", reference]);
        run_command(cmd, PULL_TIMEOUT)
            .await
            .with_context(|| format!("docker pull {reference}"))
    }

    /// `docker pull --all-tags <repository>`: docker lists the tags (`tags/list`), then pulls each.
    pub async fn pull_all_tags(&self, repository: &str) -> Result<CommandOutput> {
        let mut cmd = self.command();
        cmd.args(["pull", "--all-tags", repository]);
        run_command(cmd, PULL_TIMEOUT)
            .await
            .with_context(|| format!("docker pull --all-tags {repository}"))
    }

    /// `docker build --tag <tag> <context>`, with BuildKit (the engine's own, which resolves
    /// base images as containerd does: `?ns=docker.io` on mirror requests) or the classic
    /// builder (which pulls as `docker pull` does).
    pub async fn build(&self, context: &Path, tag: &str, buildkit: bool) -> Result<CommandOutput> {
        let mut cmd = if buildkit {
            cli_command_of(&buildkit_cli().await?, &self.socket, &self.cli_dir())
        } else {
            self.command()
        };
        cmd.env("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })
            .args(["build", "--tag", tag])
            .arg(context);
        run_command(cmd, PULL_TIMEOUT)
            .await
            .with_context(|| format!("docker build of {}", context.display()))
    }

    /// The image ID (`sha256:…`) of a local image.
    pub async fn image_id(&self, reference: &str) -> Result<String> {
        let mut cmd = self.command();
        cmd.args(["image", "inspect", "--format", "{{.Id}}", reference]);
        Ok(run_command(cmd, COMMAND_TIMEOUT).await?.stdout.trim().to_owned())
    }

    /// Removes a local image and its layers, so the next pull transfers everything again.
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let mut cmd = self.command();
        cmd.args(["rmi", reference]);
        run_command(cmd, COMMAND_TIMEOUT).await.map(drop)
    }

    /// `docker login <server>`, the password given on standard input (never on a command line).
    pub async fn login(&self, server: &str, user: &str, password: &str) -> Result<CommandOutput> {
        let mut cmd = self.command();
        cmd.args(["login", "--username", user, "--password-stdin", server]);
        let description = describe(cmd.as_std());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("running {description}"))?;
        let mut stdin = child.stdin.take().context("login stdin")?;
        stdin.write_all(password.as_bytes()).await?;
        drop(stdin);
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("{description} did not finish within {COMMAND_TIMEOUT:?}"))??;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            bail!("{description} failed ({}):\n{}", output.status, stderr.trim_end());
        }
        Ok(CommandOutput { stdout, stderr })
    }

    /// `docker save` of `reference`, unpacked into this daemon's directory.
    pub async fn save(&self, reference: &str) -> Result<SavedImage> {
        let saved = tempfile::Builder::new()
            .prefix("image-")
            .tempdir_in(self.dir.path().join("saved"))?
            .keep();
        let archive = saved.join("image.tar");
        let mut cmd = self.command();
        cmd.arg("save").arg("--output").arg(&archive).arg(reference);
        run_command(cmd, COMMAND_TIMEOUT)
            .await
            .with_context(|| format!("docker save {reference}"))?;
        let unpacked = saved.join("unpacked");
        std::fs::create_dir_all(&unpacked)?;
        let mut tar = ClientCommand::new("tar");
        tar.arg("-xf").arg(&archive).arg("-C").arg(&unpacked);
        run_command(tar, COMMAND_TIMEOUT).await?;
        read_saved(&unpacked)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(err) = child.kill() {
                tracing::warn!("stopping dockerd: {err:#}");
            }
        }
        // The TempDir field then removes the directory, ignoring errors.
    }
}

/// The tar a layer blob of `image` holds, as `docker save` writes it: the blob itself, or its
/// content once gunzipped.
pub fn uncompressed_layer(image: &BuiltImage, layer: &BlobInfo) -> Result<Vec<u8>> {
    let blob = std::fs::read(image.blob_path(&layer.digest))
        .with_context(|| format!("reading layer {}", layer.digest))?;
    if layer.media_type.ends_with("gzip") {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(blob.as_slice())
            .read_to_end(&mut tar)
            .with_context(|| format!("gunzipping layer {}", layer.digest))?;
        Ok(tar)
    } else {
        Ok(blob)
    }
}

/// Proxy settings never reach the daemon or the CLI unless a test sets them: all traffic here is
/// loopback, and a CI proxy must not see it.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// A new mount and PID namespace whose first process dies with `unshare` (`--kill-child`), so a
/// SIGKILL of the guard takes the whole daemon down; a fresh `/proc` for the new PID namespace.
fn unshare_args() -> [&'static str; 8] {
    [
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
    ]
}

/// `dockerd` with everything inside `root`, and no networking of its own to set up on the host:
/// no bridge, no iptables rules, no forwarding or masquerading changes.
fn dockerd_args(root: &Path, config_file: &Path) -> Vec<std::ffi::OsString> {
    let path = |sub: &str| root.join(sub).into_os_string();
    let mut args: Vec<std::ffi::OsString> = vec!["dockerd".into(), "--data-root".into(), path("data")];
    args.extend(["--exec-root".into(), path("exec")]);
    args.extend(["--pidfile".into(), path("docker.pid")]);
    args.push(format!("--host=unix://{}", root.join("docker.sock").display()).into());
    args.extend(["--config-file".into(), config_file.as_os_str().to_owned()]);
    args.extend(
        [
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--debug",
        ]
        .map(Into::into),
    );
    args
}

/// A docker CLI that can drive the engine's BuildKit. From 23 on the CLI does so only through
/// the buildx plugin; without it, the engine's own CLI (Debian's `docker.io` ships 20.10 as
/// `/usr/bin/docker`) still speaks to BuildKit directly.
async fn buildkit_cli() -> Result<String> {
    let mut buildx = ClientCommand::new("docker");
    buildx.args(["buildx", "version"]);
    if run_command(buildx, COMMAND_TIMEOUT).await.is_ok() {
        return Ok("docker".into());
    }
    let engine_cli = "/usr/bin/docker";
    let mut version = ClientCommand::new(engine_cli);
    version.args(["version", "--format", "{{.Client.Version}}"]);
    match run_command(version, COMMAND_TIMEOUT).await {
        Ok(out) if out.stdout.starts_with("20.") || out.stdout.starts_with("19.") => Ok(engine_cli.into()),
        _ => bail!("no docker CLI here builds with BuildKit: no buildx plugin, no 20.10 CLI"),
    }
}

fn cli_command(socket: &Path, cli_dir: &Path) -> ClientCommand {
    cli_command_of("docker", socket, cli_dir)
}

fn cli_command_of(program: &str, socket: &Path, cli_dir: &Path) -> ClientCommand {
    let mut cmd = ClientCommand::new(program);
    scrub_proxy_env(&mut cmd);
    for var in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "DOCKER_TLS_VERIFY",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg("--config")
        .arg(cli_dir)
        .arg("--host")
        .arg(format!("unix://{}", socket.display()));
    cmd
}

/// Reads an unpacked `docker save` archive holding one image (`manifest.json`: `Config`,
/// `RepoTags`, `Layers`).
fn read_saved(dir: &Path) -> Result<SavedImage> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).context("reading the archive's manifest.json")?,
    )?;
    let [image] = manifest.as_array().map(Vec::as_slice).unwrap_or_default() else {
        bail!("the archive holds other than one image: {manifest}");
    };
    let config = image["Config"]
        .as_str()
        .ok_or_else(|| anyhow!("no Config in {image}"))?;
    let strings = |key: &str| -> Vec<String> {
        image[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    Ok(SavedImage {
        config: std::fs::read(dir.join(config)).with_context(|| format!("reading {config}"))?,
        layers: strings("Layers").iter().map(|l| dir.join(l)).collect(),
        repo_tags: strings("RepoTags"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_keeps_everything_in_its_directory() {
        let args = dockerd_args(Path::new("/tmp/dmsf-dockerd-x"), Path::new("/tmp/w/daemon.json"));
        let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let text = text.join(" ");
        for expected in [
            "--data-root /tmp/dmsf-dockerd-x/data",
            "--exec-root /tmp/dmsf-dockerd-x/exec",
            "--pidfile /tmp/dmsf-dockerd-x/docker.pid",
            "--host=unix:///tmp/dmsf-dockerd-x/docker.sock",
            "--config-file /tmp/w/daemon.json",
            "--bridge=none --iptables=false",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        assert!(!text.contains("/var/"), "{text}");
    }

    #[test]
    fn a_saved_archive_lists_config_and_layers_in_order() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("manifest.json"),
            r#"[{"Config":"abc.json","RepoTags":["app:1.0"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#,
        )?;
        std::fs::write(dir.path().join("abc.json"), b"{\"rootfs\":{}}")?;
        let saved = read_saved(dir.path())?;
        assert_eq!(saved.config, b"{\"rootfs\":{}}");
        assert_eq!(saved.repo_tags, vec!["app:1.0".to_string()]);
        assert_eq!(
            saved.layers,
            vec![dir.path().join("l1/layer.tar"), dir.path().join("l2/layer.tar")]
        );
        std::fs::write(dir.path().join("manifest.json"), "[]")?;
        assert!(read_saved(dir.path()).is_err());
        Ok(())
    }
}
