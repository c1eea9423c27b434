//! The Damselfly edge cache: a pull-through OCI registry cache for one region that stores blobs
//! as sealed pieces and serves them to runtimes (`/v2/`) and to peer agents (`/api/v1`,
//! `/pieces`). See ARCHITECTURE.md for the data flow.

pub mod access;
pub mod admin_cli;
pub mod certs;
pub mod chain;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod error;
pub mod file_digests;
pub mod http;
pub mod metrics;
pub mod scheduler;
mod secret;
pub mod server;
pub mod state;
pub mod status;
pub mod store;
pub mod tickets;
pub mod upstream;

pub use config::{Cli, Config};
pub use server::{run, serve};
pub use state::AppState;
