//! The peer agent as a real process, on its own loopback address (127.0.0.N stands for a host).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use crate::daemon::{daemon_controls, Daemon, DaemonSpec};
use crate::net::free_addrs_on;
use crate::pki::Pki;
use crate::registry::Registry;

#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Loopback address standing for this host (`127.0.0.2`, …).
    pub ip: String,
    /// Edge URLs, nearest first.
    pub edges: Vec<String>,
    /// Default origin registry URL.
    pub upstream: String,
    /// `region/zone/rack`.
    pub location: String,
    /// Extra TOML (whole sections) appended to the generated config.
    pub extra_toml: String,
    /// A certificate of this CA (identity `agent-<ip>`), presented to the edges, which are
    /// trusted through it. `None`: plain HTTP to a lab edge.
    pub tls: Option<Arc<Pki>>,
    /// The piece store's directory (default: in the agent's scratch directory).
    pub data_dir: Option<std::path::PathBuf>,
}

impl AgentOptions {
    /// Host `index` of a region on one machine: at 127.0.0.`index + 2` (127.0.0.1 holds the
    /// registry and the edge), in `location`, pulling through `edge_url`, with `registry` as its
    /// origin.
    pub fn host(index: usize, location: &str, edge_url: String, registry: &Registry) -> Self {
        AgentOptions {
            ip: format!("127.0.0.{}", index + 2),
            edges: vec![edge_url],
            upstream: registry.url(),
            location: location.to_string(),
            extra_toml: format!(
                "[[registries]]\nregistry = \"{}\"\nurl = \"{}\"\n",
                registry.addr(),
                registry.url()
            ),
            tls: None,
            data_dir: None,
        }
    }
}

pub struct Agent {
    mirror: String,
    upload: String,
    ops: String,
    daemon: Daemon,
    /// Kept while the agent runs: its certificate lives there.
    _pki: Option<Arc<Pki>>,
}

impl Agent {
    pub async fn start(binary: &Path, options: AgentOptions) -> Result<Agent> {
        // Between choosing its free ports and binding them, another test's process may take one:
        // started again on fresh ports when that is why it stopped.
        let mut attempt = 1;
        loop {
            match Agent::start_once(binary, &options).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(binary: &Path, options: &AgentOptions) -> Result<Agent> {
        let dir = tempfile::Builder::new().prefix("damselfly-agent-").tempdir()?;
        let [mirror, upload, ops] = free_addrs_on(&options.ip)?;
        let edges: Vec<String> = options.edges.iter().map(|e| format!("\"{e}\"")).collect();
        let tls_toml = match &options.tls {
            Some(pki) => pki.toml(
                &pki.issue(&format!("agent-{}", options.ip), &[&options.ip])?,
                false,
            ),
            None => String::new(),
        };
        let config = format!(
            "listen = \"{mirror}\"\nupload_listen = \"{upload}\"\nops_listen = \"{ops}\"\nedges = [{}]\nupstream = \"{}\"\n\
             location = \"{}\"\nhost_id = \"agent-{}\"\ndata_dir = \"{}\"\n{}\n",
            edges.join(", "),
            options.upstream,
            options.location,
            options.ip,
            options.data_dir.clone().unwrap_or_else(|| dir.path().join("data")).display(),
            options.extra_toml,
        ) + &tls_toml;
        let log_filter = "info,damselfly_agent=debug";
        let spec = DaemonSpec::plain("peer-agent", binary, log_filter, format!("http://{mirror}"));
        let daemon = Daemon::start(spec, dir, &config).await?;
        Ok(Agent {
            mirror,
            upload,
            ops,
            daemon,
            _pki: options.tls.clone(),
        })
    }

    /// The mirror's `host:port`, as a runtime names it.
    pub fn addr(&self) -> &str {
        &self.mirror
    }

    pub fn url(&self) -> String {
        self.daemon.url().to_string()
    }

    pub fn upload_url(&self) -> String {
        format!("http://{}", self.upload)
    }

    /// Health, readiness and metrics on their own listener.
    pub fn ops_url(&self) -> String {
        format!("http://{}", self.ops)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.daemon.dir().join("data")
    }

    daemon_controls!();
}
