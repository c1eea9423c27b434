//! The agent's own status (`GET /` and `GET /api/v1/status` on the ops listener, and
//! `peer-agent status`): what it holds and is fetching, where its bytes came from, what it
//! uploads, and what went wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use damselfly_server::page::bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};

use crate::metrics::SourceLabels;
use crate::state::AgentState;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentStatus {
    pub host_id: String,
    pub location: String,
    pub version: String,
    pub uptime_secs: u64,
    pub edges: Vec<String>,
    pub store: StoreStatus,
    /// Tasks still missing pieces.
    pub downloads: Vec<DownloadStatus>,
    /// Bytes downloaded since start, by source: `peer`, `edge`, `origin`.
    pub downloaded: BTreeMap<String, u64>,
    pub uploaded_bytes: u64,
    pub uploads_active: i64,
    pub upload_slots: u32,
    /// Pieces that failed their check, by source.
    pub bad_pieces: BTreeMap<String, u64>,
    pub origin_fallbacks: u64,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoreStatus {
    pub tasks: usize,
    pub complete: usize,
    /// Plain bytes of the tasks held (sealed on disk: one tag per piece more).
    pub bytes: u64,
    pub quota_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DownloadStatus {
    pub digest: String,
    pub size: u64,
    pub pieces_held: u64,
    pub pieces: u64,
}

const SOURCES: [&str; 3] = ["peer", "edge", "origin"];

fn by_source(family: &Family<SourceLabels, Counter>) -> BTreeMap<String, u64> {
    SOURCES
        .iter()
        .map(|source| {
            (
                source.to_string(),
                family.get_or_create(&SourceLabels { source }).get(),
            )
        })
        .collect()
}

pub fn report(state: &AgentState) -> AgentStatus {
    let metrics = &state.metrics;
    let (quota, tasks) = state.store.summary();
    let downloads: Vec<DownloadStatus> = tasks
        .iter()
        .filter(|(_, _, held, all)| held < all)
        .map(|(digest, size, held, all)| DownloadStatus {
            digest: digest.to_string(),
            size: *size,
            pieces_held: *held,
            pieces: *all,
        })
        .collect();
    let bad_pieces = by_source(&metrics.bad_pieces);
    let origin_fallbacks = metrics.origin_fallbacks.get();
    let mut warnings = Vec::new();
    if origin_fallbacks > 0 {
        warnings.push(format!(
            "{origin_fallbacks} downloads turned to the origin: the edges were unreachable or failing"
        ));
    }
    let bad: u64 = bad_pieces.values().sum();
    if bad > 0 {
        warnings.push(format!(
            "{bad} pieces failed their check and were fetched elsewhere"
        ));
    }
    AgentStatus {
        host_id: state.config.host_id(),
        location: state.config.location.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        edges: state.config.edges.clone(),
        store: StoreStatus {
            tasks: tasks.len(),
            complete: tasks.len() - downloads.len(),
            bytes: tasks.iter().map(|t| t.1).sum(),
            quota_bytes: quota,
        },
        downloads,
        downloaded: by_source(&metrics.download_bytes),
        uploaded_bytes: metrics.upload_bytes.get(),
        uploads_active: metrics.uploads_active.get(),
        upload_slots: state.config.upload.slots,
        bad_pieces,
        origin_fallbacks,
        warnings,
    }
}

/// `peer-agent status`: this host's agent's status, from its ops listener.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's ops address (`ops_listen`).
    #[arg(
        long,
        env = "DAMSELFLY_AGENT_OPS_URL",
        default_value = "http://127.0.0.1:5092"
    )]
    pub ops: String,
    /// Print the JSON report instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &StatusArgs) -> Result<()> {
    let url = format!("{}/api/v1/status", args.ops.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {}", args.ops))?;
    if !response.status().is_success() {
        bail!("{url}: {}", response.status());
    }
    let text = response.text().await?;
    if args.json {
        println!("{text}");
        return Ok(());
    }
    let s: AgentStatus = serde_json::from_str(&text)?;
    println!(
        "{} at {} · version {} · up {} s",
        s.host_id, s.location, s.version, s.uptime_secs
    );
    println!("edges: {}", s.edges.join(", "));
    println!(
        "held: {} tasks ({} complete), {} of {}",
        s.store.tasks,
        s.store.complete,
        bytes(s.store.bytes),
        bytes(s.store.quota_bytes)
    );
    let from: Vec<String> = s
        .downloaded
        .iter()
        .map(|(k, v)| format!("{k} {}", bytes(*v)))
        .collect();
    println!("downloaded from: {}", from.join(", "));
    println!(
        "uploaded: {} · uploads now {} of {} slots",
        bytes(s.uploaded_bytes),
        s.uploads_active,
        s.upload_slots
    );
    for d in &s.downloads {
        println!(
            "fetching {} ({}): {} / {} pieces",
            d.digest,
            bytes(d.size),
            d.pieces_held,
            d.pieces
        );
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
