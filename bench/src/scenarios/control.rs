//! The scheduler's load: many simulated agents speaking the real agent–edge protocol to one real
//! edge on loopback, at the agents' own cadence (`core::api::scheduler::cadence`).
//!
//! Each simulated host asks for the task once (its table, key and ticket), then for `--seconds`
//! "downloads" the blob: its bitfield fills at an even rate, from a piece of its own choosing
//! (hosts hold different pieces, as rarest-first makes them), and it announces every change at
//! most every `ANNOUNCE_EVERY` with the two pieces it is "taking from the edge", a heartbeat
//! every `HEARTBEAT_EVERY`, and asks for parents every `PARENTS_EVERY` (`--full`: at the pace of
//! a download whose slots are all busy). No piece moves: this is the control plane alone.
//!
//! Reported per run: the requests the edge answered against those the cadence asks for, the
//! edge's CPU (from `/proc`) and what it means in hosts per core, the scheduler's bytes per host
//! per second (request and answer bodies) against the data a host moves in the same time, and
//! the answers' latency. Bytes are bodies as sent (parents answers gzip-compressed, as agents
//! ask for them); HTTP headers, about 200 bytes a request each way, are not counted. The bench process drives all hosts from the same 2 cores, so a run
//! whose answered share falls short of 1.00 measures a saturated machine, not the edge alone.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use damselfly_core::api::scheduler::cadence::{
    ANNOUNCE_EVERY, HEARTBEAT_EVERY, PARENTS_EVERY, PARENTS_EVERY_WHEN_FULL,
};
use damselfly_core::api::scheduler::{parents_path, peer_path, ParentsQuery};
use damselfly_core::api::task::task_path;
use damselfly_core::api::{PeerAnnouncement, TaskAnswer, TICKET_HEADER};
use damselfly_core::{Bitfield, Digest, Location};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::net::raise_open_files;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use serde_json::json;

use crate::report::{json_line, ratio, table, MIB};

/// Hosts per simulated rack.
const RACK: usize = 40;
/// Pieces each host announces it is taking from the edge, as an owner in a swarm does.
const TAKING: u64 = 2;

#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Simulated hosts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    hosts: Vec<usize>,
    /// How long each run lasts: the simulated download's duration.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Size of the blob the hosts download, in MiB (64 MiB and more all have 256 pieces; the
    /// size sets the data rate the scheduler's bytes are compared with).
    #[arg(long, default_value_t = 256)]
    blob_mib: u64,
    /// Ask for parents at the pace of a download whose slots are all busy (500 ms).
    #[arg(long)]
    full: bool,
}

/// What one run's hosts counted together.
#[derive(Default)]
struct Counts {
    announcements: AtomicU64,
    parents: AtomicU64,
    failed: AtomicU64,
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
    /// Answer latencies, in microseconds.
    latencies: Mutex<Vec<u64>>,
}

