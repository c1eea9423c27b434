//! A throw-away `redis-server` on a free loopback port, with no persistence.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::net::free_port;
use crate::process::ChildGuard;

pub struct Redis {
    _dir: tempfile::TempDir,
    port: u16,
    _child: ChildGuard,
}

impl Redis {
    pub async fn start() -> Result<Redis> {
        let dir = tempfile::Builder::new().prefix("damselfly-redis-").tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path());
        let mut child = ChildGuard::spawn_logged("redis", cmd, dir.path())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            child.ensure_running()?;
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Redis {
                    _dir: dir,
                    port,
                    _child: child,
                });
            }
            if tokio::time::Instant::now() > deadline {
                bail!("redis-server did not start: {}", child.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}
