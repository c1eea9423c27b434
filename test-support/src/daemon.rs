//! A Damselfly daemon (edge cache, peer agent, preheater) as a real process: started from its
//! binary on a generated config file in a directory of its own, ready once `/readyz` answers,
//! killed and started again on the same config and data, or stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::metrics::{scrape_with, Metrics};
use crate::net::loopback_client;
use crate::poll::{poll_until, Probe};
use crate::process::{read_log_tail, ChildGuard, LOG_TAIL_BYTES};

/// How long a daemon may take to answer `/readyz` after spawning.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The controls a handle on one of our daemons (the edge, an agent) offers, for a handle that
/// keeps its process in a `daemon` field: written once, as they are the same for every kind.
macro_rules! daemon_controls {
    () => {
        /// The end of its log, over every start so far.
        pub fn log_tail(&self) -> String {
            self.daemon.log_tail()
        }

        /// SIGKILL: no chance to tidy up, as a host dying would.
        pub fn kill(&mut self) -> anyhow::Result<()> {
            self.daemon.kill()
        }

        /// SIGSTOP: its sockets stay open and nothing is answered, as a host swapping or frozen.
        pub fn pause(&self) -> anyhow::Result<()> {
            self.daemon.signal("STOP")
        }

        /// SIGCONT after `pause`.
        pub fn resume(&self) -> anyhow::Result<()> {
            self.daemon.signal("CONT")
        }

        /// SIGTERM, then waits for the process to exit on its own.
        pub async fn terminate(&mut self, within: std::time::Duration) -> anyhow::Result<()> {
            self.daemon.terminate(within).await
        }

        pub async fn metrics(&self) -> anyhow::Result<$crate::metrics::Metrics> {
            self.daemon.metrics().await
        }

        /// Asserts that the series of `name` with all of `labels` add up to more than zero;
        /// a failure says `message` and quotes the log. For tests.
        pub async fn assert_counted(&self, name: &str, labels: &[&str], message: &str) {
            let sum = self.metrics().await.unwrap().sum(name, labels);
            assert!(sum > 0.0, "{message}:\n{}", self.log_tail());
        }

        /// CPU seconds the process has used so far.
        pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
            self.daemon.cpu_seconds()
        }
    };
}
pub(crate) use daemon_controls;

/// What to run.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// Names the process in messages, and its config file and log in its directory.
    pub name: String,
    pub binary: PathBuf,
    /// `DAMSELFLY_LOG`, e.g. `info,damselfly_edge=debug`.
    pub log_filter: String,
    /// Where it serves `/readyz` and `/metrics`.
    pub ops: OpsEndpoint,
    /// Run in this network namespace (`ip netns exec`), e.g. one behind a [`crate::link::Link`].
    pub netns: Option<String>,
}

impl DaemonSpec {
    /// A daemon serving plain HTTP at `url` in this host's network namespace (no CA to trust, no
    /// namespace to enter): how agents and lab preheaters run, spelled once.
    pub fn plain(name: &str, binary: impl Into<PathBuf>, log_filter: &str, url: impl Into<String>) -> Self {
        DaemonSpec {
            name: name.into(),
            binary: binary.into(),
            log_filter: log_filter.into(),
            ops: OpsEndpoint {
                url: url.into(),
                ca: None,
            },
            netns: None,
        }
    }
}

/// Where a daemon serves its ops routes, and how to trust it there.
#[derive(Debug, Clone)]
pub struct OpsEndpoint {
    /// `http://ip:port`, or `https://` with `ca`.
    pub url: String,
    /// The CA to trust when `url` is https.
    pub ca: Option<PathBuf>,
}

impl OpsEndpoint {
    /// A client that reaches it ([`probe_client`]).
    pub fn client(&self) -> Result<reqwest::Client> {
        probe_client(self.ca.as_deref())
    }

