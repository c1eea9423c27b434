//! Preheater configuration: defaults, then the TOML file, then environment, then flags.
//!
//! This struct *is* the configuration reference (`docs/preheater.md` mirrors it): every field is
//! documented, and unknown keys are rejected so a typo fails loudly instead of being ignored.

use std::net::SocketAddr;
use std::path::PathBuf;

use damselfly_server::cli::{DaemonCli, Flag, FlagTable};
use damselfly_server::config::{check_url, redact_url, ConfigError, LogConfig, HTTP_SCHEMES, REDACTED};
use damselfly_server::daemon::{DaemonConfig, Secret};
use damselfly_server::tls::TlsConfig;
use damselfly_server::{Daemon, ServerConfig};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

pub const DAEMON: Daemon = Daemon::new("preheater", "DAMSELFLY_PREHEATER", env!("CARGO_PKG_DESCRIPTION"));

/// The preheater's command line: the common flags, [`Config`]'s flag table and [`PreheaterCommand`].
pub type Cli = DaemonCli<Config, PreheaterCommand>;

#[derive(Debug, clap::Subcommand)]
pub enum PreheaterCommand {
    /// The job API of a running preheater: create a warm job and follow it, look jobs up.
    Jobs(crate::jobs_cli::JobsArgs),
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address (webhooks, job API, `/healthz`, `/readyz`, `/metrics`).
    // Not 5090: that is the agent's mirror, and both run on the same hosts in small
    // installations.
    #[default(SocketAddr::from(([0, 0, 0, 0], 5070)))]
    pub listen: SocketAddr,
    /// Directory of the embedded job store (`jobs.redb`).
    #[default(PathBuf::from("/var/lib/damselfly/preheater"))]
    pub data_dir: PathBuf,
    /// Token expected as `Authorization: Bearer <token>` from registries. Unset: every
    /// notification is accepted (a warning is logged at start-up).
    pub webhook_token: Option<String>,
    /// Exact `Authorization` header value expected from Harbor. Unset: accepted unchecked.
    pub harbor_auth: Option<String>,
    /// Token expected as `Authorization: Bearer <token>` on the job API. Unset: open.
    pub api_token: Option<String>,
    /// Bearer token for the edges' warm API (the edges' `warm_token`).
    pub edge_token: Option<String>,
    /// Files holding `webhook_token`, `harbor_auth`, `api_token`, `edge_token` (mode 0600).
    pub webhook_token_file: Option<PathBuf>,
    pub harbor_auth_file: Option<PathBuf>,
    pub api_token_file: Option<PathBuf>,
    pub edge_token_file: Option<PathBuf>,
    /// Seals the credentials a job keeps until it ends (Harbor's pull token). Unset: generated
    /// once in `data_dir`; preheaters sharing one Redis need one file between them.
    pub cluster_secret_file: Option<PathBuf>,
    /// Lab use only: serve without TLS (webhook, API and provider tokens then cross the network
    /// in clear). Off, the preheater refuses to start without `[tls] cert` and `key`.
    pub insecure: bool,
    /// Edges to warm. Several entries of one region are one cluster of edges (they share one
    /// Redis and each blob has one owner among them): a warm goes to the first that answers
    /// and the next on a retry, and any of them routes it to the owner.
    pub edges: Vec<EdgeConfig>,
    /// Registries images are resolved from; events naming any other registry are ignored.
    pub registries: Vec<RegistryConfig>,
    /// Platforms warmed from an image index (`os/arch` or `os/arch/variant`); empty: all.
    pub platforms: Vec<String>,
    /// Redis URL; when set, jobs, the queue and deduplication live there instead of `data_dir`.
    pub redis: Option<String>,
    /// Key prefix in Redis, so several preheater clusters can share one Redis.
    #[default("damselfly:preheater:".into())]
    pub redis_prefix: String,
    pub jobs: JobsConfig,
    pub warm: WarmConfig,
    pub dedupe: DedupeConfig,
    pub limits: LimitsConfig,
    /// Harbor's P2P Preheat driving the preheater as its "Dragonfly" provider.
    pub harbor: HarborConfig,
    /// Listeners: header and request time, connections, concurrency, drain on shutdown (which
    /// running jobs get too).
    #[default(ServerConfig {
        shutdown_grace_secs: 10,
        // Webhook senders time out after 1–3 s: an answer later than this is useless.
        request_timeout_secs: 10,
        max_concurrent_requests: 256,
        ..ServerConfig::default()
    })]
    pub server: ServerConfig,
    /// Logs and traces.
    pub log: LogConfig,
    /// Certificates: served, presented to edges, trusted for outbound calls.
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Region label (`eu-west`); the key of per-region job state.
    pub region: String,
    /// Base URL of the region's edge (`http://edge.eu.internal:5080`).
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry as events and image references name it (`registry.example.com`,
    /// `127.0.0.1:5000`; for Harbor: its `ext_endpoint` host).
    pub host: String,
    /// Where the preheater reaches it (`https://registry.example.com`).
    pub url: String,
    /// Credentials for reading manifests (Basic, or the Bearer token dance).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding `password` (mode 0600).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Accept invalid TLS certificates from this registry.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name the edges know this registry by (their `[[upstreams]] registry`); default `host`.
    #[serde(default)]
    pub edge_registry: Option<String>,
    /// Send `registry: null` to the edges: they fetch from their default upstream.
    #[serde(default)]
    pub edge_default_upstream: bool,
    /// Pass this registry's credentials (as Basic) to the edges; otherwise the edges use their
    /// own configured credentials or go anonymous.
    #[serde(default)]
    pub forward_credentials: bool,
}

