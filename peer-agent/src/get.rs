//! `peer-agent get URL -o FILE`: a plain file through this host's agent, so it travels the same
//! P2P path as image layers (rack neighbours first, the edge, the file's server last).
//!
//! The file is written to `FILE.part` and renamed into place only once complete (and, with
//! `--digest`, only if its sha256 matches), so a failed or interrupted download never leaves a
//! complete-looking file behind. With `--digest`, each byte is hashed once, as it is written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use damselfly_core::{Digest, Sha256Stream};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The file's URL (http or https; must lie under a prefix the edges allow in `[files]`).
    pub url: String,
    /// Where to write the file (`-` for standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Expected sha256 (`sha256:<hex>`); the file is kept only if it matches.
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<Digest>,
    /// This host's agent (its mirror address).
    #[arg(long, env = "DAMSELFLY_AGENT_URL", default_value = "http://127.0.0.1:5090")]
    pub agent: String,
    /// No progress bar, even on a terminal.
    #[arg(short, long)]
    pub quiet: bool,
}

pub async fn run(args: &GetArgs) -> Result<()> {
    let url = damselfly_core::normalise_url(&args.url)?;
    let http = reqwest::Client::builder()
        // The file's own bytes (the digest is over those), never a re-encoding.
        .no_gzip()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut query = vec![("url", url.clone())];
    if let Some(d) = &args.digest {
        query.push(("digest", d.to_string()));
    }
    let endpoint = format!("{}/api/v1/files", args.agent.trim_end_matches('/'));
    let response = http
        .get(&endpoint)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {}", args.agent))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url}: {status}: {}", body.trim());
    }
    let size = response.content_length();
    let progress = progress_bar(size, args.quiet);
    let to_stdout = args.output.as_os_str() == "-";
    let part = part_path(&args.output);
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let file = std::fs::File::create(&part).with_context(|| format!("create {}", part.display()))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
    };
    let result = async {
        // Hashed only when there is a digest to check: the pieces were already verified
        // against the edge's table on their way in.
        let mut hash = args.digest.map(|_| Sha256Stream::new());
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("{url}: transfer broke after {received} bytes"))?;
            if let Some(h) = hash.as_mut() {
                h.update(&chunk);
            }
            out.write_all(&chunk)?;
            received += chunk.len() as u64;
            progress.set_position(received);
        }
        out.flush()?;
        if let Some(size) = size.filter(|s| *s != received) {
            bail!("{url}: got {received} of {size} bytes");
        }
        if let (Some(hash), Some(want)) = (hash, &args.digest) {
            let got = hash.finish();
            if got != *want {
                bail!("{url}: content is {got}, not the expected {want}");
            }
        }
        Ok(())
    }
    .await;
    drop(out);
    progress.finish_and_clear();
    match result {
        Ok(()) => {
            if !to_stdout {
                std::fs::rename(&part, &args.output)
                    .with_context(|| format!("rename {} into place", part.display()))?;
                match &args.digest {
                    Some(digest) => eprintln!("{} {digest} (verified)", args.output.display()),
                    None => eprintln!("{}", args.output.display()),
                }
            }
            Ok(())
        }
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&part);
            }
            Err(e)
        }
    }
}

fn part_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    output.with_file_name(name)
}

/// A byte progress bar on a terminal's stderr; hidden otherwise (indicatif checks the terminal).
fn progress_bar(size: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    match size {
        Some(size) => {
            let bar = ProgressBar::new(size);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        }
        None => ProgressBar::new_spinner(),
    }
}
