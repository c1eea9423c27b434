//! What every link carried, over time: the switch's port counters sampled every 100 ms during a
//! round. A host's port sends what the host receives and receives what it sends, so one
//! process in the switch's namespace reads every link at once and the daemons are not asked
//! anything. From the samples: when the edge had the whole image, how fast it got it, and how
//! long the hosts took after that (`--timeline` prints the time in between, step by step).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::netns::{Host, SWITCH};

const EVERY: &str = "0.1";

/// Bytes each link carried from the start of the round, at one instant.
#[derive(Clone, Debug, Default)]
pub struct LinkSample {
    /// Seconds since the round started.
    pub at: f64,
    pub origin_out: u64,
    pub edge_in: u64,
    pub edge_out: u64,
    pub hosts_in: u64,
    pub hosts_out: u64,
}

/// The counters at one instant: when, and per port its (received, sent) bytes.
type RawSample = (Duration, HashMap<String, (u64, u64)>);

/// Reads the switch's counters until [`Recorder::finish`].
pub struct Recorder {
    child: tokio::process::Child,
    reader: JoinHandle<Vec<RawSample>>,
    origin: String,
    edge: String,
    hosts: Vec<String>,
}

impl Recorder {
    /// Starts sampling; `start` is the round's common start.
    pub fn start(origin: &Host, edge: &Host, hosts: &[Host], start: Instant) -> Result<Recorder> {
        let script = format!(
            "while :; do echo T; grep -H . /sys/class/net/p-*/statistics/rx_bytes \
             /sys/class/net/p-*/statistics/tx_bytes; sleep {EVERY}; done"
        );
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", SWITCH, "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("sampling the switch's counters")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut samples: Vec<RawSample> = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "T" {
                    samples.push((start.elapsed(), HashMap::new()));
                    continue;
                }
                // /sys/class/net/p-h01/statistics/rx_bytes:12345
                let Some((path, value)) = line.split_once(':') else {
                    continue;
                };
                let mut parts = path.split('/').skip(4);
                let (Some(port), Some(_), Some(counter)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let (Some((_, ports)), Ok(value)) = (samples.last_mut(), value.parse::<u64>()) else {
                    continue;
                };
                let entry = ports.entry(port.to_string()).or_default();
                match counter {
                    "rx_bytes" => entry.0 = value,
                    "tx_bytes" => entry.1 = value,
                    _ => {}
                }
            }
            samples
        });
        Ok(Recorder {
            child,
            reader,
            origin: origin.port().to_string(),
            edge: edge.port().to_string(),
            hosts: hosts.iter().map(|h| h.port().to_string()).collect(),
        })
    }

    /// Stops sampling; the samples as bytes since the first one.
    pub async fn finish(mut self) -> Vec<LinkSample> {
        let _ = self.child.kill().await;
        let raw = self.reader.await.unwrap_or_default();
        // A sample cut off by the kill may lack ports: only complete ones count.
        let want = 2 + self.hosts.len();
        let complete: Vec<_> = raw.into_iter().filter(|(_, p)| p.len() >= want).collect();
        let Some((_, first)) = complete.first().cloned() else {
            return Vec::new();
        };
        // The port receives what its host sends (rx) and sends what its host receives (tx).
        let get = |ports: &HashMap<String, (u64, u64)>, port: &str, tx: bool| {
            let now = ports.get(port).copied().unwrap_or_default();
            let zero = first.get(port).copied().unwrap_or_default();
            if tx {
                now.1.saturating_sub(zero.1)
            } else {
                now.0.saturating_sub(zero.0)
            }
        };
        complete
            .iter()
            .map(|(at, ports)| LinkSample {
                at: at.as_secs_f64(),
                origin_out: get(ports, &self.origin, false),
                edge_in: get(ports, &self.edge, true),
                edge_out: get(ports, &self.edge, false),
                hosts_in: self.hosts.iter().map(|h| get(ports, h, true)).sum(),
                hosts_out: self.hosts.iter().map(|h| get(ports, h, false)).sum(),
            })
            .collect()
    }
}

/// When the edge had received `image_bytes` (the first sample at or past them), and the mean
/// rate until then in Mbit/s, from the first sample in which it received anything.
pub fn edge_ingest(samples: &[LinkSample], image_bytes: u64) -> Option<(f64, f64, f64)> {
    let first = samples.iter().find(|s| s.edge_in > 0)?;
    let done = samples.iter().find(|s| s.edge_in >= image_bytes)?;
    let mbit = done.edge_in as f64 * 8.0 / 1e6 / (done.at - first.at).max(1e-3);
    Some((first.at, done.at, mbit))
}

/// Rows every `step` seconds: Mbit/s on the origin's and the edge's links, and the hosts' mean.
pub fn every(samples: &[LinkSample], hosts: usize, step: f64) -> Vec<[f64; 6]> {
    let mut rows = Vec::new();
    let mut previous = LinkSample::default();
    let mut next_row = step;
    for s in samples {
        if s.at + 1e-9 < next_row && !std::ptr::eq(s, samples.last().unwrap_or(s)) {
            continue;
        }
        let span = (s.at - previous.at).max(1e-3);
        let mbit = |now: u64, before: u64| (now - before.min(now)) as f64 * 8.0 / 1e6 / span;
        rows.push([
            s.at,
            mbit(s.origin_out, previous.origin_out),
            mbit(s.edge_in, previous.edge_in),
            mbit(s.edge_out, previous.edge_out),
            mbit(s.hosts_in, previous.hosts_in) / hosts.max(1) as f64,
            mbit(s.hosts_out, previous.hosts_out) / hosts.max(1) as f64,
        ]);
        previous = s.clone();
        next_row = (s.at / step).floor() * step + step;
    }
    rows
}
