//! A real CNCF Distribution registry (`docker-registry serve`) on loopback.
//!
//! Used both as the origin an edge cache pulls through and as the reference behaviour the cache
//! must reproduce. Each instance owns a temporary directory holding its config, logs, htpasswd
//! file and (unless shared via [`RegistryOptions::data_dir`]) its storage.

mod config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use self::config::{render, ConfigInputs};
pub use self::config::{NotificationTarget, AUTH_REALM};
use crate::htpasswd::write_htpasswd;
use crate::image::{build_image_async, BuiltImage, ImageSpec};
use crate::net::{free_addr_on, loopback_client};
use crate::pki::TlsFiles;
use crate::poll::{poll_until, Probe};
use crate::process::ChildGuard;
use crate::skopeo::{self, PushOptions};

/// Debian ships Distribution as `docker-registry`; upstream calls the binary `registry`.
pub const REGISTRY_BINARY: &str = "docker-registry";

/// Upper bound for start-up; a healthy registry answers within about a second.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Fresh ports tried when another process grabs the chosen port before the registry binds it.
const PORT_ATTEMPTS: usize = 5;

/// How to configure a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Local address to listen on; any 127.0.0.0/8 address works on Linux.
    pub bind_ip: String,
    /// Enables htpasswd basic auth with this single `(user, password)`.
    pub htpasswd: Option<(String, String)>,
    /// Enables push notifications: `(endpoint url, Authorization header value)`.
    pub notifications: Option<(String, Option<String>)>,
    /// Storage root to use instead of a private one, so content survives the registry or is
    /// shared between two of them.
    pub data_dir: Option<PathBuf>,
    /// Serve HTTPS with this certificate (`url()` is then https).
    pub tls: Option<TlsFiles>,
    /// A CA the registry trusts besides the system's, for the notification endpoint
    /// (Go reads it from `SSL_CERT_FILE`).
    pub trust: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            bind_ip: "127.0.0.1".to_owned(),
            htpasswd: None,
            notifications: None,
            data_dir: None,
            tls: None,
            trust: None,
        }
    }
}

/// A running (or deliberately stopped) registry; the process is killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Option<ChildGuard>,
    addr: SocketAddr,
    config_path: PathBuf,
    data_dir: PathBuf,
    credentials: Option<(String, String)>,
    tls: bool,
    /// CA certificates for the readiness probe (an https registry) and `SSL_CERT_FILE`.
    probe_ca: Option<PathBuf>,
    trust: Option<PathBuf>,
    // Declared last so the process is gone before its directory is removed.
    dir: TempDir,
}

impl Registry {
    /// Writes the config, starts the registry on a free port and waits until `GET /v2/`
    /// answers (200, or 401 when htpasswd auth is on).
    pub async fn start(options: RegistryOptions) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("damselfly-registry-")
            .tempdir()
            .context("creating registry directory")?;
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating registry storage {}", data_dir.display()))?;
        let htpasswd_path = match &options.htpasswd {
            Some(entry) => {
                let path = dir.path().join("htpasswd");
                write_htpasswd(&path, std::slice::from_ref(entry))?;
                Some(path)
            }
            None => None,
        };
        let notifications = options
            .notifications
            .as_ref()
            .map(|(url, authorization)| NotificationTarget {
                url: url.clone(),
                authorization: authorization.clone(),
            });
        let config_path = dir.path().join("config.yml");

