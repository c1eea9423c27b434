//! Every host pulls the image at once with curl inside its namespace.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use damselfly_test_support::image::BuiltImage;

use super::{blob_urls, host_label, CpuSample, REPOSITORY, TAG};
use crate::netns::{self, Host};

const MANIFEST_ACCEPT: &str = "Accept: application/vnd.oci.image.manifest.v1+json";
/// Blobs fetched at once per host, as containerd does by default (all three requests go out
/// together, hence `--parallel-immediate`: curl would otherwise wait on the first connection).
const PARALLEL_BLOBS: &str = "3";
/// Per curl run; far beyond any sane pull here, only there so a wedged run ends.
const MAX_SECS: &str = "1800";

/// What a round of pulls took.
pub struct Round {
    /// Each host's completion time from the common start, in host order.
    pub times: Vec<Duration>,
    /// Busy share of all CPUs (everything on the machine).
    pub cpu_busy: f64,
    /// CPU seconds used by the bench's daemons (registry, edge, agents; not curl).
    pub daemon_cpu_s: f64,
}

/// Starts every host's pull at the same instant. `servers` are the other namespaces whose
/// daemons serve the pulls.
pub async fn all(
    hosts: &[Host],
    servers: &[&Host],
    base: impl Fn(usize) -> String,
    image: &BuiltImage,
) -> Result<Round> {
    let namespaces = || hosts.iter().chain(servers.iter().copied()).map(|h| h.ns.as_str());
    let daemon_cpu = netns::cpu_seconds(namespaces());
    let cpu = CpuSample::now();
    let start = Instant::now();
    let pulls = hosts.iter().enumerate().map(|(i, host)| {
        let base = base(i);
        async move {
            one(host, &base, image)
                .await
                .with_context(|| format!("{} pulling from {base}", host_label(host)))?;
            Ok::<_, anyhow::Error>(start.elapsed())
        }
    });
    let times = futures::future::try_join_all(pulls).await?;
    let (cpu_busy, _) = cpu.busy_since();
    Ok(Round {
        times,
        cpu_busy,
        daemon_cpu_s: netns::cpu_seconds(namespaces()) - daemon_cpu,
    })
}

/// The manifest, then every blob; checks each answer and the byte count.
async fn one(host: &Host, base: &str, image: &BuiltImage) -> Result<()> {
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
    let out = curl(host, &args).await?;
    let mut received = 0;
    let mut answers = 0;
    for line in out.lines() {
        let (code, size) = line.split_once(' ').context("unexpected curl output")?;
        ensure!(code == "200", "a blob answered {code}");
        received += size.parse::<u64>().context("curl size")?;
        answers += 1;
    }
    ensure!(
        answers == urls.len(),
        "{answers} of {} blobs answered",
        urls.len()
    );
    ensure!(
        received == image.total_blob_bytes,
        "received {received} bytes, the image has {}",
        image.total_blob_bytes
    );
    Ok(())
}

async fn curl(host: &Host, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &host.ns,
        "curl",
        "-sS",
        "--fail",
        "--noproxy",
        "*",
    ])
    .args(["--max-time", MAX_SECS])
    .args(args)
    .kill_on_drop(true);
    let out = cmd.output().await.context("running curl")?;
    if !out.status.success() {
        bail!(
            "curl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
