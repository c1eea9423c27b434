//! The swarm's figures: completion times against the lower bound and the direct pulls, and
//! where the bytes came from.

use std::time::Duration;

use damselfly_test_support::image::BuiltImage;
use serde_json::json;

use super::clients::Client;
use super::links::{self, LinkSample};
use super::pull::Round;
use super::Setup;
use crate::report::{json_line, ratio, secs, table, MIB};

/// Targets for the full system at equal links (the project's stated goals).
const TARGET_VS_BOUND: f64 = 1.5;
const TARGET_SPEEDUP: f64 = 4.0;

pub struct Links {
    pub hosts: usize,
    pub host_mbit: u64,
    pub uplink_mbit: u64,
    pub rack_size: usize,
    /// Agents' upload rate limit, percent of their link (0: none).
    pub agent_upload_share: u64,
    pub client: Client,
}

impl Links {
    /// The Kumar-Ross bound for `image` on these links, in seconds.
    pub fn bound(&self, image: &BuiltImage) -> f64 {
        let bps = |mbit: u64| mbit as f64 * 1e6 / 8.0;
        let host_rates = vec![bps(self.host_mbit); self.hosts];
        lower_bound(
            image.total_blob_bytes as f64,
            bps(self.uplink_mbit),
            &host_rates,
            &host_rates,
        )
    }
}

/// Blob bytes by where they came from.
#[derive(Default, Clone, Copy)]
pub struct Bytes {
    /// Sent by the origin registry.
    pub origin: u64,
    /// Sent by the edge (whole blobs in `edge`, pieces in `damselfly`).
    pub edge: u64,
    /// Sent by other agents.
    pub peer: u64,
    /// The pieces the edge stored: their plaintext bytes, and their sealed bytes (below the
    /// plaintext when pieces were compressed).
    pub stored_plain: u64,
    pub stored_sealed: u64,
}

pub struct Outcome {
    setup: Setup,
    /// Per host, from the common start.
    times: Vec<Duration>,
    cpu_busy: f64,
    daemon_cpu_s: f64,
    edge_cpu_s: f64,
    hosts_cpu_s: f64,
    bytes: Bytes,
    links: Vec<LinkSample>,
}

/// When the edge had the whole image and how fast it got it; what came after.
#[derive(Clone, Copy)]
pub struct Ingest {
    /// Seconds from the start to the edge's first and last byte from the origin.
    pub first: f64,
    pub done: f64,
    /// Mean Mbit/s in between.
    pub mbit: f64,
}

impl Outcome {
    pub fn new(setup: Setup, round: Round, bytes: Bytes) -> Outcome {
        let mut times = round.times;
        times.sort();
        Outcome {
            setup,
            times,
            cpu_busy: round.cpu_busy,
            daemon_cpu_s: round.daemon_cpu_s,
            edge_cpu_s: round.edge_cpu_s,
            hosts_cpu_s: round.hosts_cpu_s,
            bytes,
            links: round.links,
        }
    }

    /// The edge's transfer from the origin, for setups with an edge.
    pub fn ingest(&self, image_bytes: u64) -> Option<Ingest> {
        if self.setup == Setup::Direct {
            return None;
        }
        let (first, done, mbit) = links::edge_ingest(&self.links, image_bytes)?;
        Some(Ingest { first, done, mbit })
    }

    pub fn setup(&self) -> Setup {
        self.setup
    }

    pub fn bytes(&self) -> Bytes {
        self.bytes
    }

    pub fn cpu_busy(&self) -> f64 {
        self.cpu_busy
    }

    /// CPU seconds of the edge, and of the hosts' daemons, during the round.
    pub fn cpu_seconds(&self) -> (f64, f64) {
        (self.edge_cpu_s, self.hosts_cpu_s)
    }

    pub fn all_done(&self) -> f64 {
        self.times.last().map_or(0.0, |d| secs(*d))
    }

    /// Nearest-rank percentile.
    pub fn percentile(&self, p: f64) -> f64 {
        let rank = ((p * self.times.len() as f64).ceil() as usize).clamp(1, self.times.len().max(1));
        self.times.get(rank - 1).map_or(0.0, |d| secs(*d))
    }
}

