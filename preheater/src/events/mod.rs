//! Webhook payloads and what they ask of the preheater.
//!
//! Each receiver turns a delivery into [`ClassifiedEvent`]s: a deduplication key (the sender
//! retries, so the same event arrives more than once), bounded labels for metrics, and the
//! [`Intent`]s — what to warm, if anything.

pub mod distribution;
pub mod harbor;

use damselfly_core::{Digest, Reference, RepositoryName};

/// What an event asks the preheater to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Warm one blob at every edge (blob push, cross-repository mount).
    Blob {
        registry: String,
        repository: RepositoryName,
        digest: Digest,
        size: Option<u64>,
    },
    /// Resolve an image (index → platforms → manifests → config + layers) and warm all of it,
    /// including the tag mapping when `reference` is a tag.
    Image {
        registry: String,
        repository: RepositoryName,
        reference: Reference,
        /// The manifest a push event says the tag now names. Resolution then reads the manifest
        /// by this digest: the registry announces a tagged push before the tag is readable.
        digest: Option<Digest>,
    },
    /// Warm one manifest by digest (the children of an index are pushed by digest, untagged).
    Manifest {
        registry: String,
        repository: RepositoryName,
        digest: Digest,
    },
}

impl Intent {
    pub fn registry(&self) -> &str {
        match self {
            Intent::Blob { registry, .. }
            | Intent::Image { registry, .. }
            | Intent::Manifest { registry, .. } => registry,
        }
    }
}

/// One event as understood by a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedEvent {
    /// Same value for every delivery of the same event.
    pub dedupe_key: String,
    /// Metric label: `blob`, `manifest`, `artifact` or `other`.
    pub kind: &'static str,
    /// Metric label: `push`, `pull`, `mount`, `delete`, `scan` … or `unknown`.
    pub action: &'static str,
    /// What to warm; empty for events that need no work (pulls, deletes, unknown actions).
    pub intents: Vec<Intent>,
    /// Why nothing is warmed, when `intents` is empty.
    pub ignored: Option<String>,
}

/// `http://127.0.0.1:5000/v2/...` → `127.0.0.1:5000`; `https://r.example.com/...` → `r.example.com`.
pub fn host_of_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}