impl RegistryConfig {
    /// The name sent to the edges as `registry` in warm requests (`None`: their default
    /// upstream).
    pub fn edge_name(&self) -> Option<&str> {
        if self.edge_default_upstream {
            None
        } else {
            Some(self.edge_registry.as_deref().unwrap_or(&self.host))
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarborConfig {
    /// Tokens Harbor may present as `Authorization: Bearer <token>` on the provider API
    /// (`/healthy`, `/oapi/v1/jobs`, `/_ping`, `/preheats`): the instance's OAUTH `auth_info.token`.
    pub provider_tokens: Vec<String>,
    /// `user:password` pairs Harbor may present as Basic (auth mode BASIC, `auth_info`
    /// `{"<user>": "<password>"}`). With neither tokens nor pairs the API is open (mode NONE).
    pub provider_basic: Vec<String>,
    /// Harbor's `scheduler_cluster_ids` → regions. Empty: cluster `n` is the `n`-th `[[edges]]`
    /// entry (1-based).
    pub clusters: Vec<ClusterConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// A scheduler cluster id as Harbor's preheat policy names it (`extra_attrs.cluster_ids`).
    pub id: u64,
    /// The region (an `[[edges]]` region) that cluster id means.
    pub region: String,
}

/// The regions of `edges`, each once, in configuration order.
pub fn regions_of(edges: &[EdgeConfig]) -> Vec<String> {
    let mut regions: Vec<String> = Vec::new();
    for e in edges {
        if !regions.contains(&e.region) {
            regions.push(e.region.clone());
        }
    }
    regions
}

impl HarborConfig {
    /// `(cluster id, region)` for every region Harbor can name, in configuration order.
    pub fn clusters(&self, edges: &[EdgeConfig]) -> Vec<(u64, String)> {
        if self.clusters.is_empty() {
            (1..).zip(regions_of(edges)).collect()
        } else {
            self.clusters.iter().map(|c| (c.id, c.region.clone())).collect()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs processed at once by this preheater.
    #[default(8)]
    pub workers: usize,
    /// Finished jobs kept for the job API (oldest removed first).
    #[default(10_000)]
    pub retention: usize,
    /// Attempts to resolve an image while its registry is unavailable.
    #[default(5)]
    pub resolve_attempts: u32,
    /// Redis only: a job whose worker stopped renewing its lease this long is picked up again.
    #[default(30)]
    pub lease_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct WarmConfig {
    /// Warm requests in flight per region (layers of every job together).
    #[default(4)]
    pub concurrency_per_region: usize,
    /// Attempts per layer and region before the layer (and so the job) fails.
    #[default(5)]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt with full jitter, up to `backoff_max_ms`.
    #[default(500)]
    pub backoff_initial_ms: u64,
    #[default(30_000)]
    pub backoff_max_ms: u64,
    /// Status polling of an ingesting blob: first interval, doubling up to `poll_max_ms`.
    #[default(200)]
    pub poll_initial_ms: u64,
    #[default(2_000)]
    pub poll_max_ms: u64,
    /// An ingest not finished after this long counts as a failed attempt.
    #[default(1_800)]
    pub poll_timeout_secs: u64,
    /// Timeout of one request to an edge or a registry.
    #[default(30)]
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    /// How long an event id is remembered (registries retry for as long as we fail).
    #[default(24 * 3600)]
    pub ttl_secs: u64,
    /// Most event ids remembered by the embedded store (oldest forgotten first).
    #[default(100_000)]
    pub max_entries: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted (413 beyond).
    #[default(1024 * 1024)]
    pub max_body_bytes: usize,
}

/// The preheater's flags, each with the configuration key it sets. `--edge` replaces the file's
/// edges; `--registry` (replacing a file entry of the same host), `--harbor-provider-token` and
/// `--harbor-provider-basic` add to the file's.
impl FlagTable for Config {
    const FLAGS: &'static [Flag] = &[
        Flag::address("listen", "Address for the webhooks, the job API and the health/metrics endpoints"),
        Flag::value("data-dir", "DIR", "Directory of the embedded job store (unused with --redis)"),
        Flag::value(
            "edge",
            "REGION=URL",
            "An edge to warm, as REGION=URL (repeatable; replaces the file's `edges`)",
        )
        .list()
        .pairs("region", "url")
        .key("edges")
        .env("EDGES"),
        Flag::value("edge-token", "TOKEN", "Bearer token presented to the edges' warm API").secret(),
        Flag::value(
            "webhook-token",
            "TOKEN",
            "Token registries must send as `Authorization: Bearer <token>` on /webhooks/distribution",
        )
        .secret(),
        Flag::value(
            "harbor-auth",
            "VALUE",
            "Exact `Authorization` value Harbor sends on /webhooks/harbor (the policy's auth_header)",
        )
        .secret(),
        Flag::value(
            "api-token",
            "TOKEN",
            "Token required as `Authorization: Bearer <token>` on /api/v1/jobs",
        )
        .secret(),
        Flag::value(
            "edge-token-file",
            "FILE",
            "Files holding those secrets (mode 0600), which keeps them out of process lists",
        ),
        Flag::value("webhook-token-file", "FILE", "File holding --webhook-token (mode 0600)"),
        Flag::value("harbor-auth-file", "FILE", "File holding --harbor-auth (mode 0600)"),
        Flag::value("api-token-file", "FILE", "File holding --api-token (mode 0600)"),
        Flag::value(
            "cluster-secret-file",
            "FILE",
            "The secret that seals credentials kept with running jobs (mode 0600; default: generated \
             in the data directory; preheaters sharing Redis need the same one)",
        ),
        Flag::switch(
            "insecure",
            "Lab use only: serve webhooks, the job API and Harbor's provider API without TLS (their \
             tokens then cross the network in clear)",
        ),
        Flag::value(
            "registry",
            "HOST=URL",
            "A registry to resolve images from, as HOST=URL (repeatable; adds to the file's `registries`)",
        )
        .appends(Some("host"))
        .pairs("host", "url")
        .key("registries")
        .env("REGISTRIES"),
        Flag::value(
            "redis",
            "URL",
            "Redis URL: share jobs and deduplication between several preheaters (e.g. redis://127.0.0.1:6379)",
        )
        .secret(),
        Flag::value(
            "harbor-provider-token",
            "TOKEN",
            "Token Harbor's P2P provider instance presents as `Authorization: Bearer <token>` on the \
             provider API (auth mode OAUTH; repeatable; adds to the file's `harbor.provider_tokens`)",
        )
        .appends(None)
        .secret()
        .key("harbor.provider_tokens")
        .env("HARBOR_PROVIDER_TOKENS"),
        Flag::value(
            "harbor-provider-basic",
            "USER:PASSWORD",
            "USER:PASSWORD Harbor's P2P provider instance presents as Basic (auth mode BASIC; \
             repeatable; adds to the file's `harbor.provider_basic`)",
        )
        .appends(None)
        .secret()
        .key("harbor.provider_basic")
        .env("HARBOR_PROVIDER_BASIC"),
    ];
}

impl Config {
    /// Defaults → file → environment → flags, validated.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        damselfly_server::daemon::load(&DAEMON, cli)
    }

    /// The registry entry for a host as events name it.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }
}

impl DaemonConfig for Config {
    fn secrets(&mut self) -> Vec<Secret<'_>> {
        let mut secrets = vec![
            Secret::new("webhook_token", &mut self.webhook_token, &self.webhook_token_file),
            Secret::new("harbor_auth", &mut self.harbor_auth, &self.harbor_auth_file),
            Secret::new("api_token", &mut self.api_token, &self.api_token_file),
            Secret::new("edge_token", &mut self.edge_token, &self.edge_token_file),
        ];
        for r in &mut self.registries {
            secrets.push(Secret::new(
                "registries.password",
                &mut r.password,
                &r.password_file,
            ));
        }
        secrets
    }

    fn redact_others(&mut self) {
        self.redis = self.redis.as_deref().map(redact_url);
        let harbor = &mut self.harbor;
        harbor.provider_tokens = harbor.provider_tokens.iter().map(|_| REDACTED.into()).collect();
        harbor.provider_basic = harbor
            .provider_basic
            .iter()
            .map(|b| format!("{}:{REDACTED}", b.split(':').next().unwrap_or("")))
            .collect();
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut regions = std::collections::HashSet::new();
        for e in &self.edges {
            check_url(&e.url, HTTP_SCHEMES)?;
            if e.region.is_empty()
                || !e
                    .region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return invalid(format!(
                    "edge region {:?} must be letters, digits, - _ .",
                    e.region
                ));
            }
            if !regions.insert((e.region.as_str(), e.url.trim_end_matches('/'))) {
                return invalid(format!("edge {} of region {:?} is listed twice", e.url, e.region));
            }
        }
        let mut hosts = std::collections::HashSet::new();
        for r in &self.registries {
            check_url(&r.url, HTTP_SCHEMES)?;
            if r.host.is_empty() || r.host.contains('/') || r.host.contains("://") {
                return invalid(format!("registry host {:?} must be host[:port]", r.host));
            }
            if !hosts.insert(r.host.as_str()) {
                return invalid(format!("registry {:?} is listed twice", r.host));
            }
            if r.username.is_some() != r.password.is_some() {
                return invalid(format!("registry {}: set both username and password", r.host));
            }
        }
        for p in &self.platforms {
            crate::platform::PlatformFilter::parse_one(p).map_err(ConfigError::Invalid)?;
        }
        if let Some(url) = &self.redis {
            check_url(url, &["redis", "rediss", "unix", "redis+unix"])?;
        }
        for (name, token) in [
            ("webhook_token", &self.webhook_token),
            ("edge_token", &self.edge_token),
            ("api_token", &self.api_token),
            ("harbor_auth", &self.harbor_auth),
        ] {
            if token.as_ref().is_some_and(|t| t.trim().is_empty()) {
                return invalid(format!("{name} must not be empty"));
            }
        }
        if self.harbor.provider_tokens.iter().any(|t| t.trim().is_empty()) {
            return invalid("harbor.provider_tokens must not contain an empty token".into());
        }
        if let Some(bad) = self
            .harbor
            .provider_basic
            .iter()
            .find(|b| b.split_once(':').is_none_or(|(u, _)| u.is_empty()))
        {
            let shown = bad.split(':').next().unwrap_or("");
            return invalid(format!(
                "harbor.provider_basic entries are user:password (entry for {shown:?})"
            ));
        }
        let mut cluster_ids = std::collections::HashSet::new();
        for c in &self.harbor.clusters {
            if !cluster_ids.insert(c.id) {
                return invalid(format!("harbor cluster {} is mapped twice", c.id));
            }
            if !regions.iter().any(|(region, _)| *region == c.region) {
                return invalid(format!(
                    "harbor cluster {} maps to region {:?}, which has no [[edges]] entry",
                    c.id, c.region
                ));
            }
        }
        let positive = [
            ("jobs.workers", self.jobs.workers as u64),
            ("jobs.resolve_attempts", self.jobs.resolve_attempts.into()),
            ("jobs.lease_secs", self.jobs.lease_secs),
            (
                "warm.concurrency_per_region",
                self.warm.concurrency_per_region as u64,
            ),
            ("warm.max_attempts", self.warm.max_attempts.into()),
            ("warm.poll_initial_ms", self.warm.poll_initial_ms),
            ("warm.request_timeout_secs", self.warm.request_timeout_secs),
            ("limits.max_body_bytes", self.limits.max_body_bytes as u64),
            ("dedupe.ttl_secs", self.dedupe.ttl_secs),
            ("dedupe.max_entries", self.dedupe.max_entries as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return invalid(format!("{name} must be > 0"));
            }
        }
        if self.warm.backoff_max_ms < self.warm.backoff_initial_ms
            || self.warm.poll_max_ms < self.warm.poll_initial_ms
        {
            return invalid("warm: *_max_ms must be >= the matching *_initial_ms".into());
        }
        if !self.tls.enabled() && !self.insecure {
            return invalid(
                "the preheater receives webhook, API and Harbor tokens: give it [tls] cert and key \
                 (--tls-cert, --tls-key), or set insecure = true (--insecure) for a lab"
                    .into(),
            );
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
    fn file_then_flags_and_unknown_keys_fail() {
        let file = damselfly_test_support::ConfigFile::new(
            "preheater.toml",
            r#"
listen = "127.0.0.1:1"
insecure = true
webhook_token = "from-file"
platforms = ["linux/amd64", "linux/arm64/v8"]
[[edges]]
region = "eu"
url = "http://127.0.0.1:9"
[[registries]]
host = "registry.example.com"
url = "https://registry.example.com"
username = "u"
password = "p"
[warm]
max_attempts = 3
"#,
        );
        let cli = Cli::parse_from([
            "preheater",
            "--config",
            file.path(),
            "--listen",
            "127.0.0.1:2",
            "--webhook-token",
            "from-flag",
            "--registry",
            "127.0.0.1:5000=http://127.0.0.1:5000",
        ]);
        let c = Config::load(&cli).unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.webhook_token.as_deref(), Some("from-flag"));
        assert_eq!(
            c.edges,
            vec![EdgeConfig {
                region: "eu".into(),
                url: "http://127.0.0.1:9".into()
            }]
        );
        assert_eq!(c.registries.len(), 2);
        assert_eq!(c.registry("127.0.0.1:5000").unwrap().url, "http://127.0.0.1:5000");
        assert_eq!(c.warm.max_attempts, 3);
        assert_eq!(
            c.warm.concurrency_per_region, 4,
            "defaults fill what the file leaves out"
        );

        // Flags replace the file's edges.
        let cli = Cli::parse_from([
            "preheater",
            "--config",
            file.path(),
            "--edge",
            "us=http://127.0.0.1:7",
            "--edge",
            "ap=http://127.0.0.1:8",
        ]);
        let c = Config::load(&cli).unwrap();
        assert_eq!(
            c.edges.iter().map(|e| e.region.as_str()).collect::<Vec<_>>(),
            ["us", "ap"]
        );

        file.write("webhok_token = \"x\"\n");
        let err = Config::load(&Cli::parse_from(["preheater", "--config", file.path()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhok_token"), "{err}");
    }

    #[test]
    fn harbor_clusters_map_to_regions() {
        let text = r#"
            insecure = true
            [[edges]]
            region = "us"
            url = "http://us:5080"
            [[edges]]
            region = "eu"
            url = "http://eu:5080"
            [harbor]
            provider_tokens = ["t"]
            provider_basic = ["harbor:pw"]
        "#;
        let mut c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.harbor.clusters(&c.edges),
            vec![(1, "us".into()), (2, "eu".into())]
        );
        c.harbor.clusters = vec![ClusterConfig {
            id: 7,
            region: "eu".into(),
        }];
        c.validate().unwrap();
        assert_eq!(c.harbor.clusters(&c.edges), vec![(7, "eu".into())]);
        let printed = toml::to_string(&c.redacted()).unwrap();
        assert!(
            printed.contains("harbor:<redacted>") && !printed.contains("\"t\""),
            "{printed}"
        );
        for bad in [
            |c: &mut Config| c.harbor.clusters[0].region = "mars".into(),
            |c: &mut Config| c.harbor.clusters.push(c.harbor.clusters[0].clone()),
            |c: &mut Config| c.harbor.provider_basic = vec!["no-colon".into()],
            |c: &mut Config| c.harbor.provider_tokens = vec![" ".into()],
        ] {
            let mut broken = c.clone();
            bad(&mut broken);
            assert!(broken.validate().is_err());
        }
    }

    #[test]
    fn validation_catches_nonsense() {
        let bad_flags: [&[&str]; 5] = [
            &["--edge", "eu"],
            &["--edge", "eu=ftp://x"],
            // One edge listed twice (several edges of one region are a cluster, not an error).
            &["--edge", "eu=http://a", "--edge", "eu=http://a/"],
            &["--registry", "a/b=http://x"],
            &["--redis", "http://127.0.0.1:6379"],
        ];
        // A lab preheater (no TLS), so that each refusal below is for the reason under test.
        let lab = || Config {
            insecure: true,
            ..Config::default()
        };
        for flags in bad_flags {
            let args = ["preheater", "--insecure"]
                .into_iter()
                .chain(flags.iter().copied());
            let cli = Cli::parse_from(args);
            assert!(Config::load(&cli).is_err(), "{flags:?} must be refused");
        }
        let cluster = [
            "preheater",
            "--insecure",
            "--edge",
            "eu=http://a",
            "--edge",
            "eu=http://b",
        ];
        let c = Config::load(&Cli::parse_from(cluster)).expect("two edges of one region");
        assert_eq!(regions_of(&c.edges), ["eu"]);
        let c = Config {
            platforms: vec!["linux".into()],
            ..lab()
        };
        assert!(c.validate().is_err());
        let c = Config {
            warm: WarmConfig {
                max_attempts: 0,
                ..WarmConfig::default()
            },
            ..lab()
        };
        assert!(c.validate().is_err());
        let mut c = lab();
        c.registries.push(RegistryConfig {
            host: "r".into(),
            url: "http://r".into(),
            username: Some("u".into()),
            password: None,
            password_file: None,
            insecure_skip_verify: false,
            edge_registry: None,
            edge_default_upstream: false,
            forward_credentials: false,
        });
        assert!(c.validate().is_err());
        assert!(lab().validate().is_ok());
        // Secure by default: without TLS the preheater starts only when asked to by name.
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains("tls") && err.contains("insecure"), "{err}");
    }
}
