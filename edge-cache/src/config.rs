//! Edge configuration: defaults, then the TOML file, then environment, then flags.
//!
//! Every field is documented here because this struct *is* the configuration reference
//! (`docs/configuration.md` mirrors it). Unknown keys are rejected so typos fail loudly.

use std::net::SocketAddr;
use std::path::PathBuf;

use damselfly_server::cli::{DaemonCli, Flag, FlagTable};
use damselfly_server::config::{check_url, redact_url, ConfigError, LogConfig, HTTP_SCHEMES};
use damselfly_server::daemon::{DaemonConfig, Secret};
use damselfly_server::tls::TlsConfig;
use damselfly_server::{Daemon, ServerConfig};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

pub const DAEMON: Daemon = Daemon::new("edge-cache", "DAMSELFLY_EDGE", env!("CARGO_PKG_DESCRIPTION"));

/// The edge cache's command line: the common flags, [`Config`]'s flag table and [`EdgeCommand`].
pub type Cli = DaemonCli<Config, EdgeCommand>;

#[derive(Debug, clap::Subcommand)]
pub enum EdgeCommand {
    /// A cluster CA and certificates for edges, agents and preheaters (for deployments without a
    /// certificate manager).
    #[command(subcommand)]
    Certs(crate::certs::CertsCommand),
    /// The admin API of a running edge: list blobs and tags, purge, pin.
    Admin(crate::admin_cli::AdminArgs),
}