        let mut dir = dir;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr = free_addr_on(&options.bind_ip)?;
            let text = render(&ConfigInputs {
                addr,
                data_dir: &data_dir,
                htpasswd: htpasswd_path.as_deref(),
                notifications: notifications.as_ref(),
                tls: options.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path())),
            });
            std::fs::write(&config_path, text)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let mut registry = Registry {
                child: None,
                addr,
                config_path: config_path.clone(),
                data_dir: data_dir.clone(),
                credentials: options.htpasswd.clone(),
                tls: options.tls.is_some(),
                probe_ca: options.tls.as_ref().and(options.trust.clone()),
                trust: options.trust.clone(),
                dir,
            };
            match registry.spawn_and_wait().await {
                Ok(()) => return Ok(registry),
                Err(err) if attempt < PORT_ATTEMPTS && registry.lost_port_race() => {
                    tracing::debug!(%addr, "registry lost the port race, retrying: {err:#}");
                    dir = registry.into_dir();
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `ip:port`, the form used in image references and `hosts.toml` keys.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Listen address as a socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, `http://ip:port` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Storage root (the shared one if [`RegistryOptions::data_dir`] was given).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The generated `config.yml`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Configured htpasswd user and password, if auth is on.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.credentials.clone()
    }

    /// The registry's combined stdout/stderr log (includes the access log).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Last few KiB of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        crate::process::read_log_tail(&self.log_path(), crate::process::LOG_TAIL_BYTES)
    }

    /// Builds `spec` offline and pushes it to `repo:tag` here, every platform of it, with this
    /// registry's credentials. The image layout is kept as long as the registry.
    pub async fn push_image(&self, spec: ImageSpec, repo_tag: &str) -> Result<BuiltImage> {
        let layouts = self.dir.path().join("layouts");
        std::fs::create_dir_all(&layouts).with_context(|| format!("creating {}", layouts.display()))?;
        let layout = tempfile::Builder::new()
            .prefix("layout-")
            .tempdir_in(&layouts)
            .context("creating an image layout directory")?
            .keep();
        let tag = repo_tag.rsplit_once(':').map_or("latest", |(_, t)| t);
        let image = build_image_async(spec, layout, tag.to_owned()).await?;
        self.push_built(&image, repo_tag).await?;
        Ok(image)
    }

    /// Pushes `image`, built already, to `repo:tag` here, every platform of it, with this
    /// registry's credentials: how a test puts one image under a second tag, or into a second
    /// registry, the way [`Registry::push_image`] put it under its first. The manifest digest.
    pub async fn push_built(&self, image: &BuiltImage, repo_tag: &str) -> Result<String> {
        let options = PushOptions {
            all: image.manifests.len() > 1,
            creds: self.credentials(),
            ..PushOptions::default()
        };
        skopeo::push(image, &format!("{}/{repo_tag}", self.addr()), &options).await
    }

    /// Whether the process is currently alive.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Kills the registry, simulating an origin outage. Storage and port assignment are kept.
    pub fn stop(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => child.kill(),
            None => Ok(()),
        }
    }

    /// SIGSTOP: the registry keeps its port and accepts connections (the kernel does), and
    /// answers nothing until [`Registry::resume`].
    pub fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    /// SIGCONT after [`Registry::pause`].
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &str) -> Result<()> {
        match &self.child {
            Some(child) => child.signal(signal),
            None => anyhow::bail!("the registry is not running"),
        }
    }

    /// Restarts a stopped registry on the same address with the same storage, so clients that
    /// cached the address see the origin come back. Fails if something else took the port.
    pub async fn start_again(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let mut cmd = Command::new(REGISTRY_BINARY);
        cmd.arg("serve")
            .arg(&self.config_path)
            .current_dir(self.dir.path());
        if let Some(ca) = &self.trust {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let url = format!("{}/v2/", self.url());
        let authenticated = self.credentials.is_some();
        let client = match &self.probe_ca {
            Some(ca) => crate::net::client_trusting(ca)?,
            None => loopback_client()?,
        };
        let child = ChildGuard::spawn_logged("registry", cmd, self.dir.path())?;
        let child = self.child.insert(child);
        poll_until(&format!("registry at {url}"), READY_TIMEOUT, || {
            let alive = child.ensure_running();
            let request = client.get(&url).timeout(Duration::from_secs(1)).send();
            async move {
                alive?;
                Ok(match request.await {
                    Ok(resp) if resp.status() == 200 || (authenticated && resp.status() == 401) => {
                        Probe::Ready(())
                    }
                    Ok(resp) => Probe::NotYet(format!("status {}", resp.status())),
                    Err(err) => Probe::NotYet(err.to_string()),
                })
            }
        })
        .await
    }

    fn lost_port_race(&self) -> bool {
        self.log_tail().contains("address already in use")
    }

    /// Gives the directory back for another attempt; the child guard, dropped here, kills the
    /// failed process first.
    fn into_dir(self) -> TempDir {
        let Registry { dir, .. } = self;
        dir
    }
}
