//! The steps every daemon's `main` takes before and after serving, so each `main.rs` only
//! wires: flags → configuration (or `--check-config`'s answer) → logging → run → exit status.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::cli::{DaemonCli, FlagTable};
use crate::config::{ConfigError, LogConfig};
use crate::logging::Telemetry;
use crate::tls::TlsConfig;
use crate::Daemon;
use crate::ServerConfig;

/// A daemon's whole configuration: the sections every daemon has, and its own.
pub trait DaemonConfig: Serialize + DeserializeOwned + Default + Clone {
    /// The sections every daemon has: `[server]`, `[log]` and `[tls]`.
    fn sections(&self) -> (&ServerConfig, &LogConfig, &TlsConfig);
    /// Every secret value with its `*_file` twin: listed once, so that each is both read from its
    /// file at load and redacted wherever the configuration is printed.
    fn secrets(&mut self) -> Vec<Secret<'_>> {
        Vec::new()
    }
    /// Hides what is secret without being a [`Secret`]: passwords inside URLs, credential lists.
    fn redact_others(&mut self) {}
    /// Checks what the types cannot in the daemon's own keys: ranges, URLs, combinations (the
    /// common sections are checked by [`load`]).
    fn validate(&self) -> Result<(), ConfigError>;

    /// Reads secrets named by `*_file` keys into their values (see
    /// [`crate::config::secret_from_file`]).
    fn load_secrets(&mut self) -> Result<(), ConfigError> {
        for secret in self.secrets() {
            crate::config::secret_from_file(secret.value, secret.file, secret.key)?;
        }
        Ok(())
    }

    /// A copy safe to print: every token, password and credential-bearing URL replaced.
    fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for secret in copy.secrets() {
            *secret.value = crate::config::redact(secret.value);
        }
        copy.redact_others();
        copy
    }
}

/// A secret key of a daemon's configuration and the key of the file it may be read from.
pub struct Secret<'a> {
    /// As errors name it (`warm_token`, `upstreams.password`); its file's key is `<key>_file`.
    pub key: &'static str,
    pub value: &'a mut Option<String>,
    pub file: &'a Option<PathBuf>,
}

impl<'a> Secret<'a> {
    pub fn new(key: &'static str, value: &'a mut Option<String>, file: &'a Option<PathBuf>) -> Self {
        Secret { key, value, file }
    }
}

/// The configuration from every layer (see [`crate::config`]) with `cli`'s flags last, validated.
pub fn load<C: DaemonConfig + FlagTable, S: Subcommand>(
    daemon: &Daemon,
    cli: &DaemonCli<C, S>,
) -> Result<C, ConfigError> {
    let common = &cli.common;
    let mut flags = cli.overrides()?;
    flags
        .set("log.format", common.log_format.as_ref())
        .set("log.otlp_endpoint", common.otlp_endpoint.as_ref())
        .set("tls.cert", common.tls_cert.as_ref())
        .set("tls.key", common.tls_key.as_ref())
        .set("tls.ca_file", common.ca_file.as_ref());
    let mut config: C = crate::config::load(daemon, common.config.as_deref(), flags)?;
    config.load_secrets()?;
    let (server, log, tls) = config.sections();
    server.validate()?;
    log.validate()?;
    tls.validate()?;
    config.validate()?;
    Ok(config)
}

/// Loads the configuration and starts logging. `Err` carries the exit status when the process
/// should stop here: an invalid configuration (2), or `--check-config` done.
pub fn start<C: DaemonConfig + FlagTable, S: Subcommand>(
    daemon: &Daemon,
    cli: &DaemonCli<C, S>,
) -> Result<(C, Telemetry), ExitCode> {
    let config: C = load(daemon, cli).map_err(|e| {
        eprintln!("{}: {e}", daemon.name);
        ExitCode::from(2)
    })?;
    if cli.common.check_config {
        return Err(crate::config::print_checked(daemon, &config.redacted()));
    }
    let telemetry = crate::logging::init(daemon, config.sections().1).map_err(|e| {
        eprintln!("{}: {e}", daemon.name);
        ExitCode::FAILURE
    })?;
    Ok((config, telemetry))
}

/// What a daemon's `run` is given to stop on: SIGTERM or SIGINT ([`crate::shutdown::signal`]).
pub type Signal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The life of a daemon once its flags are parsed: configuration (or `--check-config`'s
/// answer), logging, `run` until SIGTERM or SIGINT, and the exit status.
pub async fn run_daemon<C, S, F, Fut>(daemon: &Daemon, cli: &DaemonCli<C, S>, run: F) -> ExitCode
where
    C: DaemonConfig + FlagTable,
    S: Subcommand,
    F: FnOnce(C, Signal) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let (config, _telemetry) = match start(daemon, cli) {
        Ok(started) => started,
        Err(exit) => return exit,
    };
    exit(run(config, Box::pin(crate::shutdown::signal())).await)
}

/// The exit status of a daemon's subcommand (`certs`, `jobs`, …); its error is printed with
/// its causes.
pub fn tool_exit<E: Display>(daemon: &Daemon, name: &str, outcome: Result<(), E>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{} {name}: {e:#}", daemon.name);
            ExitCode::FAILURE
        }
    }
}

/// Binds a listener, with an error that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// The exit status for how a daemon ended; a failure is logged.
pub fn exit<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            ExitCode::FAILURE
        }
    }
}
