//! The Damselfly preheater: receives registry notifications and Harbor webhooks and warms the
//! regional edge caches — each blob as soon as it is pushed, each tagged image down to its last
//! layer — with durable, deduplicated, observable jobs. See ARCHITECTURE.md ("Warm path").

pub mod config;
pub mod edge;
mod edge_check;
pub mod error;
pub mod events;
pub mod http;
pub mod job;
pub mod jobs_cli;
pub mod metrics;
mod platform;
pub mod provider;
pub mod registry;
pub mod resolve;
pub mod runner;
pub mod server;
pub mod state;
pub mod store;
pub mod warm;

pub use config::{Cli, Config};
pub use error::{Error, Result};
pub use server::{run, serve};
pub use state::AppState;