    /// The URL of `path` (`/readyz`) there.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

pub struct Daemon {
    spec: DaemonSpec,
    config_path: PathBuf,
    child: Option<ChildGuard>,
    // Declared last so the process is gone before its directory is removed.
    dir: TempDir,
}

impl Daemon {
    /// Writes `config` into `dir` (which the config may name, say as its data directory) and
    /// starts the daemon on it.
    pub async fn start(spec: DaemonSpec, dir: TempDir, config: &str) -> Result<Daemon> {
        let config_path = dir.path().join(format!("{}.toml", spec.name));
        std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
        let mut daemon = Daemon {
            spec,
            config_path,
            child: None,
            dir,
        };
        daemon.start_again().await?;
        Ok(daemon)
    }

    /// Starts the process again on the same config and data (killing it first if it runs).
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill()?;
        let mut cmd = match &self.spec.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                // `ip netns exec` execs the binary: the pid stays the daemon's, for signals.
                cmd.args(["netns", "exec", ns]).arg(&self.spec.binary);
                cmd
            }
            None => Command::new(&self.spec.binary),
        };
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("DAMSELFLY_LOG", &self.spec.log_filter);
        let ready = self.spec.ops.at("/readyz");
        let client = self.spec.ops.client()?;
        self.child =
            Some(spawn_until_ready_with(&self.spec.name, cmd, self.dir.path(), &ready, &client).await?);
        Ok(())
    }

    pub fn url(&self) -> &str {
        &self.spec.ops.url
    }

    /// CPU seconds (user and system) the running process has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pid = self
            .child
            .as_ref()
            .and_then(ChildGuard::pid)
            .context("the daemon is not running")?;
        crate::process::cpu_seconds(pid)
    }

    /// The daemon's own directory (config, log, and whatever the config puts there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of its log, over every start so far.
    pub fn log_tail(&self) -> String {
        read_log_tail(
            &self.dir.path().join(format!("{}.log", self.spec.name)),
            LOG_TAIL_BYTES,
        )
    }

    /// Sends `signal` (`STOP`, `CONT`, …): a stopped daemon keeps its sockets open and answers
    /// nothing, as a host that hangs or swaps would.
    pub fn signal(&self, signal: &str) -> Result<()> {
        match &self.child {
            Some(child) => child.signal(signal),
            None => anyhow::bail!("the daemon is not running"),
        }
    }

    /// SIGKILL: no chance to tidy up, as a host dying would.
    pub fn kill(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => child.kill(),
            None => Ok(()),
        }
    }

    /// SIGTERM, then waits for the process to exit on its own.
    pub async fn terminate(&mut self, within: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("{} is not running", self.spec.name)
        };
        let pid = child.pid().context("no pid")?;
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let what = format!("{} to exit after SIGTERM", self.spec.name);
        poll_until(&what, within, || {
            let running = child.is_running();
            async move {
                Ok(if running {
                    Probe::NotYet("still running".into())
                } else {
                    Probe::Ready(())
                })
            }
        })
        .await
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        scrape_with(&self.spec.ops.client()?, &self.spec.ops.at("/metrics")).await
    }

    /// GET `path` (`/api/v1/status`) as JSON; an error status is an error.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let response = (self.spec.ops.client()?)
            .get(self.spec.ops.at(path))
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
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
    spawn_until_ready_with(name, cmd, log_dir, ready_url, &loopback_client()?).await
}

/// A client for a daemon's ops routes: plain loopback, or trusting `ca` for an https daemon.
pub fn probe_client(ca: Option<&Path>) -> Result<reqwest::Client> {
    match ca {
        None => loopback_client(),
        Some(ca) => crate::net::client_trusting(ca),
    }
}

/// [`spawn_until_ready`] probing with `client` (one trusting an https daemon's CA).
pub async fn spawn_until_ready_with(
    name: &str,
    cmd: Command,
    log_dir: &Path,
    ready_url: &str,
    client: &reqwest::Client,
) -> Result<ChildGuard> {
    let mut child = ChildGuard::spawn_logged(name, cmd, log_dir)?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
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
