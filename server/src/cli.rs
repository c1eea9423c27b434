//! Flags every daemon has: `--config`, `--log-format`, `--otlp-endpoint`, `--check-config`.

use std::path::PathBuf;

use clap::{Args, Parser};

use crate::Daemon;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file (default: /etc/damselfly/<daemon>.toml, when it exists). Any key
    /// can also be set as <PREFIX>__<SECTION>__<KEY> in the environment; flags win over both.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// OTLP/HTTP collector for traces (e.g. http://otel-collector:4318).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Validate the configuration, print it with every secret redacted, and exit (non-zero when
    /// invalid).
    #[arg(long)]
    pub check_config: bool,
}

/// Parses the command line, with the common flags also read from `<PREFIX>_CONFIG` and
/// `<PREFIX>_LOG_FORMAT` (clap needs the names before parsing; each daemon has its prefix).
pub fn parse<T: Parser>(daemon: &Daemon) -> T {
    let env = |suffix: &str| -> &'static str {
        Box::leak(format!("{}_{suffix}", daemon.env_prefix).into_boxed_str())
    };
    let matches = T::command()
        .mut_arg("config", |a| a.env(env("CONFIG")))
        .mut_arg("log_format", |a| a.env(env("LOG_FORMAT")))
        .mut_arg("otlp_endpoint", |a| a.env(env("OTLP_ENDPOINT")))
        .get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