/// Kumar & Ross's minimum distribution time of F bytes from a source with uplink `u_s` to
/// hosts with uplinks `u` and downlinks `d` (bytes per second).
pub fn lower_bound(f: f64, u_s: f64, u: &[f64], d: &[f64]) -> f64 {
    let d_min = d.iter().copied().fold(f64::INFINITY, f64::min);
    let n = u.len() as f64;
    let sum_u: f64 = u.iter().sum();
    (f / u_s).max(f / d_min).max(n * f / (u_s + sum_u))
}

/// The table, the targets and the JSON line; with `timeline` (a step in seconds), each setup's
/// links step by step.
pub fn print(links: &Links, image: &BuiltImage, outcomes: &[Outcome], timeline: Option<f64>) {
    let f = image.total_blob_bytes as f64;
    let bound = links.bound(image);
    let direct = outcomes
        .iter()
        .find(|o| o.setup == Setup::Direct)
        .map(Outcome::all_done);
    let mib = |b: u64| format!("{:.0}", b as f64 / MIB as f64);
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let ingest = o.ingest(image.total_blob_bytes);
            vec![
                o.setup.name(),
                format!("{:.1}", o.all_done()),
                format!("{:.1}", o.percentile(0.5)),
                format!("{:.1}", o.percentile(0.99)),
                format!("{:.2}", ratio(o.all_done(), bound)),
                direct.map_or("-".into(), |d| format!("{:.1}", ratio(d, o.all_done()))),
                mib(o.bytes.origin),
                mib(o.bytes.edge),
                mib(o.bytes.peer),
                ingest.map_or("-".into(), |i| format!("{:.1}", i.done)),
                ingest.map_or("-".into(), |i| format!("{:.0}", i.mbit)),
                ingest.map_or("-".into(), |i| format!("{:.1}", o.all_done() - i.done)),
                format!("{:.0}%", o.cpu_busy * 100.0),
                format!("{:.1}", o.daemon_cpu_s),
            ]
        })
        .collect();
    table(
        &format!(
            "{} hosts ({} per rack, pulling with {}) at {} Mbit/s, registry and edge at {} Mbit/s, \
             {} MiB image in {} blobs; lower bound {:.1} s; agents' uploads paced at {}",
            links.hosts,
            links.rack_size,
            links.client.name(),
            links.host_mbit,
            links.uplink_mbit,
            mib(image.total_blob_bytes),
            image.blobs.len(),
            bound,
            match links.agent_upload_share {
                0 => "the link's rate (no limit)".to_string(),
                share => format!("{share}% of their link"),
            }
        ),
        &[
            "setup",
            "all done s",
            "p50 s",
            "p99 s",
            "vs bound",
            "speed-up vs direct",
            "origin MiB",
            "edge MiB",
            "peer MiB",
            "edge has all s",
            "edge in Mbit/s",
            "after s",
            "cpu busy",
            "daemon cpu s",
        ],
        &rows,
    );
    if let Some(step) = timeline {
        for o in outcomes {
            print_timeline(o, links.hosts, step);
        }
    }
    let plain = outcomes.iter().find(|o| o.setup == Setup::Damselfly);
    let tls = outcomes.iter().find(|o| o.setup == Setup::DamselflyTls);
    if let (Some(plain), Some(tls)) = (plain, tls) {
        // Pieces are sealed either way: TLS costs only the control path (tasks, tickets,
        // scheduler), so the two rows should be within noise of each other.
        println!(
            "\n  TLS and client certificates: {:.2}x the bound vs {:.2}x in plain HTTP ({:+.1}%)",
            ratio(tls.all_done(), bound),
            ratio(plain.all_done(), bound),
            (tls.all_done() / plain.all_done() - 1.0) * 100.0
        );
    }
    let abused = outcomes.iter().find(|o| o.setup == Setup::DamselflyAbuse);
    if let (Some(plain), Some(abused)) = (plain, abused) {
        // Idle connections and stalled readers must not buy a slower swarm: within 10%.
        let cost = (abused.all_done() / plain.all_done() - 1.0) * 100.0;
        println!(
            "\n  under abuse (idle connections, stalled piece readers): {:.2}x the bound vs {:.2}x clean ({:+.1}%) → {}",
            ratio(abused.all_done(), bound),
            ratio(plain.all_done(), bound),
            cost,
            if cost <= 10.0 { "within 10%" } else { "NOT within 10%" }
        );
    }
    let damselfly = plain.or(tls);
    if let Some(d) = damselfly {
        // The edge's uplink is the swarm's scarcest link at equal rates: every copy beyond the
        // first it sends is time the bound does not allow for.
        println!(
            "\n  damselfly: the origin sent {:.2} copies of the image, the edge {:.2}, peers {:.2}",
            d.bytes.origin as f64 / f,
            d.bytes.edge as f64 / f,
            d.bytes.peer as f64 / f
        );
        let vs_bound = ratio(d.all_done(), bound);
        println!(
            "  target: all hosts within {TARGET_VS_BOUND}x the bound: {:.2}x → {}",
            vs_bound,
            if vs_bound <= TARGET_VS_BOUND {
                "met"
            } else {
                "NOT met"
            }
        );
        if let Some(direct) = direct {
            let speedup = ratio(direct, d.all_done());
            println!(
                "  target: at least {TARGET_SPEEDUP}x faster than direct pulls: {speedup:.1}x → {}",
                if speedup >= TARGET_SPEEDUP {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
    let results: Vec<_> = outcomes
        .iter()
        .map(|o| {
            json!({
                "setup": o.setup.name(),
                "all_done_s": o.all_done(),
                "p50_s": o.percentile(0.5),
                "p99_s": o.percentile(0.99),
                "vs_bound": ratio(o.all_done(), bound),
                "host_s": o.times.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
                "origin_bytes": o.bytes.origin,
                "edge_bytes": o.bytes.edge,
                "peer_bytes": o.bytes.peer,
                "cpu_busy": (o.cpu_busy * 100.0).round() / 100.0,
                "daemon_cpu_s": (o.daemon_cpu_s * 10.0).round() / 10.0,
                "edge_ingest": o.ingest(image.total_blob_bytes).map(|i| json!({
                    "first_s": i.first, "done_s": i.done, "mbit": (i.mbit * 10.0).round() / 10.0,
                })),
            })
        })
        .collect();
    json_line(&json!({
        "scenario": "swarm",
        "hosts": links.hosts,
        "rack_size": links.rack_size,
        "client": links.client.name(),
        "host_mbit": links.host_mbit,
        "uplink_mbit": links.uplink_mbit,
        "agent_upload_share": links.agent_upload_share,
        "image_bytes": image.total_blob_bytes,
        "lower_bound_s": (bound * 1000.0).round() / 1000.0,
        "results": results,
    }));
}

/// Step by step: what the origin sent, what the edge received and sent, and what a host
/// received and sent on average, in Mbit/s; and how many hosts were done.
fn print_timeline(o: &Outcome, hosts: usize, step: f64) {
    let rows: Vec<Vec<String>> = links::every(&o.links, hosts, step)
        .iter()
        .map(|r| {
            let done = o.times.iter().filter(|t| secs(**t) <= r[0]).count();
            let mut row = vec![format!("{:.1}", r[0])];
            row.extend(r[1..].iter().map(|v| format!("{v:.1}")));
            row.push(done.to_string());
            row
        })
        .collect();
    table(
        &format!("{}: the links every {step} s, Mbit/s", o.setup.name()),
        &[
            "until s",
            "origin out",
            "edge in",
            "edge out",
            "host in (mean)",
            "host out (mean)",
            "hosts done",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::lower_bound;

    #[test]
    fn bound_picks_the_binding_constraint() {
        // Source-bound: one slow source, fast hosts.
        assert_eq!(lower_bound(100.0, 1.0, &[100.0; 4], &[100.0; 4]), 100.0);
        // Download-bound: everything equal, the source is not the limit once hosts upload.
        assert_eq!(lower_bound(100.0, 10.0, &[10.0; 4], &[10.0; 4]), 10.0);
        // Aggregate upload bound: hosts cannot upload.
        assert_eq!(lower_bound(100.0, 10.0, &[0.0; 4], &[100.0; 4]), 40.0);
    }
}
