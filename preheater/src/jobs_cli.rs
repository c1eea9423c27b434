//! `preheater jobs`: the job API from the command line.
//!
//! ```text
//! preheater jobs --url https://preheater:8443 --token-file api.token create registry.example.com/team/app:v1 --wait
//! preheater jobs … get 3f2a…            # one job, item counts per region
//! preheater jobs … list
//! ```
//!
//! `--wait` follows the job with one progress bar per region (items cached of items) until it
//! succeeds or fails; the exit status says which.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::job::Job;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The preheater's URL.
    #[arg(
        long,
        env = "DAMSELFLY_PREHEATER_URL",
        default_value = "https://127.0.0.1:8443"
    )]
    pub url: String,
    /// File holding the job API's token (mode 0600); none when the API takes no token.
    #[arg(long, env = "DAMSELFLY_PREHEATER_API_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA that signed the preheater's certificate (default: the system's CAs).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub action: JobsAction,
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Warm an image (host[:port]/repository[:tag][@digest]) at the edges.
    Create {
        image: String,
        /// Only these platforms of a multi-platform image (os/arch[/variant]; repeatable).
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// Only these regions (repeatable; default: every configured one).
        #[arg(long = "region")]
        regions: Vec<String>,
        /// Follow the job to its end, with a progress bar per region.
        #[arg(long)]
        wait: bool,
    },
    /// One job: its state and what is cached per region.
    Get {
        id: String,
        /// Follow the job to its end, with a progress bar per region.
        #[arg(long)]
        wait: bool,
    },
    /// The newest jobs.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<serde_json::Value> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("asking {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{status}: {}", text.trim());
        }
        Ok(serde_json::from_str(&text)?)
    }

    async fn job(&self, id: &str) -> Result<Job> {
        let value = self
            .call(self.client.get(format!("{}/api/v1/jobs/{id}", self.base)))
            .await?;
        Ok(serde_json::from_value(value)?)
    }
}

pub async fn run(args: &JobsArgs) -> Result<()> {
    let (client, token) =
        damselfly_server::cli::api_client(args.ca.as_deref(), args.token_file.as_deref(), "api_token")
            .map_err(anyhow::Error::msg)?;
    let api = Api {
        client,
        base: args.url.trim_end_matches('/').to_string(),
        token,
    };
    match &args.action {
        JobsAction::Create {
            image,
            platforms,
            regions,
            wait,
        } => {
            let mut request = json!({ "image": image, "platforms": platforms });
            if !regions.is_empty() {
                request["regions"] = json!(regions);
            }
            let created = api
                .call(
                    api.client
                        .post(format!("{}/api/v1/jobs", api.base))
                        .json(&request),
                )
                .await?;
            let job: Job = serde_json::from_value(created)?;
            println!("job {}", job.id);
            if *wait {
                follow(&api, job).await?;
            }
        }
        JobsAction::Get { id, wait } => {
            let job = api.job(id).await?;
            if *wait {
                follow(&api, job).await?;
            } else {
                print_job(&job);
            }
        }
        JobsAction::List { limit } => {
            let listed = api
                .call(api.client.get(format!("{}/api/v1/jobs?limit={limit}", api.base)))
                .await?;
            let jobs: Vec<Job> = serde_json::from_value(listed["jobs"].clone())?;
            for job in &jobs {
                println!(
                    "{}  {:<9}  {}/{}  {}",
                    job.id,
                    state_name(job),
                    job.registry,
                    job.repository,
                    job.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

fn state_name(job: &Job) -> String {
    format!("{:?}", job.state).to_lowercase()
}

fn print_job(job: &Job) {
    println!("job {}: {}", job.id, state_name(job));
    for region in &job.regions {
        let (done, all) = job.cached_at(region);
        println!("  {region}: {done}/{all} items cached");
    }
    if let Some(e) = &job.error {
        println!("  error: {e}");
    }
}

/// Polls the job until it ends, one bar per region; fails when the job failed.
async fn follow(api: &Api, mut job: Job) -> Result<()> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} items {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let regions: Vec<(String, ProgressBar)> = job
        .regions
        .iter()
        .map(|region| {
            let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
            bar.set_prefix(region.clone());
            (region.clone(), bar)
        })
        .collect();
    loop {
        for (region, bar) in &regions {
            let (done, all) = job.cached_at(region);
            bar.set_length(all);
            bar.set_position(done);
            bar.set_message(state_name(&job));
        }
        if job.state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = api.job(&job.id).await?;
    }
    for (_, bar) in &regions {
        bar.finish();
    }
    print_job(&job);
    if job.state != crate::job::JobState::Succeeded {
        bail!("job {} {}", job.id, state_name(&job));
    }
    Ok(())
}
