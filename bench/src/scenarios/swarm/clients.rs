//! The pulling client on each host: curl (exactly a runtime's requests, nothing else), skopeo
//! (containers/image: its own concurrency, hashing and disk writes) or containerd's `ctr content
//! fetch` (what a Kubernetes node pulls with). Each checks what it received.
//!
//! `ctr` needs a containerd per host: one daemon shared by the hosts would deduplicate their
//! downloads in its content store. The daemons run outside the namespaces (only `ctr`, which
//! does the registry HTTP, runs in the host's), and start before the round is timed.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::ValueEnum;
use damselfly_test_support::containerd::{self, Containerd};
use damselfly_test_support::image::BuiltImage;

use super::{blob_urls, REPOSITORY, TAG};
use crate::netns::Host;

const MANIFEST_ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json";
/// Blobs fetched at once per host by curl, as containerd does by default (all three requests go
/// out together, hence `--parallel-immediate`: curl would otherwise wait on the first
/// connection).
const PARALLEL_BLOBS: &str = "3";
/// Per client run; far beyond any sane pull here, only there so a wedged run ends.
const MAX_SECS: u64 = 1800;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Client {
    /// The manifest, then the blobs three at a time, to /dev/null.
    Curl,
    /// `skopeo copy` into a directory.
    Skopeo,
    /// `ctr content fetch` into a containerd of the host's own.
    Ctr,
}

impl Client {
    pub fn name(&self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }
}

/// One host's client, ready to pull: its scratch directory, its containerd for `ctr`.
pub struct HostClient {
    client: Client,
    scratch: tempfile::TempDir,
    containerd: Option<Containerd>,
}

impl HostClient {
    /// Prepares a client per host (untimed: containerd takes about a second to start).
    pub async fn for_hosts(client: Client, hosts: usize) -> Result<Vec<HostClient>> {
        let prepared = (0..hosts).map(|_| async move {
            let containerd = match client {
                Client::Ctr => Some(Containerd::start().await?),
                _ => None,
            };
            Ok::<_, anyhow::Error>(HostClient {
                client,
                scratch: tempfile::Builder::new()
                    .prefix("damselfly-bench-client-")
                    .tempdir()?,
                containerd,
            })
        });
        futures::future::try_join_all(prepared).await
    }

    /// Pulls the image from `base` (`http://ip:port`) inside `host`'s namespace: only the
    /// client's own run, which is what the round times. Its checks come after, in
    /// [`HostClient::verify`].
    pub async fn fetch(&self, host: &Host, base: &str, image: &BuiltImage) -> Result<String> {
        match self.client {
            Client::Curl => curl_fetch(host, base, image).await,
            Client::Skopeo => skopeo_fetch(host, base, &self.skopeo_dir()).await,
            Client::Ctr => ctr_fetch(host, base, self.containerd()?).await,
        }
    }

    /// Checks what [`HostClient::fetch`] received (`out`: its output), then removes it so the
    /// next round starts empty.
    pub async fn verify(&self, out: &str, base: &str, image: &BuiltImage) -> Result<()> {
        match self.client {
            Client::Curl => curl_verify(out, image),
            Client::Skopeo => {
                let dir = self.skopeo_dir();
                let checked = skopeo_verify(&dir, image);
                // 64 MiB per host and round: gone at once, not at the end of the run.
                let _ = std::fs::remove_dir_all(&dir);
                checked
            }
            Client::Ctr => ctr_verify(base, image, self.containerd()?).await,
        }
    }

    fn skopeo_dir(&self) -> PathBuf {
        self.scratch.path().join("image")
    }

    fn containerd(&self) -> Result<&Containerd> {
        self.containerd.as_ref().context("no containerd for ctr")
    }
}

fn authority(base: &str) -> &str {
    base.trim_start_matches("http://").trim_end_matches('/')
}

/// The manifest, then every blob; curl's report line per blob.
async fn curl_fetch(host: &Host, base: &str, image: &BuiltImage) -> Result<String> {
    let manifest = format!("{base}/v2/{REPOSITORY}/manifests/{TAG}");
    curl(host, &["-H", MANIFEST_ACCEPT, "-o", "/dev/null", &manifest]).await?;
    let urls = blob_urls(base, image);
    let mut args = vec![
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        PARALLEL_BLOBS,
        "-w",
        "%{http_code} %{size_download}\n",
    ];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    curl(host, &args).await
}

/// Every blob answered 200, and the bytes add up to the image.
fn curl_verify(out: &str, image: &BuiltImage) -> Result<()> {
    let mut received = 0;
    let mut answers = 0;
    for line in out.lines() {
        let (code, size) = line.split_once(' ').context("unexpected curl output")?;
        ensure!(code == "200", "a blob answered {code}");
        received += size.parse::<u64>().context("curl size")?;
        answers += 1;
    }
    ensure!(
        answers == image.blobs.len(),
        "{answers} of {} blobs answered",
        image.blobs.len()
    );
    ensure!(
        received == image.total_blob_bytes,
        "received {received} bytes, the image has {}",
        image.total_blob_bytes
    );
    Ok(())
}

async fn curl(host: &Host, args: &[&str]) -> Result<String> {
    let max = MAX_SECS.to_string();
    let mut all = vec!["curl", "-sS", "--fail", "--noproxy", "*", "--max-time", &max];
    all.extend_from_slice(args);
    in_namespace(host, &all).await
}

/// `skopeo copy` (which checks every blob's digest) into `dir`.
async fn skopeo_fetch(host: &Host, base: &str, dir: &Path) -> Result<String> {
    let source = format!("docker://{}/{REPOSITORY}:{TAG}", authority(base));
    let dest = format!("dir:{}", dir.display());
    in_namespace(
        host,
        &[
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &source,
            &dest,
        ],
    )
    .await
}

/// The blob bytes skopeo wrote add up to the image.
fn skopeo_verify(dir: &Path, image: &BuiltImage) -> Result<()> {
    let mut received = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name != "manifest.json" && name != "version" {
            received += entry.metadata()?.len();
        }
    }
    ensure!(
        received == image.total_blob_bytes,
        "skopeo wrote {received} blob bytes, the image has {}",
        image.total_blob_bytes
    );
    Ok(())
}

fn ctr_reference(base: &str) -> String {
    format!("{}/{REPOSITORY}:{TAG}", authority(base))
}

/// `ctr content fetch` (containerd checks every digest as it writes).
async fn ctr_fetch(host: &Host, base: &str, containerd: &Containerd) -> Result<String> {
    let reference = ctr_reference(base);
    let socket = containerd.socket().to_string_lossy().into_owned();
    in_namespace(
        host,
        &[
            "ctr",
            "-a",
            &socket,
            "-n",
            containerd::NAMESPACE,
            "content",
            "fetch",
            "--plain-http",
            &reference,
        ],
    )
    .await
}

/// The image record names the image's manifest; then record and content go (collected
/// synchronously).
async fn ctr_verify(base: &str, image: &BuiltImage, containerd: &Containerd) -> Result<()> {
    let reference = ctr_reference(base);
    let digest = containerd.image_digest(&reference).await?;
    ensure!(
        digest.as_deref() == Some(image.top_digest.as_str()),
        "ctr recorded {digest:?} for {reference}, the image is {}",
        image.top_digest
    );
    containerd.remove_image(&reference).await
}

/// Runs `args` inside `host`'s namespace with a bounded time; stdout on success.
async fn in_namespace(host: &Host, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &host.ns])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(MAX_SECS), cmd.output())
        .await
        .with_context(|| format!("{} ran past {MAX_SECS} s", args[0]))?
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            args[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
