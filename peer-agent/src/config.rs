//! Agent configuration: defaults, then the TOML file, then environment, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use damselfly_core::Location;
use damselfly_server::cli::{parses, DaemonCli, Flag, FlagTable};
use damselfly_server::config::{check_url, ConfigError, LogConfig, HTTP_SCHEMES};
use damselfly_server::daemon::DaemonConfig;
use damselfly_server::tls::TlsConfig;
use damselfly_server::{Daemon, ServerConfig};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

pub const DAEMON: Daemon = Daemon::new("peer-agent", "DAMSELFLY_AGENT", env!("CARGO_PKG_DESCRIPTION"));

/// The agent's command line: the common flags, [`Config`]'s flag table and [`Command`].
pub type Cli = DaemonCli<Config, Command>;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Point a container runtime at this agent (idempotent; keeps existing settings).
    Configure(crate::configure::ConfigureArgs),
    /// Take this agent out of a runtime's configuration again (what `configure` added only).
    Unconfigure(crate::configure::ConfigureArgs),
    /// Download a plain file through this host's agent (P2P, like image layers).
    Get(crate::get::GetArgs),
    /// This host's agent: what it holds and fetches, where its bytes came from, its uploads.
    Status(crate::status::StatusArgs),
}

/// The agent's flags, each with the configuration key it sets.
impl FlagTable for Config {
    const FLAGS: &'static [Flag] = &[
        Flag::address("listen", "Registry mirror address for the local runtime"),
        Flag::address("upload-listen", "Address other agents fetch pieces from"),
        Flag::address(
            "ops-listen",
            "Address of `/healthz`, `/readyz` and `/metrics` for probes and Prometheus",
        ),
        Flag::value(
            "advertise-url",
            "URL",
            "URL other agents use to reach the upload address (default: http://<upload-listen>)",
        )
        .env("ADVERTISE"),
        Flag::value(
            "edge",
            "URL",
            "Edge cache URL; repeat for fallbacks, nearest first",
        )
        .list()
        .key("edges")
        .env("EDGES"),
        Flag::value(
            "upstream",
            "URL",
            "Default origin registry URL, for clients that send no `?ns=`",
        ),
        Flag::value(
            "location",
            "REGION/ZONE/RACK",
            "Where this host sits: region/zone/rack",
        )
        .checked(parses::<Location>),
        Flag::value("data-dir", "DIR", "Directory for sealed pieces"),
    ];
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Registry mirror for the local runtime.
    #[default(SocketAddr::from(([127, 0, 0, 1], 5090)))]
    pub listen: SocketAddr,
    /// Upload server for other agents.
    #[default(SocketAddr::from(([0, 0, 0, 0], 5091)))]
    pub upload_listen: SocketAddr,
    /// Health, readiness and metrics, reachable from the network: the mirror listens on
    /// loopback only, where neither kubelet probes nor Prometheus reach it.
    #[default(SocketAddr::from(([0, 0, 0, 0], 5092)))]
    pub ops_listen: SocketAddr,
    /// URL other agents use to reach the upload server; default `http://<upload_listen>`.
    pub advertise_url: Option<String>,
    /// Edge caches of this region, nearest first.
    pub edges: Vec<String>,
    /// The edges listed are one cluster (a region's edges sharing one Redis): each agent starts
    /// with the one its host id picks and keeps the others as fallbacks, so a region's agents
    /// spread over its edges. Off: the first listed first.
    pub spread_edges: bool,
    /// Default origin registry URL (for requests without `?ns=`).
    pub upstream: Option<String>,
    /// Origin registries by the name clients use in `?ns=`, for direct fallback.
    pub registries: Vec<RegistryConfig>,
    #[default(Location {
        region: "default".into(),
        zone: "default".into(),
        rack: "default".into(),
    })]
    pub location: Location,
    /// Identity in the scheduler; default: hostname plus upload address.
    pub host_id: Option<String>,
    #[default(PathBuf::from("/var/lib/damselfly/agent"))]
    pub data_dir: PathBuf,
    /// Local piece cache quota, e.g. `20GiB`.
    #[default("20GiB".into())]
    pub quota: String,
    pub download: DownloadConfig,
    pub upload: UploadConfig,
    /// Bounds on every request the agent makes (edges, peers, origins).
    pub outbound: OutboundConfig,
    /// Listeners: header and request time, connections, concurrency, drain on shutdown.
    #[default(ServerConfig {
        shutdown_grace_secs: 10,
        // A blob request waits for its first piece, which may still be on its way to
        // the edge.
        request_timeout_secs: 300,
        max_concurrent_requests: 512,
        ..ServerConfig::default()
    })]
    pub server: ServerConfig,
    /// Logs and traces.
    pub log: LogConfig,
    /// Certificates: served, presented to edges, trusted for outbound calls.
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Name as in `?ns=` (`docker.io`, `registry.example.com:5000`).
    pub registry: String,
    /// Where to reach it directly (`https://registry-1.docker.io`).
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadConfig {
    /// Pieces fetched at once for one blob.
    #[default(8)]
    pub concurrent_pieces: usize,
    /// Pieces fetched at once from one parent.
    #[default(3)]
    pub per_parent: usize,
    /// How far ahead of the stream pieces are fetched.
    #[default(64)]
    pub window: u64,
    /// A piece request that takes longer than this is abandoned and fetched elsewhere.
    #[default(10)]
    pub piece_timeout_secs: u64,
    /// A parent that failed is not asked again for this long.
    #[default(30)]
    pub bad_parent_secs: u64,
    /// Layers of an image fetched before the runtime asks for them (see `download/read_ahead.rs`):
    /// once the edge is about to hold every piece of the layers being pulled, the image's next
    /// layer starts (one at a time, while the runtime pulls the image), so neither the edge's
    /// link from the origin nor its link to the hosts waits for the runtime's next request.
    /// `swarm` (default): only while other hosts pull the same layers; `always`; `off`.
    #[default(ReadAhead::Swarm)]
    pub read_ahead: ReadAhead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadAhead {
    Swarm,
    Always,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Uploads served at once; more are refused (503) so downloaders go elsewhere. Few: a piece
    /// sent at full speed reaches a neighbour who passes it on, many at once all arrive late.
    #[default(4)]
    pub slots: u32,
    /// Upload rate limit in bytes per second across all uploads (0 = unlimited), e.g. `100MiB`.
    #[default("0".into())]
    pub rate_limit: String,
}

/// How long the agent waits on an edge, a peer or an origin before it turns elsewhere: one that
/// accepts a connection and then says nothing must not hold a pull for ever.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// To establish a connection (TCP and TLS).
    #[default(2)]
    pub connect_timeout_secs: u64,
    /// From sending a request to the answer's headers. A task request waits while the edge asks
    /// its upstream for the blob's size, so this is not short.
    #[default(60)]
    pub response_timeout_secs: u64,
    /// Longest silence while reading an answer's body.
    #[default(30)]
    pub idle_timeout_secs: u64,
}

