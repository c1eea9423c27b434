//! The registry, the edge and the agents as processes inside their hosts' namespaces.
//!
//! The harness launchers bind free ports in this process's namespace, which does not hold the
//! hosts' addresses; inside a namespace of its own each daemon owns its address, so fixed ports
//! are safe here. `ip netns exec` execs the daemon in place, so the guarded pid is the daemon's.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use damselfly_test_support::daemon::{probe_client, spawn_until_ready, spawn_until_ready_with};
use damselfly_test_support::metrics::{scrape_with, Metrics};
use damselfly_test_support::pki::Pki;
use damselfly_test_support::process::ChildGuard;

use crate::netns::Host;

pub const REGISTRY_PORT: u16 = 5000;
pub const EDGE_PORT: u16 = 5080;
const MIRROR_PORT: u16 = 5090;
const UPLOAD_PORT: u16 = 5091;
const OPS_PORT: u16 = 5092;

/// A daemon in a namespace, with the directory holding its config, data and log.
pub struct Daemon {
    pub url: String,
    /// The CA of an https daemon.
    ca: Option<std::path::PathBuf>,
    // Field order: the process dies before its directory is removed.
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub async fn metrics(&self) -> Result<Metrics> {
        let client = probe_client(self.ca.as_deref())?;
        scrape_with(&client, &format!("{}/metrics", self.url)).await
    }
}

fn in_namespace(ns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Where a daemon logs, and how much: its own directory at `warn` normally; with
/// `--keep-logs DIR`, `DIR/<setup>-<name>.log` at `info` (one line per blob an agent finished,
/// with its duration), kept after the run.
#[derive(Clone, Copy)]
pub struct Logs<'a> {
    pub keep_in: Option<&'a Path>,
    pub setup: &'a str,
}

impl Logs<'_> {
    /// Sets `cmd`'s log level; the log's name and directory.
    fn apply(&self, cmd: &mut Command, name: &str, workdir: &Path) -> (String, std::path::PathBuf) {
        let level = if self.keep_in.is_some() { "info" } else { "warn" };
        cmd.env("DAMSELFLY_LOG", level);
        match self.keep_in {
            Some(dir) => (format!("{}-{name}", self.setup), dir.to_path_buf()),
            None => (name.to_string(), workdir.to_path_buf()),
        }
    }
}

fn workdir(name: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("damselfly-bench-{name}-"))
        .tempdir()?)
}

/// Distribution with filesystem storage and its access log off (it would cost CPU the
/// measured daemons need on a small machine).
pub async fn registry(host: &Host) -> Result<Daemon> {
    let dir = workdir("registry")?;
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: \"{}\"\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: \"{}:{REGISTRY_PORT}\"\n  secret: \"damselfly-bench\"\n\
         health:\n  storagedriver:\n    enabled: false\n",
        dir.path().join("data").display(),
        host.ip
    );
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config)?;
    let mut cmd = in_namespace(&host.ns, Path::new("docker-registry"));
    cmd.arg("serve").arg(&config_path);
    let url = format!("http://{}:{REGISTRY_PORT}", host.ip);
    let child = spawn_until_ready("registry", cmd, dir.path(), &format!("{url}/v2/")).await?;
    Ok(Daemon {
        url,
        ca: None,
        _child: child,
        _dir: dir,
    })
}

