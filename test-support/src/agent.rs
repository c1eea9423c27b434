//! The peer agent as a real process, on its own loopback address (127.0.0.N stands for a host).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::edge::{scrape, spawn_until_ready, Metrics};
use crate::net::free_addr_on;
use crate::process::ChildGuard;

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
}

pub struct Agent {
    binary: PathBuf,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    mirror: String,
    upload: String,
    child: Option<ChildGuard>,
}

impl Agent {
    pub async fn start(binary: &Path, options: AgentOptions) -> Result<Agent> {
        let dir = tempfile::Builder::new().prefix("damselfly-agent-").tempdir()?;
        let mirror = free_addr_on(&options.ip)?.to_string();
        let upload = free_addr_on(&options.ip)?.to_string();
        let edges: Vec<String> = options.edges.iter().map(|e| format!("\"{e}\"")).collect();
        let config = format!(
            "listen = \"{mirror}\"\nupload_listen = \"{upload}\"\nedges = [{}]\nupstream = \"{}\"\n\
             location = \"{}\"\nhost_id = \"agent-{}\"\ndata_dir = \"{}\"\n{}\n",
            edges.join(", "),
            options.upstream,
            options.location,
            options.ip,
            dir.path().join("data").display(),
            options.extra_toml,
        );
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, config)?;
        let mut agent = Agent {
            binary: binary.to_path_buf(),
            dir,
            config_path,
            mirror,
            upload,
            child: None,
        };
        agent.launch().await?;
        Ok(agent)
    }

    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("DAMSELFLY_LOG", "info,damselfly_agent=debug");
        let ready = format!("{}/readyz", self.url());
        self.child = Some(spawn_until_ready("peer-agent", cmd, self.dir.path(), &ready).await?);
        Ok(())
    }

    /// The mirror's `host:port`, as a runtime names it.
    pub fn addr(&self) -> &str {
        &self.mirror
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.mirror)
    }

    pub fn upload_url(&self) -> String {
        format!("http://{}", self.upload)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_tail(&self) -> String {
        self.child.as_ref().map(|c| c.log_tail()).unwrap_or_default()
    }

    /// SIGKILL, as a host dying would.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
        }
        Ok(())
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        scrape(&format!("{}/metrics", self.url())).await
    }
}
