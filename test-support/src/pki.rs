//! A cluster CA for one test (made by the project's own `damselfly_server::certs`), and the
//! certificates it issues to edges and agents, so tests run the secure path: edges on TLS with
//! client certificates, agents presenting theirs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use damselfly_server::certs::{self, Subject};
use damselfly_server::tls::TlsConfig;
use tempfile::TempDir;

#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
}

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Result<Arc<Pki>> {
        let dir = tempfile::Builder::new().prefix("damselfly-pki-").tempdir()?;
        certs::init_ca(&dir.path().join("ca"), "test cluster CA", 1).map_err(|e| anyhow!(e))?;
        Ok(Arc::new(Pki { dir }))
    }

    /// The CA certificate: what clients trust and what edges check agents against.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca").join(certs::CA_CERT)
    }

    /// A certificate for `name` (its identity), valid for `localhost` and `ips`.
    pub fn issue(&self, name: &str, ips: &[&str]) -> Result<TlsFiles> {
        let ips = ips
            .iter()
            .map(|ip| ip.parse::<IpAddr>().map_err(|e| anyhow!("{ip}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let subject = Subject {
            name: name.to_string(),
            dns: vec!["localhost".into()],
            ips,
            spiffe: None,
            days: 1,
        };
        let (cert, key) = certs::issue(
            &self.dir.path().join("ca"),
            &subject,
            &self.dir.path().join("issued"),
        )
        .map_err(|e| anyhow!(e))?;
        Ok(TlsFiles { cert, key })
    }

    /// The `[tls]` section of a daemon holding `files`, trusting this CA.
    pub fn toml(&self, files: &TlsFiles, client_ca: bool) -> String {
        let mut toml = format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca_file = \"{}\"\n",
            files.cert.display(),
            files.key.display(),
            self.ca().display()
        );
        if client_ca {
            toml.push_str(&format!("client_ca = \"{}\"\n", self.ca().display()));
        }
        toml
    }

    /// An HTTP client trusting this CA, presenting `identity` if given.
    pub fn client(&self, identity: Option<&TlsFiles>) -> Result<reqwest::Client> {
        let config = TlsConfig {
            cert: identity.map(|i| i.cert.clone()),
            key: identity.map(|i| i.key.clone()),
            client_ca: None,
            ca_file: Some(self.ca()),
        };
        damselfly_server::tls::client_builder(&config, identity.is_some())
            .map_err(|e| anyhow!(e))?
            .no_proxy()
            .build()
            .map_err(Into::into)
    }
}
