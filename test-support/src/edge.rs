//! The edge cache as a real process: started from its binary with a generated config file on a
//! free port, restarted on the same data directory, scraped for metrics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use damselfly_core::api::TaskAnswer;

use crate::daemon::{daemon_controls, Daemon, DaemonSpec, OpsEndpoint};
use crate::net::free_addr_on;
use crate::pki::Pki;

#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Default upstream URL (`http://127.0.0.1:5000`).
    pub upstream: String,
    /// Disk quota (`cache.quota`), e.g. `200MiB`.
    pub quota: String,
    /// Loopback address to bind (127.0.0.1, 127.0.0.2, …).
    pub bind_ip: String,
    /// Token the warm API requires (`warm_token`); `None` disables warming.
    pub warm_token: Option<String>,
    /// Extra top-level keys (`redis = "…"`, `cluster_secret_file = "…"`), placed before any section.
    pub top_toml: String,
    /// Extra keys of the `[cache]` section (`max_manifests = 3`, …).
    pub cache_toml: String,
    /// Extra keys of the `[limits]` section (`piece_sends = 2`, …).
    pub limits_toml: String,
    /// Extra keys of the `[server]` section (`send_stall_secs = 1`, …).
    pub server_toml: String,
    /// Extra TOML appended to the generated config: whole sections only (`[[upstreams]]`, …),
    /// since it follows the generated ones.
    pub extra_toml: String,
    /// Keep data here instead of a private temporary directory (to share with a later edge).
    pub data_dir: Option<PathBuf>,
    /// TLS with a certificate of this CA, checking agents' client certificates against it.
    /// `None`: plain HTTP.
    pub tls: Option<Arc<Pki>>,
    /// On plain HTTP, a lab edge started `insecure` (task keys to anyone); true by default.
    pub insecure: bool,
    /// Run in this network namespace, listening on `bind_ip` there (its far end of a
    /// [`crate::link::Link`]).
    pub netns: Option<String>,
    /// The edge's region (`region`), `test` by default.
    pub region: String,
    /// Tell other edges where this one is (`advertise_url` = its own URL): with `redis` in
    /// `top_toml`, the edges sharing that Redis form a cluster.
    pub advertise: bool,
}

impl EdgeOptions {
    pub fn new(upstream: impl Into<String>) -> Self {
        EdgeOptions {
            upstream: upstream.into(),
            quota: "10GiB".into(),
            bind_ip: "127.0.0.1".into(),
            warm_token: None,
            top_toml: String::new(),
            cache_toml: String::new(),
            limits_toml: String::new(),
            server_toml: String::new(),
            extra_toml: String::new(),
            data_dir: None,
            tls: None,
            insecure: true,
            netns: None,
            region: "test".into(),
            advertise: false,
        }
    }

    /// An edge for `registry` (`host:port`), reached at `url` (the registry's own, or a counting
    /// proxy's in front of it): its default upstream, and listed under `[[upstreams]]` so that
    /// containerd, which names the registry in `?ns=`, reaches the same place.
    pub fn for_registry(registry: &str, url: &str) -> Self {
        let mut options = EdgeOptions::new(url);
        options.extra_toml = format!("[[upstreams]]\nregistry = \"{registry}\"\nurl = \"{url}\"\n");
        options
    }
}

/// The task answer at `url` (an edge's `/api/v1/tasks/…`); an error status is an error.
pub async fn task_at(client: &reqwest::Client, url: &str) -> Result<TaskAnswer> {
    let response = client.get(url).send().await?.error_for_status()?;
    Ok(response.json().await?)
}

pub struct Edge {
    addr: SocketAddr,
    data_dir: PathBuf,
    daemon: Daemon,
    /// Kept while the edge runs: its certificates live there.
    pki: Option<Arc<Pki>>,
}

impl Edge {
    pub async fn start(binary: &Path, options: EdgeOptions) -> Result<Edge> {
        let dir = tempfile::Builder::new().prefix("damselfly-edge-").tempdir()?;
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let addr = match &options.netns {
            // A namespace of its own has every port free; the number is only borrowed here.
            Some(_) => SocketAddr::new(options.bind_ip.parse()?, free_addr_on("127.0.0.1")?.port()),
            None => free_addr_on(&options.bind_ip)?,
        };
        let warm_token = match &options.warm_token {
            Some(t) => format!("warm_token = \"{t}\"\n"),
            None => String::new(),
        };
        let (scheme, trust, tls_toml) = match &options.tls {
            Some(pki) => {
                let files = pki.issue("edge", &[&options.bind_ip])?;
                ("https", "", pki.toml(&files, true))
            }
            None if options.insecure => ("http", "insecure = true\n", String::new()),
            None => ("http", "", String::new()),
        };
        let advertise = match options.advertise {
            true => format!("advertise_url = \"{scheme}://{addr}\"\n"),
            false => String::new(),
        };
        let config = format!(
            "listen = \"{addr}\"\n{advertise}{trust}data_dir = \"{}\"\nupstream = \"{}\"\nregion = \"{}\"\n{warm_token}{}\n\
             [cache]\nquota = \"{}\"\n{}\n\
             [server]\nshutdown_grace_secs = 5\n{}\n\
             [limits]\nupstream_idle_timeout_secs = 5\n{}\n{tls_toml}{}\n",
            data_dir.display(),
            options.upstream,
            options.region,
            options.top_toml,
            options.quota,
            options.cache_toml,
            options.server_toml,
            options.limits_toml,
            options.extra_toml
        );
        let spec = DaemonSpec {
            name: "edge-cache".into(),
            binary: binary.to_path_buf(),
            log_filter: "info,damselfly_edge=debug,tower_http=debug".into(),
            ops: OpsEndpoint {
                url: format!("{scheme}://{addr}"),
                ca: options.tls.as_ref().map(|pki| pki.ca()),
            },
            netns: options.netns.clone(),
        };
        let daemon = Daemon::start(spec, dir, &config).await?;
        Ok(Edge {
            addr,
            data_dir,
            daemon,
            pki: options.tls,
        })
    }

    /// `host:port`, as registry clients name a mirror.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        self.daemon.url().to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The cluster CA of a TLS edge.
    pub fn pki(&self) -> Option<&Arc<Pki>> {
        self.pki.as_ref()
    }

    /// Kills the process (SIGKILL: no chance to tidy up) and starts it again on the same port,
    /// configuration and data.
    pub async fn restart(&mut self) -> Result<()> {
        self.daemon.start_again().await
    }

    /// `GET /api/v1/tasks/<digest>?repo=<repo>` as an agent of a lab edge asks it.
    pub async fn task(&self, client: &reqwest::Client, repo: &str, digest: &str) -> Result<TaskAnswer> {
        let url = format!("{}/api/v1/tasks/{digest}?repo={repo}", self.url());
        task_at(client, &url)
            .await
            .map_err(|e| anyhow!("{e:#}\n{}", self.log_tail()))
    }

    /// [`Edge::task`] once the edge holds all of the blob (polled for up to 60 s).
    pub async fn complete_task(&self, repo: &str, digest: &str) -> Result<TaskAnswer> {
        let client = crate::net::loopback_client()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.task(&client, repo, digest).await?;
            if answer.complete {
                return Ok(answer);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{digest} never completed at the edge");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    daemon_controls!();

    /// The status report (`GET /api/v1/status`).
    pub async fn status(&self) -> Result<serde_json::Value> {
        self.daemon.get_json("/api/v1/status").await
    }
}
