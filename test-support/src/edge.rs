//! The edge cache as a real process: started from its binary with a generated config file on a
//! free port, restarted on the same data directory, scraped for metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::net::{free_addr_on, loopback_client};
use crate::process::ChildGuard;

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
    /// Extra keys of the `[limits]` section (`piece_sends = 2`, …).
    pub limits_toml: String,
    /// Extra TOML appended to the generated config: whole sections only (`[[upstreams]]`, …),
    /// since it follows the generated ones.
    pub extra_toml: String,
    /// Keep data here instead of a private temporary directory (to share with a later edge).
    pub data_dir: Option<PathBuf>,
}

impl EdgeOptions {
    pub fn new(upstream: impl Into<String>) -> Self {
        EdgeOptions {
            upstream: upstream.into(),
            quota: "10GiB".into(),
            bind_ip: "127.0.0.1".into(),
            warm_token: None,
            top_toml: String::new(),
            limits_toml: String::new(),
            extra_toml: String::new(),
            data_dir: None,
        }
    }
}

pub struct Edge {
    binary: PathBuf,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    data_dir: PathBuf,
    addr: SocketAddr,
    child: Option<ChildGuard>,
}

impl Edge {
    pub async fn start(binary: &Path, options: EdgeOptions) -> Result<Edge> {
        let dir = tempfile::Builder::new().prefix("damselfly-edge-").tempdir()?;
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let addr = free_addr_on(&options.bind_ip)?;
        let warm_token = match &options.warm_token {
            Some(t) => format!("warm_token = \"{t}\"\n"),
            None => String::new(),
        };
        let config = format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\nupstream = \"{}\"\nregion = \"test\"\n{warm_token}{}\n\
             [cache]\nquota = \"{}\"\n\
             [server]\nshutdown_grace_secs = 5\n\
             [limits]\nupstream_idle_timeout_secs = 5\n{}\n{}\n",
            data_dir.display(),
            options.upstream,
            options.top_toml,
            options.quota,
            options.limits_toml,
            options.extra_toml
        );
        let config_path = dir.path().join("edge.toml");
        std::fs::write(&config_path, config)?;
        let mut edge = Edge {
            binary: binary.to_path_buf(),
            dir,
            config_path,
            data_dir,
            addr,
            child: None,
        };
        edge.launch().await?;
        Ok(edge)
    }

    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("DAMSELFLY_LOG", "info,damselfly_edge=debug,tower_http=debug");
        let ready = format!("{}/readyz", self.url());
        self.child = Some(spawn_until_ready("edge-cache", cmd, self.dir.path(), &ready).await?);
        Ok(())
    }

    /// `host:port`, as registry clients name a mirror.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_tail(&self) -> String {
        self.child.as_ref().map(|c| c.log_tail()).unwrap_or_default()
    }

    /// Kills the process (SIGKILL: no chance to tidy up) and starts it again on the same port,
    /// configuration and data.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.launch().await
    }

    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit on its own.
    pub async fn terminate(&mut self, within: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("edge is not running")
        };
        let pid = child.pid().context("edge has no pid")?;
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if !child.is_running() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("edge did not exit within {within:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        scrape(&format!("{}/metrics", self.url())).await
    }
}

/// Spawns a Damselfly daemon and waits until `ready_url` answers 2xx (failing at once, with
/// its log, if it exits first).
pub async fn spawn_until_ready(
    name: &str,
    cmd: Command,
    log_dir: &Path,
    ready_url: &str,
) -> Result<ChildGuard> {
    let mut child = ChildGuard::spawn_logged(name, cmd, log_dir)?;
    let client = loopback_client()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        child.ensure_running()?;
        if let Ok(r) = client.get(ready_url).send().await {
            if r.status().is_success() {
                return Ok(child);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} did not become ready; log:\n{}", child.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scraped Prometheus/OpenMetrics text page.
#[derive(Debug, Clone, Default)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    /// The sum of every series of `name` whose labels contain all of `labels` (`key="value"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (series_name, series_labels) = series.split_once('{').unwrap_or((series.as_str(), ""));
                series_name == name && labels.iter().all(|l| series_labels.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    pub fn get(&self, name: &str) -> f64 {
        self.sum(name, &[])
    }
}

pub async fn scrape(url: &str) -> Result<Metrics> {
    let text = loopback_client()?
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut series = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<f64>() {
                series.insert(name.to_string(), v);
            }
        }
    }
    Ok(Metrics(series))
}
