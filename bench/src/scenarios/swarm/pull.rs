//! Every host pulls the image at once with its client inside its namespace.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use damselfly_test_support::image::BuiltImage;

use super::clients::HostClient;
use super::links::{LinkSample, Recorder};
use super::{host_label, CpuSample};
use crate::netns::{self, Host};

/// What a round of pulls took.
pub struct Round {
    /// Each host's completion time from the common start, in host order.
    pub times: Vec<Duration>,
    /// Busy share of all CPUs (everything on the machine).
    pub cpu_busy: f64,
    /// CPU seconds used by the bench's daemons (registry, edge, agents; not the clients).
    pub daemon_cpu_s: f64,
    /// Of which the edge's, and the hosts' (their agents; a client that has exited counts
    /// nothing).
    pub edge_cpu_s: f64,
    pub hosts_cpu_s: f64,
    /// What each link carried, every 100 ms.
    pub links: Vec<LinkSample>,
}

/// Starts every host's pull at the same instant; a host is done when its client exits, and
/// what it received is checked after. `origin` and `edge` are the namespaces of the registry
/// and the edge.
pub async fn all(
    hosts: &[Host],
    clients: &[HostClient],
    (origin, edge): (&Host, &Host),
    base: impl Fn(usize) -> String,
    image: &BuiltImage,
) -> Result<Round> {
    let namespaces = || hosts.iter().chain([origin, edge]).map(|h| h.ns.as_str());
    let daemon_cpu = netns::cpu_seconds(namespaces());
    let edge_cpu = netns::cpu_seconds([edge.ns.as_str()]);
    let hosts_cpu = netns::cpu_seconds(hosts.iter().map(|h| h.ns.as_str()));
    let cpu = CpuSample::now();
    let start = Instant::now();
    let recorder = Recorder::start(origin, edge, hosts, start)?;
    let pulls = hosts.iter().zip(clients).enumerate().map(|(i, (host, client))| {
        let base = base(i);
        async move {
            let fetched = client.fetch(host, &base, image).await;
            let done = start.elapsed();
            let context = || format!("{} pulling from {base}", host_label(host));
            let out = fetched.with_context(context)?;
            client.verify(&out, &base, image).await.with_context(context)?;
            Ok::<_, anyhow::Error>(done)
        }
    });
    let times = futures::future::try_join_all(pulls).await?;
    let (cpu_busy, _) = cpu.busy_since();
    let links = recorder.finish().await;
    Ok(Round {
        times,
        cpu_busy,
        daemon_cpu_s: netns::cpu_seconds(namespaces()) - daemon_cpu,
        edge_cpu_s: netns::cpu_seconds([edge.ns.as_str()]) - edge_cpu,
        hosts_cpu_s: netns::cpu_seconds(hosts.iter().map(|h| h.ns.as_str())) - hosts_cpu,
        links,
    })
}