impl Counts {
    /// Sends `request` with `body`, and counts it in `kind` when answered with success (its
    /// bytes and latency too), else as failed.
    async fn call(&self, request: reqwest::RequestBuilder, body: Vec<u8>, kind: &AtomicU64) {
        let (started, sent) = (Instant::now(), body.len() as u64);
        let response = request.body(body).send().await;
        let received = match response {
            Ok(r) if r.status().is_success() => r.bytes().await.map(|b| b.len() as u64).ok(),
            _ => None,
        };
        let Some(received) = received else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        kind.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(sent, Ordering::Relaxed);
        self.received_bytes.fetch_add(received, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies.lock() {
            l.push(started.elapsed().as_micros() as u64);
        }
    }
}

pub async fn run(edge_binary: &Path, args: ControlArgs) -> Result<()> {
    raise_open_files(65_536)?;
    let registry = Registry::start(RegistryOptions::default()).await?;
    eprintln!("pushing a {} MiB blob…", args.blob_mib);
    let image = registry
        .push_image(
            ImageSpec::new("control", vec![args.blob_mib * MIB]),
            "bench/control:v1",
        )
        .await?;
    let blob = image.largest_blob().clone();
    let digest: Digest = blob.digest.parse()?;
    let largest = args.hosts.iter().max().copied().unwrap_or(0);
    let mut options = EdgeOptions::new(registry.url());
    options.server_toml = format!(
        "max_connections = {}\nmax_concurrent_requests = {}\n",
        largest + 1000,
        largest + 1000
    );
    options.extra_toml = format!("[scheduler]\nmax_peers_per_task = {}\n", largest + 1000);
    let edge = Edge::start(edge_binary, options).await?;
    eprintln!("warming the edge…");
    // Answers are counted as they cross the wire: gzip asked for where agents ask for it,
    // and not undone.
    let client = reqwest::Client::builder()
        .gzip(false)
        .pool_max_idle_per_host(largest + 100)
        .timeout(Duration::from_secs(30))
        .build()?;
    let warmed = client
        .get(format!(
            "{}/v2/bench/control/blobs/{digest}?ns={}",
            edge.url(),
            registry.addr()
        ))
        .send()
        .await?
        .bytes()
        .await?;
    ensure!(
        warmed.len() as u64 == blob.size,
        "the edge sent {} bytes",
        warmed.len()
    );

    let parents_every = if args.full {
        PARENTS_EVERY_WHEN_FULL
    } else {
        PARENTS_EVERY
    };
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for &hosts in &args.hosts {
        eprintln!("{hosts} hosts for {} s…", args.seconds);
        let counts = Arc::new(Counts::default());
        let duration = Duration::from_secs(args.seconds);
        let edge_cpu = edge.cpu_seconds()?;
        let started = Instant::now();
        let tasks: Vec<_> = (0..hosts)
            .map(|i| {
                let host = SimulatedHost {
                    client: client.clone(),
                    edge: edge.url(),
                    digest,
                    ns: registry.addr(),
                    index: i,
                    run: hosts,
                };
                tokio::spawn(host.run(counts.clone(), started, duration, parents_every))
            })
            .collect();
        for task in tasks {
            task.await.context("simulated host")??;
        }
        let wall = started.elapsed().as_secs_f64();
        let edge_cpu = edge.cpu_seconds()? - edge_cpu;
        let announcements = counts.announcements.load(Ordering::Relaxed);
        let parents = counts.parents.load(Ordering::Relaxed);
        let failed = counts.failed.load(Ordering::Relaxed);
        // What the cadence asks for, per host: an announcement per change of the pieces held,
        // at most one per ANNOUNCE_EVERY, and parents per `parents_every`.
        let pieces = damselfly_core::PieceLayout::for_size(blob.size).count() as f64;
        let announcements_per_s = (pieces / args.seconds as f64).min(1.0 / ANNOUNCE_EVERY.as_secs_f64());
        let asked =
            hosts as f64 * args.seconds as f64 * (announcements_per_s + 1.0 / parents_every.as_secs_f64());
        let answered = (announcements + parents) as f64;
        let cores = edge_cpu / wall;
        let control_bytes = (counts.sent_bytes.load(Ordering::Relaxed)
            + counts.received_bytes.load(Ordering::Relaxed)) as f64;
        let per_host_per_s = control_bytes / hosts as f64 / wall;
        let data_per_host_per_s = blob.size as f64 / args.seconds as f64;
        let mut latencies = counts.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        latencies.sort_unstable();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        let hosts_per_core = if cores > 0.0 {
            hosts as f64 / cores
        } else {
            f64::NAN
        };
        rows.push(vec![
            hosts.to_string(),
            format!("{:.0}", answered / wall),
            format!("{:.2}", ratio(answered, asked)),
            failed.to_string(),
            format!("{cores:.2}"),
            format!("{hosts_per_core:.0}"),
            format!("{:.1}", per_host_per_s / 1000.0),
            format!("{:.2}%", per_host_per_s / data_per_host_per_s * 100.0),
            format!("{:.1}", percentile(0.5)),
            format!("{:.1}", percentile(0.99)),
        ]);
        results.push(json!({
            "hosts": hosts,
            "seconds": wall,
            "announcements": announcements,
            "parents": parents,
            "failed": failed,
            "answered_vs_cadence": ratio(answered, asked),
            "edge_cpu_s": edge_cpu,
            "edge_cores": cores,
            "hosts_per_edge_core": hosts_per_core,
            "control_bytes_per_host_per_s": per_host_per_s,
            "control_vs_data": per_host_per_s / data_per_host_per_s,
            "latency_p50_ms": percentile(0.5),
            "latency_p99_ms": percentile(0.99),
        }));
    }
    table(
        &format!(
            "scheduler load: hosts downloading a {} MiB blob ({} pieces) in {} s, parents every {} ms",
            args.blob_mib,
            damselfly_core::PieceLayout::for_size(blob.size).count(),
            args.seconds,
            parents_every.as_millis()
        ),
        &[
            "hosts",
            "answers/s",
            "vs cadence",
            "failed",
            "edge cores",
            "hosts per edge core",
            "control kB/s per host",
            "control / data",
            "p50 ms",
            "p99 ms",
        ],
        &rows,
    );
    json_line(&json!({
        "scenario": "control",
        "blob_bytes": blob.size,
        "seconds": args.seconds,
        "parents_every_ms": parents_every.as_millis() as u64,
        "runs": results,
    }));
    Ok(())
}

/// One agent's scheduler traffic for one download.
struct SimulatedHost {
    client: reqwest::Client,
    edge: String,
    digest: Digest,
    ns: String,
    index: usize,
    /// Hosts in this run: host ids are fresh per run, so runs do not see each other's peers.
    run: usize,
}

impl SimulatedHost {
    async fn run(
        self,
        counts: Arc<Counts>,
        started: Instant,
        duration: Duration,
        parents_every: Duration,
    ) -> Result<()> {
        let host_id = format!("sim-{}-{}", self.run, self.index);
        let location: Location =
            format!("bench/z{}/r{}", self.index / (RACK * 10), self.index / RACK).parse()?;
        let answer: TaskAnswer = self
            .client
            .get(format!("{}{}", self.edge, task_path(&self.digest)))
            .query(&[
                ("repo", "bench/control"),
                ("ns", self.ns.as_str()),
                ("hash", "blake3"),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let count = answer.table.layout.count();
        let first = (self.index as u64 * 7919) % count.max(1);
        let peer_url = format!("{}{}", self.edge, peer_path(&self.digest, &host_id));
        let parents_url = format!("{}{}", self.edge, parents_path(&self.digest));
        let query = ParentsQuery::new(&host_id, &location);
        let mut held_announced = u64::MAX;
        let (mut next_announce, mut next_parents, mut last_announce) = (started, started, started);
        // Hosts start spread over one parents period, as agents starting together do not tick
        // in step.
        tokio::time::sleep(parents_every.mul_f64((self.index % 97) as f64 / 97.0)).await;
        while started.elapsed() < duration {
            let now = Instant::now();
            let held = ((now - started).as_secs_f64() / duration.as_secs_f64() * count as f64) as u64;
            let held = held.min(count);
            let changed = held != held_announced;
            if now >= next_announce && (changed || now - last_announce >= HEARTBEAT_EVERY) {
                let mut pieces = Bitfield::new(count);
                let mut fetching = Bitfield::new(count);
                for k in 0..count {
                    let index = (first + k) % count;
                    if k < held {
                        pieces.set(index);
                    } else if k < held + TAKING {
                        fetching.set(index);
                    }
                }
                let body = serde_json::to_vec(&PeerAnnouncement {
                    upload_url: format!("http://127.0.0.1:{}", 10_000 + self.index % 50_000),
                    location: location.clone(),
                    pieces,
                    fetching: Some(fetching),
                    uploads_active: 1,
                    upload_slots: 4,
                    downloaded: None,
                })?;
                let request = self
                    .client
                    .put(&peer_url)
                    .header(TICKET_HEADER, &answer.ticket)
                    .header(reqwest::header::CONTENT_TYPE, "application/json");
                counts.call(request, body, &counts.announcements).await;
                held_announced = held;
                last_announce = now;
                next_announce = now + ANNOUNCE_EVERY;
            }
            if now >= next_parents {
                let request = self
                    .client
                    .get(&parents_url)
                    .header(TICKET_HEADER, &answer.ticket)
                    .header(reqwest::header::ACCEPT_ENCODING, "gzip")
                    .query(&query);
                counts.call(request, Vec::new(), &counts.parents).await;
                next_parents = now + parents_every;
            }
            let wake = next_announce.min(next_parents);
            tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
        }
        // Leave, as a finished agent eventually does, so the next run starts empty.
        let _ = self
            .client
            .delete(&peer_url)
            .header(TICKET_HEADER, &answer.ticket)
            .send()
            .await;
        Ok(())
    }
}
