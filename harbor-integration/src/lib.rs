//! Damselfly and Harbor.
//!
//! - [`provider`]: the API Harbor's "P2P Preheat" drives when its provider is "Dragonfly" —
//!   `/healthy` and `/oapi/v1/jobs` (Harbor ≥ 2.12), `/_ping` and `/preheats` (Harbor 2.1–2.11).
//!   The routes are generic over a [`provider::PreheatBackend`]; the preheater implements it
//!   with its durable job store and mounts the routes.
//! - [`harbor`] and [`register`]: a client for Harbor's REST API and the idempotent `register`
//!   command that points a Harbor project's webhook, P2P provider instance and preheat policy at
//!   the preheater.

pub mod cli;
pub mod harbor;
pub mod manifest_url;
pub mod provider;
pub mod register;
pub mod scope;
pub mod time;

pub use manifest_url::ManifestUrl;
pub use scope::Scope;
