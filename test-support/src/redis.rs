//! A throw-away `redis-server` on a free loopback port, with no persistence.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::net::free_port;
use crate::pki::Pki;
use crate::process::ChildGuard;

pub struct Redis {
    _dir: tempfile::TempDir,
    port: u16,
    tls: bool,
    child: ChildGuard,
}

impl Redis {
    pub async fn start() -> Result<Redis> {
        Redis::start_with(None).await
    }

    /// A Redis that speaks only TLS (`rediss://`), with a certificate of `pki` for 127.0.0.1.
    pub async fn start_tls(pki: &Pki) -> Result<Redis> {
        Redis::start_with(Some(pki)).await
    }

    async fn start_with(pki: Option<&Pki>) -> Result<Redis> {
        let dir = tempfile::Builder::new().prefix("damselfly-redis-").tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        match pki {
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
            Some(pki) => {
                let files = pki.issue("redis", &["127.0.0.1"])?;
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(&files.cert)
                .arg("--tls-key-file")
                .arg(&files.key)
                .arg("--tls-ca-cert-file")
                .arg(pki.ca());
            }
        }
        let mut child = ChildGuard::spawn_logged("redis", cmd, dir.path())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            child.ensure_running()?;
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Redis {
                    _dir: dir,
                    port,
                    tls: pki.is_some(),
                    child,
                });
            }
            if tokio::time::Instant::now() > deadline {
                bail!("redis-server did not start: {}", child.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) -> Result<()> {
        self.child.signal("STOP")
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) -> Result<()> {
        self.child.signal("CONT")
    }

    /// SIGKILL: connections reset, the port refuses from now on.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }
}