/// The edge's flags, each with the configuration key it sets.
impl FlagTable for Config {
    const FLAGS: &'static [Flag] = &[
        Flag::address(
            "listen",
            "Address for the registry API, the agent API and the health/metrics endpoints",
        ),
        Flag::value(
            "data-dir",
            "DIR",
            "Directory for the piece store, the index and the generated cluster secret",
        ),
        Flag::value(
            "upstream",
            "URL",
            "Default upstream registry URL, used when a request names no `?ns=` (e.g. http://127.0.0.1:5000)",
        ),
        Flag::value(
            "region",
            "NAME",
            "Region this edge serves (a label such as `eu-west`)",
        ),
        Flag::value(
            "quota",
            "SIZE",
            "Disk quota for cached blobs, e.g. `50GiB` or `500MiB`",
        )
        .key("cache.quota"),
        Flag::value(
            "warm-token",
            "TOKEN",
            "Bearer token the preheater presents on `/api/v1/warm` (unset: warming disabled)",
        )
        .secret(),
        Flag::value(
            "warm-token-file",
            "FILE",
            "File holding the warm token (mode 0600): keeps it out of the process list",
        ),
        Flag::value(
            "admin-token-file",
            "FILE",
            "File holding the admin API's bearer token (mode 0600; unset: the admin API is off)",
        ),
        Flag::value(
            "redis",
            "URL",
            "Redis URL for scheduler state shared by the edges of a region (default: in process); with \
             --advertise-url, also where the edges of the region find each other",
        ),
        Flag::value(
            "advertise-url",
            "URL",
            "How other edges reach this one (e.g. https://edge-1.eu.internal:5080): with --redis, the \
             edges of a region form a cluster, each blob fetched from the origin by one of them",
        ),
        Flag::value(
            "cluster-secret-file",
            "FILE",
            "File holding the secret shared by every edge of the cluster (>= 32 bytes, mode 0600)",
        ),
        Flag::value(
            "parent",
            "URL",
            "An edge of another region asked for a blob before the origin (repeatable, tried in \
             order): regions chained so that the origin sends each blob once",
        )
        .list()
        .key("parents")
        .env("PARENTS"),
        Flag::value(
            "client-ca",
            "FILE",
            "PEM CA that signs agents' client certificates: agents get task keys only over TLS with a \
             certificate from it (`tls.client_ca`)",
        )
        .key("tls.client_ca"),
        Flag::switch(
            "insecure",
            "Lab use only: hand task keys to callers without a TLS client certificate (anyone who can \
             watch the network can then decrypt every piece)",
        ),
        Flag::value(
            "compression",
            "MODE",
            "Compress pieces worth it: `auto` while the CPU has room, `always`, or `off` (tables stay \
             in the format agents from before compression read) (`compression.mode`)",
        )
        .key("compression.mode")
        .one_of(&["auto", "always", "off"]),
    ];
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (registry API, agent API, `/healthz`, `/readyz`, `/metrics`).
    #[default(SocketAddr::from(([0, 0, 0, 0], 5080)))]
    pub listen: SocketAddr,
    /// Data directory: sealed pieces, the redb index and the generated cluster secret.
    #[default(PathBuf::from("/var/lib/damselfly/edge"))]
    pub data_dir: PathBuf,
    /// Region label of this edge.
    #[default("default".into())]
    pub region: String,
    /// URL of the default upstream, for requests without `?ns=`.
    pub upstream: Option<String>,
    /// Known upstream registries, with their credentials.
    pub upstreams: Vec<UpstreamConfig>,
    /// Cluster secret (at least 32 bytes) shared by every edge: derives task keys and signs
    /// tickets. When unset, one is generated in `data_dir/cluster.secret` (fine for one edge).
    pub cluster_secret_file: Option<PathBuf>,
    /// Bearer token required on the warm API (`/api/v1/warm`); unset disables warming.
    pub warm_token: Option<String>,
    /// A file holding `warm_token` (mode 0600).
    pub warm_token_file: Option<PathBuf>,
    /// Bearer token of the admin API (`/api/v1/admin/…`: list, purge, pin); unset turns it off.
    /// Sent only over TLS unless `insecure`.
    pub admin_token: Option<String>,
    /// A file holding `admin_token` (mode 0600).
    pub admin_token_file: Option<PathBuf>,
    /// Lab use only: task keys to callers without a TLS client certificate. Off, an edge hands a
    /// task key only over TLS to an agent whose certificate `tls.client_ca` signed.
    pub insecure: bool,
    /// Redis URL for shared scheduler state; unset keeps it in this process.
    pub redis: Option<String>,
    /// How other edges reach this one; with `redis`, the region's edges form a cluster.
    pub advertise_url: Option<String>,
    pub cluster: ClusterConfig,
    /// Edges of other regions asked for a blob, in order, before the origin (`chain.rs`).
    pub parents: Vec<String>,
    pub scheduler: SchedulerConfig,
    pub files: FilesConfig,
    pub compression: CompressionConfig,
    pub cache: CacheConfig,
    pub access: AccessConfig,
    pub limits: LimitsConfig,
    /// Listeners: header and request time, connections, concurrency, drain on shutdown.
    pub server: ServerConfig,
    /// Logs and traces.
    pub log: LogConfig,
    /// Certificates: served, presented to edges, trusted for outbound calls.
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry host as clients name it in `?ns=` (`docker.io`, `registry.example.com:5000`).
    pub registry: String,
    /// Where to reach it (`https://registry-1.docker.io`, `http://127.0.0.1:5000`).
    pub url: String,
    /// Credentials the edge uses for clients that send none (makes the repositories readable by
    /// anyone who can reach the edge: a deliberate operator choice).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding `password` (mode 0600).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Accept invalid TLS certificates from this upstream.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// A peer not heard from for this long is dropped from its tasks.
    #[default(30)]
    pub peer_ttl_secs: u64,
    /// Parents proposed per request.
    #[default(32)]
    pub max_parents: usize,
    /// Peers recorded per task; a newcomer beyond is refused (503) and downloads without
    /// announcing.
    #[default(20_000)]
    pub max_peers_per_task: usize,
    /// Scheduler writes (announcements, leaves) a second per host, bursts of twice that;
    /// beyond, 429.
    // An agent announces a download's changes every 50 ms and pieces it takes from the
    // edge every 10 ms at most: a few downloads at once stay well under this.
    #[default(500)]
    pub max_announcements_per_sec: u32,
}

/// Plain files (`peer-agent get URL`) the edge may fetch. Empty: file tasks are refused, so the
/// edge is never a proxy to arbitrary hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// URL prefixes (`https://downloads.example.com/models/`) under which files may be fetched.
    /// Anyone who can reach the edge can read what these name: list only what is public to
    /// your hosts.
    pub allow: Vec<String>,
}

impl FilesConfig {
    /// Whether a normalised file URL lies under an allowed prefix. Prefixes are normalised the
    /// same way, so their host always ends in `/` or `:port/` and cannot be extended to
    /// `host.attacker.example`.
    pub fn allows(&self, normalised_url: &str) -> bool {
        self.allow
            .iter()
            .any(|prefix| damselfly_core::normalise_url(prefix).is_ok_and(|p| normalised_url.starts_with(&p)))
    }
}