/// A cold edge (empty data directory) whose default upstream is `origin` (`ip:port`);
/// `extra_toml` (whole sections) is appended to its config. With `tls`, it serves TLS with a
/// certificate of that CA and hands task keys only to agents presenting one; without, it is a
/// lab edge (`insecure`). `flags` override its config (`--region`, `--redis`,
/// `--advertise-url`, `--parent`).
pub async fn edge(
    binary: &Path,
    host: &Host,
    origin: &str,
    extra_toml: &str,
    tls: Option<&Pki>,
    logs: Logs<'_>,
    flags: &[String],
) -> Result<Daemon> {
    let dir = workdir("edge")?;
    let (scheme, insecure, tls_toml) = match tls {
        Some(pki) => ("https", "", pki.toml(&pki.issue("edge", &[&host.ip])?, true)),
        None => ("http", "insecure = true\n", String::new()),
    };
    let config = format!(
        "listen = \"{}:{EDGE_PORT}\"\n{insecure}data_dir = \"{}\"\nupstream = \"http://{origin}\"\nregion = \"bench\"\n\
         [[upstreams]]\nregistry = \"{origin}\"\nurl = \"http://{origin}\"\n\
         [cache]\nquota = \"20GiB\"\n{extra_toml}\n{tls_toml}",
        host.ip,
        dir.path().join("data").display(),
    );
    let url = format!("{scheme}://{}:{EDGE_PORT}", host.ip);
    // `edge-cache` for the swarm's one edge; `edge-cache-<host>` when there are several.
    let name = match host.ns.trim_start_matches(crate::netns::PREFIX) {
        "edge" => "edge-cache".to_string(),
        other => format!("edge-cache-{other}"),
    };
    let daemon = Launch {
        host,
        binary,
        name: &name,
        flags,
    };
    start_damselfly(daemon, dir, &config, logs, url, tls).await
}

/// Which daemon runs where, and with what flags.
struct Launch<'a> {
    host: &'a Host,
    binary: &'a Path,
    name: &'a str,
    flags: &'a [String],
}

/// What an agent needs to know besides its host.
pub struct AgentSetup<'a> {
    pub binary: &'a Path,
    /// The region's edges; with `spread_edges`, each agent starts at the one its name picks.
    pub edges: &'a [String],
    pub spread_edges: bool,
    pub origin: &'a str,
    /// `region/zone/rack`.
    pub location: String,
    /// Appended to the generated config (whole sections), for tuning experiments.
    pub extra_toml: &'a str,
    /// The cluster CA of a TLS edge: the agent presents a certificate of it.
    pub tls: Option<&'a Pki>,
    pub logs: Logs<'a>,
}

/// An agent with its mirror and upload server on the host's address.
pub async fn agent(host: &Host, name: &str, setup: &AgentSetup<'_>) -> Result<Daemon> {
    let dir = workdir(name)?;
    let config = format!(
        "listen = \"{ip}:{MIRROR_PORT}\"\nupload_listen = \"{ip}:{UPLOAD_PORT}\"\n\
         ops_listen = \"{ip}:{OPS_PORT}\"\nedges = [{edges}]\nspread_edges = {spread}\nupstream = \"http://{origin}\"\nlocation = \"{location}\"\n\
         host_id = \"{name}\"\ndata_dir = \"{data}\"\n\
         [[registries]]\nregistry = \"{origin}\"\nurl = \"http://{origin}\"\n{extra}\n",
        ip = host.ip,
        edges = setup
            .edges
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", "),
        spread = setup.spread_edges,
        origin = setup.origin,
        location = setup.location,
        data = dir.path().join("data").display(),
        extra = setup.extra_toml,
    );
    let config = match setup.tls {
        Some(pki) => config + &pki.toml(&pki.issue(name, &[&host.ip])?, false),
        None => config,
    };
    let url = format!("http://{}:{MIRROR_PORT}", host.ip);
    let daemon = Launch {
        host,
        binary: setup.binary,
        name,
        flags: &[],
    };
    start_damselfly(daemon, dir, &config, setup.logs, url, None).await
}

/// Writes `config` to `<dir>/<name>.toml` and runs the Damselfly daemon on it in its host's
/// namespace, until it answers on `url`'s `/readyz` (trusting `tls`'s CA).
async fn start_damselfly(
    daemon: Launch<'_>,
    dir: tempfile::TempDir,
    config: &str,
    logs: Logs<'_>,
    url: String,
    tls: Option<&Pki>,
) -> Result<Daemon> {
    let Launch {
        host,
        binary,
        name,
        flags,
    } = daemon;
    let config_path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&config_path, config)?;
    let mut cmd = in_namespace(&host.ns, binary);
    cmd.arg("--config").arg(&config_path).args(flags);
    let (log_name, log_dir) = logs.apply(&mut cmd, name, dir.path());
    let ca = tls.map(|pki| pki.ca());
    let client = probe_client(ca.as_deref())?;
    let child = spawn_until_ready_with(&log_name, cmd, &log_dir, &format!("{url}/readyz"), &client).await?;
    Ok(Daemon {
        url,
        ca,
        _child: child,
        _dir: dir,
    })
}
