//! `edge-cache admin`: the admin API from the command line.
//!
//! ```text
//! edge-cache admin --edge https://edge.eu.internal:5080 --token-file /etc/damselfly/admin.token \
//!     --ca /etc/damselfly/ca.crt blobs
//! edge-cache admin … purge sha256:…        # fetched again on its next pull
//! edge-cache admin … pin sha256:…          # never evicted (survives restarts)
//! edge-cache admin … purge-repository registry.example.com/team/app
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::Method;

use crate::store::{BlobListing, TagListing};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The edge's URL, e.g. https://edge.eu.internal:5080.
    #[arg(long, env = "DAMSELFLY_EDGE_URL", value_name = "URL")]
    pub edge: String,
    /// File holding the edge's admin_token (mode 0600).
    #[arg(long, env = "DAMSELFLY_EDGE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: PathBuf,
    /// PEM CA that signed the edge's certificate (default: the system's CAs).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// The blobs held: digest, size, last read, pinned; most recently read first.
    Blobs,
    /// The tag mappings held: registry/repository:tag and its digest.
    Tags,
    /// Delete a blob now; the next pull fetches it from the upstream again.
    Purge { digest: String },
    /// Keep a blob whatever the quota pressure (also one not cached yet, once it arrives).
    Pin { digest: String },
    /// Let a pinned blob be evicted again.
    Unpin { digest: String },
    /// Forget a tag mapping (registry/repository:tag); its next pull asks the upstream.
    PurgeTag { tag: String },
    /// Forget every tag mapping of a repository (registry/repository).
    PurgeRepository { name: String },
}

pub async fn run(args: &AdminArgs) -> Result<()> {
    let (client, token) =
        damselfly_server::cli::api_client(args.ca.as_deref(), Some(&args.token_file), "admin_token")
            .map_err(anyhow::Error::msg)?;
    let token = token.context("no admin token")?;
    let base = args.edge.trim_end_matches('/');
    let call = |method: Method, path: String| {
        client
            .request(method, format!("{base}/api/v1/admin/{path}"))
            .bearer_auth(&token)
            .send()
    };
    let (method, path) = match &args.action {
        AdminAction::Blobs => (Method::GET, "blobs".to_string()),
        AdminAction::Tags => (Method::GET, "tags".to_string()),
        AdminAction::Purge { digest } => (Method::DELETE, format!("blobs/{digest}")),
        AdminAction::Pin { digest } => (Method::PUT, format!("pins/{digest}")),
        AdminAction::Unpin { digest } => (Method::DELETE, format!("pins/{digest}")),
        AdminAction::PurgeTag { tag } => (Method::DELETE, format!("tags/{tag}")),
        AdminAction::PurgeRepository { name } => (Method::DELETE, format!("repositories/{name}")),
    };
    let response = call(method, path)
        .await
        .with_context(|| format!("asking {base}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{status}: {}", body.trim());
    }
    match &args.action {
        AdminAction::Blobs => {
            let blobs: Vec<BlobListing> = serde_json::from_str(&body)?;
            println!("{:<73} {:>14} {:>14} PINNED", "DIGEST", "BYTES", "LAST READ (s)");
            let now = crate::store::now_millis();
            for b in &blobs {
                let ago = now.saturating_sub(b.last_access_ms) / 1000;
                println!(
                    "{:<73} {:>14} {:>14} {}",
                    b.digest,
                    b.size,
                    ago,
                    if b.pinned { "yes" } else { "" }
                );
            }
            println!(
                "{} blobs, {} bytes",
                blobs.len(),
                blobs.iter().map(|b| b.size).sum::<u64>()
            );
        }
        AdminAction::Tags => {
            let tags: Vec<TagListing> = serde_json::from_str(&body)?;
            for t in &tags {
                println!("{}  {}", t.tag, t.digest);
            }
            println!("{} tags", tags.len());
        }
        AdminAction::PurgeTag { .. } | AdminAction::PurgeRepository { .. } => println!("{}", body.trim()),
        _ => println!("done"),
    }
    Ok(())
}
