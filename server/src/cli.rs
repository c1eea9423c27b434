//! Flags every daemon has: `--config`, `--check-config`, logging, and TLS files.

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
    /// PEM certificate chain: served on TLS listeners; presented as the client certificate to
    /// edges (`tls.cert`).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert, readable by its owner only (`tls.key`).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates trusted for outbound calls besides the system's (`tls.ca_file`).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Validate the configuration, print it with every secret redacted, and exit (non-zero when
    /// invalid).
    #[arg(long)]
    pub check_config: bool,
}

/// Parses the command line, with the common flags also read from `<PREFIX>_<FLAG>` (clap needs
/// the names before parsing; each daemon has its prefix).
///
/// A secret flag (one whose environment value clap hides) given on the command line itself is
/// refused: every user of the machine can read a process's arguments. Such values come from the
/// environment or, better, from the flag's `-file` twin.
pub fn parse<T: Parser>(daemon: &Daemon) -> T {
    let env = |suffix: &str| -> &'static str {
        Box::leak(format!("{}_{suffix}", daemon.env_prefix).into_boxed_str())
    };
    let matches = T::command()
        .mut_arg("config", |a| a.env(env("CONFIG")))
        .mut_arg("log_format", |a| a.env(env("LOG_FORMAT")))
        .mut_arg("otlp_endpoint", |a| a.env(env("OTLP_ENDPOINT")))
        .mut_arg("tls_cert", |a| a.env(env("TLS_CERT")))
        .mut_arg("tls_key", |a| a.env(env("TLS_KEY")))
        .mut_arg("ca_file", |a| a.env(env("CA_FILE")))
        .get_matches();
    let mut command = T::command();
    let refused = command.get_arguments().find_map(|arg| {
        let id = arg.get_id().as_str();
        let on_command_line = matches!(matches.try_get_raw(id), Ok(Some(_)))
            && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        (arg.is_hide_env_values_set() && on_command_line).then(|| {
            let flag = arg.get_long().unwrap_or(id).to_string();
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!(
                "--{flag} on the command line would show the secret in the process list: \
                 use --{flag}-file FILE (readable by this user only) or {env}"
            )
        })
    });
    if let Some(message) = refused {
        command
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// What a command that talks to a running daemon's API needs: an HTTP client trusting the
/// system's CAs plus `ca` (a cluster CA), with bounded connect and total times, and the bearer
/// token read from `token_file` (mode 0600; `None` when no file is named).
pub fn api_client(
    ca: Option<&std::path::Path>,
    token_file: Option<&std::path::Path>,
    key: &str,
) -> Result<(reqwest::Client, Option<String>), String> {
    let mut token = None;
    crate::config::secret_from_file(&mut token, &token_file.map(PathBuf::from), key)
        .map_err(|e| e.to_string())?;
    let tls = crate::tls::TlsConfig {
        ca_file: ca.map(PathBuf::from),
        ..crate::tls::TlsConfig::default()
    };
    let client = crate::tls::client_builder(&tls, false)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, token))
}