impl OutboundConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(self.response_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

impl Config {
    /// Defaults → file → environment → flags, validated.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        damselfly_server::daemon::load(&DAEMON, cli)
    }

    pub fn advertise(&self) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.upload_listen))
    }

    /// The agent's name in the scheduler: the identity in its certificate when it has one (the
    /// edges accept records only under that name), else `host_id`, else hostname and upload
    /// address.
    pub fn host_id(&self) -> String {
        if let Some(identity) = self.certificate_identity() {
            return identity;
        }
        self.host_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let host = host.trim();
            let host = if host.is_empty() { "host" } else { host };
            format!("{host}-{}", self.upload_listen).replace(['[', ']'], "")
        })
    }
}

impl DaemonConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.edges.is_empty() && self.upstream.is_none() {
            return invalid("give at least one --edge (or an --upstream to pull from directly)".into());
        }
        for url in self
            .edges
            .iter()
            .chain(self.upstream.iter())
            .chain(self.registries.iter().map(|r| &r.url))
        {
            check_url(url, HTTP_SCHEMES)?;
        }
        self.quota_bytes()?;
        self.upload_rate_bytes()?;
        if let (Some(set), Some(identity)) = (&self.host_id, self.certificate_identity()) {
            if *set != identity {
                return invalid(format!(
                    "host_id {set:?} differs from the identity in tls.cert ({identity:?}): the edges know \
                     this agent by its certificate; leave host_id unset"
                ));
            }
        }
        if self.download.concurrent_pieces == 0 || self.download.per_parent == 0 || self.download.window == 0
        {
            return invalid("download.concurrent_pieces, per_parent and window must be > 0".into());
        }
        let o = &self.outbound;
        if o.connect_timeout_secs == 0 || o.response_timeout_secs == 0 || o.idle_timeout_secs == 0 {
            return invalid(
                "outbound.connect_timeout_secs, response_timeout_secs and idle_timeout_secs must be > 0"
                    .into(),
            );
        }
        Ok(())
    }

    fn sections(&self) -> (&ServerConfig, &LogConfig, &TlsConfig) {
        (&self.server, &self.log, &self.tls)
    }
}

impl Config {
    pub fn quota_bytes(&self) -> Result<u64, ConfigError> {
        damselfly_core::parse_size(&self.quota).map_err(ConfigError::Invalid)
    }

    pub fn upload_rate_bytes(&self) -> Result<u64, ConfigError> {
        damselfly_core::parse_size(&self.upload.rate_limit).map_err(ConfigError::Invalid)
    }

    /// The identity the edges see in `tls.cert`: its spiffe:// URI, else its CN.
    fn certificate_identity(&self) -> Option<String> {
        let cert = self.tls.cert.as_ref()?;
        let chain = damselfly_server::tls::read_certs(cert).ok()?;
        damselfly_server::tls::PeerIdentity::of(chain.first()?).map(|i| i.name)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn flags_override_file_and_validation_catches_nonsense() {
        let file = damselfly_test_support::ConfigFile::new(
            "agent.toml",
            "edges = [\"http://e:1\"]\nlocation = \"eu/z1/r1\"\n[upload]\nslots = 2\n",
        );
        let cli = Cli::parse_from(["peer-agent", "--config", file.path(), "--location", "us/a/b"]);
        let c = Config::load(&cli).unwrap();
        assert_eq!(c.location.to_string(), "us/a/b");
        assert_eq!(c.upload.slots, 2);
        assert_eq!(c.edges, vec!["http://e:1".to_string()]);
        file.write("edgs = []\n");
        assert!(Config::load(&cli).is_err());
        let none = Cli::parse_from(["peer-agent"]);
        assert!(Config::load(&none).is_err(), "no edge and no upstream");
    }
}