/// The edges of a region as one cache (`advertise_url` and `redis` set; see `cluster.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How often this edge says it is alive and reads who else is.
    #[default(1000)]
    pub heartbeat_ms: u64,
    /// An edge not heard from for this long is out of the ring (its blobs move to others).
    #[default(3000)]
    pub member_timeout_ms: u64,
}

/// Compress, then seal: pieces that save at least `min_saving` are stored and sent as zstd
/// frames (see `docs/compression.md`).
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// `auto`: a new blob is compressed while it pays (this edge compresses faster than
    /// `min_rate_mbit` and the machine is less busy than `max_cpu`); `always`: whatever the
    /// load; `off`: never, and tables stay format 1 (what agents from before compression read).
    #[default(CompressionMode::Auto)]
    pub mode: CompressionMode,
    /// The share of a piece's size compression must save for the piece to be kept compressed.
    #[default(0.1)]
    pub min_saving: f64,
    /// `auto` compresses only while one core compresses faster than this (Mbit/s of input, as
    /// measured on the pieces compressed so far): set it near the rate of the links served.
    #[default(1000)]
    pub min_rate_mbit: u64,
    /// `auto` compresses only while the machine's CPUs are busy less than this share (0-1).
    #[default(0.8)]
    pub max_cpu: f64,
    /// Overrides of `mode` by source, the first match wins: `prefix` is matched against
    /// `<registry>/<repository>` for a registry blob (`ghcr.io/org/models`) and against the URL
    /// for a file (`https://files.example.com/weights/`).
    pub rules: Vec<CompressionRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMode {
    Auto,
    Always,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionRule {
    pub prefix: String,
    pub mode: CompressionMode,
}

impl CompressionConfig {
    /// The mode for a source named `name` (see `rules`).
    pub fn mode_for(&self, name: &str) -> CompressionMode {
        let rule = self.rules.iter().find(|r| name.starts_with(&r.prefix));
        rule.map_or(self.mode, |r| r.mode)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Disk quota for sealed blobs, e.g. `50GiB`.
    #[default("50GiB".into())]
    pub quota: String,
    /// Eviction starts when usage would pass this fraction of the quota...
    #[default(0.90)]
    pub high_watermark: f64,
    /// ...and frees least-recently-used blobs down to this fraction.
    #[default(0.80)]
    pub low_watermark: f64,
    /// How long a tag→digest mapping is served without asking the upstream again.
    #[default(30)]
    pub tag_ttl_secs: u64,
    /// Largest manifest accepted from an upstream.
    #[default(4 * 1024 * 1024)]
    pub max_manifest_bytes: u64,
    /// Manifests kept at most; the least recently read go first. Their bytes count against
    /// the quota and are kept under a twentieth of it.
    #[default(100_000)]
    pub max_manifests: usize,
    /// Tag mappings kept at most; the least recently used go first (the next pull of an
    /// evicted tag asks the upstream again).
    #[default(100_000)]
    pub max_tags: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// How long an upstream's "yes, this caller may read this" is reused.
    #[default(300)]
    pub ttl_secs: u64,
    /// When the upstream cannot be reached, an earlier "yes" is honoured for this long,
    /// so cached content stays pullable through an origin outage.
    #[default(24 * 3600)]
    pub stale_if_error_secs: u64,
    /// Lifetime of the signed tickets handed to agents.
    #[default(600)]
    pub ticket_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Time to an upstream's response headers, blob transfers included (bodies stream as long
    /// as they make progress).
    #[default(120)]
    pub upstream_timeout_secs: u64,
    /// Connecting to an upstream.
    #[default(5)]
    pub upstream_connect_timeout_secs: u64,
    /// An upstream body that sends nothing for this long is cut and resumed.
    #[default(30)]
    pub upstream_idle_timeout_secs: u64,
    /// Upstream resume attempts per blob before the ingest fails.
    #[default(5)]
    pub upstream_resume_attempts: u32,
    /// Plain-file transfers running at once; a request for one more gets 503 (agents then
    /// fetch the file themselves).
    #[default(8)]
    pub file_ingests: usize,
    /// Pieces sent to agents at once; more requests queue in arrival order. A few fast sends
    /// beat many slow ones: each owner gets its piece sooner and passes it on sooner.
    #[default(4)]
    pub piece_sends: usize,
    /// A piece send whose reader takes nothing for this long gives its send permit back (the
    /// connection goes later, by `server.send_stall_secs`): a few readers that stop reading
    /// cannot hold every send. A healthy send hands over a chunk every few milliseconds.
    #[default(1000)]
    pub piece_send_stall_ms: u64,
    /// Bytes per second for all piece sends together, e.g. `4MiB` ("0": unlimited). Set a
    /// little under the link's rate, it keeps the link's queue short, so scheduler answers and
    /// the acknowledgements of what the edge is fetching do not wait behind pieces.
    #[default("0".into())]
    pub piece_rate_limit: String,
}

impl Config {
    /// Defaults → file → environment → flags, validated.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        damselfly_server::daemon::load(&DAEMON, cli)
    }

    pub fn quota_bytes(&self) -> Result<u64, ConfigError> {
        damselfly_core::parse_size(&self.cache.quota).map_err(ConfigError::Invalid)
    }

    pub fn piece_rate_bytes(&self) -> Result<u64, ConfigError> {
        damselfly_core::parse_size(&self.limits.piece_rate_limit).map_err(ConfigError::Invalid)
    }
}

impl DaemonConfig for Config {
    fn secrets(&mut self) -> Vec<Secret<'_>> {
        let mut secrets = vec![
            Secret::new("warm_token", &mut self.warm_token, &self.warm_token_file),
            Secret::new("admin_token", &mut self.admin_token, &self.admin_token_file),
        ];
        secrets.extend(
            self.upstreams
                .iter_mut()
                .map(|u| Secret::new("upstreams.password", &mut u.password, &u.password_file)),
        );
        secrets
    }

    fn redact_others(&mut self) {
        self.redis = self.redis.as_deref().map(redact_url);
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.quota_bytes()?;
        self.piece_rate_bytes()?;
        let (low, high) = (self.cache.low_watermark, self.cache.high_watermark);
        if !(0.0 < low && low < high && high <= 1.0) {
            return invalid(format!(
                "need 0 < low_watermark ({low}) < high_watermark ({high}) <= 1"
            ));
        }
        if let Some(url) = &self.upstream {
            check_url(url, HTTP_SCHEMES)?;
        }
        if let Some(url) = &self.advertise_url {
            check_url(url, HTTP_SCHEMES)?;
            if self.redis.is_none() {
                return invalid(
                    "advertise_url needs redis: the edges of a region find each other through it".into(),
                );
            }
            // Agents of one region take tickets, keys and pieces from different members: they
            // must all derive them from one secret.
            if self.cluster_secret_file.is_none() {
                return invalid(
                    "advertise_url needs cluster_secret_file: every edge of the cluster must share one secret"
                        .into(),
                );
            }
        }
        for url in &self.parents {
            check_url(url, HTTP_SCHEMES)?;
        }
        // Edges forward their callers' credentials to owners and parents.
        let plain = self
            .advertise_url
            .iter()
            .chain(&self.parents)
            .find(|u| u.starts_with("http://"));
        if let (Some(url), false) = (plain, self.insecure) {
            return invalid(format!(
                "{url}: edges pass callers' credentials to each other, so advertise_url and parents \
                 must be https:// (the edges' [tls]), or set insecure = true for a lab"
            ));
        }
        if self.region.is_empty() || self.region.contains(',') {
            return invalid(format!(
                "region {:?} must be a non-empty name without commas",
                self.region
            ));
        }
        let c = &self.cluster;
        if c.heartbeat_ms == 0 || c.member_timeout_ms < 2 * c.heartbeat_ms {
            return invalid(format!(
                "need cluster.heartbeat_ms > 0 and cluster.member_timeout_ms ({}) >= twice it ({})",
                c.member_timeout_ms, c.heartbeat_ms
            ));
        }
        for u in &self.upstreams {
            check_url(&u.url, HTTP_SCHEMES)?;
            if u.registry.is_empty() || u.registry.contains('/') {
                return invalid(format!(
                    "upstream registry {:?} must be a host[:port]",
                    u.registry
                ));
            }
            if u.username.is_some() != u.password.is_some() {
                return invalid(format!("upstream {}: set both username and password", u.registry));
            }
        }
        for prefix in &self.files.allow {
            damselfly_core::normalise_url(prefix)
                .map_err(|e| ConfigError::Invalid(format!("files.allow {prefix:?}: {e}")))?;
        }
        if self.warm_token.as_ref().is_some_and(|t| t.len() < 16) {
            return invalid("warm_token must be at least 16 characters".into());
        }
        if let Some(token) = &self.admin_token {
            if token.len() < 16 {
                return invalid("admin_token must be at least 16 characters".into());
            }
            if !self.tls.enabled() && !self.insecure {
                return invalid(
                    "admin_token crosses the network: give the edge [tls] cert and key, or set \
                     insecure = true for a lab"
                        .into(),
                );
            }
        }
        if self.cache.max_manifests == 0 || self.cache.max_tags == 0 {
            return invalid("cache.max_manifests and cache.max_tags must be > 0".into());
        }
        let c = &self.compression;
        if !(0.0..1.0).contains(&c.min_saving) || !(0.0..=1.0).contains(&c.max_cpu) {
            return invalid(format!(
                "need 0 <= compression.min_saving ({}) < 1 and 0 <= compression.max_cpu ({}) <= 1",
                c.min_saving, c.max_cpu
            ));
        }
        if c.rules.iter().any(|r| r.prefix.is_empty()) {
            return invalid("compression.rules: every rule needs a prefix".into());
        }
        if self.limits.piece_send_stall_ms == 0 {
            return invalid("limits.piece_send_stall_ms must be > 0".into());
        }
        if self.limits.piece_sends == 0 || self.limits.file_ingests == 0 {
            return invalid("limits.piece_sends and limits.file_ingests must be > 0".into());
        }
        Ok(())
    }

    fn sections(&self) -> (&ServerConfig, &LogConfig, &TlsConfig) {
        (&self.server, &self.log, &self.tls)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn file_values_are_overridden_by_flags_and_unknown_keys_fail() {
        let file = damselfly_test_support::ConfigFile::new(
            "edge.toml",
            "region = \"eu\"\nlisten = \"127.0.0.1:1\"\n[cache]\nquota = \"1GiB\"\n",
        );
        let cli = Cli::parse_from(["edge-cache", "--config", file.path(), "--listen", "127.0.0.1:2"]);
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.region, "eu");
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.quota_bytes().unwrap(), 1 << 30);

        file.write("regoin = \"eu\"\n");
        let err = Config::load(&cli).unwrap_err().to_string();
        assert!(err.contains("regoin"), "{err}");
    }

    #[test]
    fn validation_catches_nonsense() {
        let mut c = Config::default();
        c.cache.low_watermark = 0.95;
        assert!(c.validate().is_err());
        let c = Config {
            upstream: Some("ftp://x".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_cluster_member_needs_redis_and_the_shared_secret() {
        let member = |redis: bool, secret: bool| Config {
            advertise_url: Some("https://edge-1.eu:5080".into()),
            redis: redis.then(|| "redis://redis.eu:6379".into()),
            cluster_secret_file: secret.then(|| "/etc/damselfly/cluster.secret".into()),
            ..Config::default()
        };
        assert!(member(true, true).validate().is_ok());
        let no_secret = member(true, false).validate().unwrap_err().to_string();
        assert!(no_secret.contains("cluster_secret_file"), "{no_secret}");
        assert!(member(false, true).validate().is_err());
        // Credentials cross between edges: plain HTTP only in a lab.
        let plain = Config {
            advertise_url: Some("http://edge-1.eu:5080".into()),
            ..member(true, true)
        };
        assert!(plain.validate().unwrap_err().to_string().contains("https://"));
        assert!(Config {
            insecure: true,
            ..plain
        }
        .validate()
        .is_ok());
        let plain_parent = Config {
            parents: vec!["http://edge.us:5080".into()],
            ..Config::default()
        };
        assert!(plain_parent.validate().is_err());
        let chained = Config {
            parents: vec!["not a url".into()],
            ..Config::default()
        };
        assert!(chained.validate().is_err());
    }

    #[test]
    fn file_prefixes_cannot_be_stretched_to_other_hosts() {
        let files = FilesConfig {
            allow: vec![
                "http://files.example.com".into(),
                "https://cdn.example/models/".into(),
            ],
        };
        let allows = |u: &str| files.allows(&damselfly_core::normalise_url(u).unwrap());
        assert!(allows("http://FILES.example.com/a.bin"));
        assert!(allows("https://cdn.example/models/x/y.bin"));
        assert!(!allows("http://files.example.com.attacker.example/a.bin"));
        assert!(!allows("http://files.example.com:8080/a.bin"));
        assert!(!allows("https://cdn.example/modelsx/y.bin"));
        assert!(!allows("https://files.example.com/a.bin"));
        let c = Config {
            files: FilesConfig {
                allow: vec!["file:///etc/".into()],
            },
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
