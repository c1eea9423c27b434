//! A client for one OCI registry, shared by the edge cache (its upstreams) and the preheater (the
//! registries it resolves images from).
//!
//! Written here rather than taken from `oci-client` for two reasons. The edge is a pass-through
//! proxy: it forwards the caller's `Authorization`, every `Accept` line and `Range` as they came,
//! and hands the registry's challenges back so the caller authenticates at the real realm;
//! `oci-client` authenticates for its caller and answers parsed objects, so none of that fits.
//! And its current release needs reqwest 0.13 and aws-lc-rs, a second HTTP and TLS stack next to
//! the workspace's reqwest 0.12 and rustls on ring.
//!
//! What it does: [`RegistryClient::send`] sends one request as the caller shaped it and answers the
//! registry's response whatever its status; only a request without the caller's credential, from a
//! client that may authenticate itself ([`OwnAuth`]), gets the token dance (Basic, or a Bearer token
//! cached per scope). [`RegistryClient::manifest`] reads a manifest and verifies it. Challenge
//! parsing and token answers are pure and live in `damselfly_core::registry_auth`.

mod client;
mod error;
mod manifest;
mod reply;
mod tokens;

#[cfg(test)]
mod fake_registry_tests;

pub use client::{http_builder, registry_http, OwnAuth, RegistryClient, Request};
pub use error::{Error, Result};
pub use manifest::{content_type, media_type_in_body, read_bounded, Manifest, MANIFEST_ACCEPT};
pub use reply::PassedReply;
