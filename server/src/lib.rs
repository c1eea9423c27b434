//! Plumbing every Damselfly daemon shares, written once: layered configuration
//! (defaults → TOML file → environment → flags) with `--check-config`, logging and traces,
//! a readiness latch, the ops routes (`/healthz`, `/readyz`, `/metrics`), and one
//! connection-level serve function that bounds header time, open connections, concurrency,
//! request time and body size, and drains on SIGTERM within a grace period.
//!
//! A daemon's `main.rs` parses its flags ([`cli::parse`]), loads its configuration
//! ([`config::load`]), starts logging ([`logging::init`]), binds its listeners and hands them,
//! with its routers, to a [`Server`].

pub mod certs;
pub mod cli;
pub mod config;
mod connection;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod progress;
pub mod readiness;
mod request;
pub mod secret_file;
mod serve;
pub mod shutdown;
pub mod tls;

pub use config::ServerConfig;
pub use metrics::{MetricsRegistry, ServerMetrics};
pub use readiness::Readiness;
pub use serve::{Listener, Server};

/// Names a daemon: its binary name (log lines, the default config file
/// `/etc/damselfly/<name>.toml`) and the prefix of its environment variables.
#[derive(Clone, Copy, Debug)]
pub struct Daemon {
    pub name: &'static str,
    /// One line on what it is, for `--help` (its crate's description).
    pub about: &'static str,
    /// `DAMSELFLY_EDGE`: flags read `DAMSELFLY_EDGE_<FLAG>`, any config key
    /// `DAMSELFLY_EDGE__<SECTION>__<KEY>`.
    pub env_prefix: &'static str,
}

impl Daemon {
    pub const fn new(name: &'static str, env_prefix: &'static str, about: &'static str) -> Self {
        Daemon {
            name,
            about,
            env_prefix,
        }
    }
}
