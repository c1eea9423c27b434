//! The simulation: hosts in racks, the edge and the origin on modelled links; every host pulls
//! the image's blobs a few at a time (as curl and containerd do), each blob a [`Download`]
//! taking its turns as the agent's loop does, and the agent reads the next layer ahead by the
//! rule of its `read_ahead.rs`. Time moves in fixed steps; a host takes a turn
//! when one of its fetches ended or the loop's tick has passed.

use std::time::Duration;

use damselfly_agent::config::{DownloadConfig, ReadAhead};
use damselfly_agent::picker::Source;
use damselfly_agent::policy::{READ_AHEAD_LEAD, TICK};
use damselfly_core::api::{ParentsAnswer, PeerAnnouncement};
use damselfly_core::task_peers::Asking;
use damselfly_core::{Bitfield, Location, PieceLayout};
use tokio::time::Instant;

use super::download::{Download, World};
use super::network::{Carries, From, LinkId, Network};
use super::scheduler::{Scheduler, Traffic};

/// Blobs a host pulls at once (curl's `--parallel-max 3` in `bench swarm`, containerd's default).
const PARALLEL_BLOBS: usize = 3;

#[derive(Clone, Debug)]
pub struct Shape {
    pub hosts: usize,
    pub rack_size: usize,
    /// Racks per zone (locations are `region/zone/rack`).
    pub racks_per_zone: usize,
    pub host_mbit: f64,
    /// Each rack's uplink is its hosts' links over this ratio; 0: no rack uplinks (one switch).
    pub oversubscription: f64,
    pub edge_mbit: f64,
    pub origin_mbit: f64,
    pub image_bytes: u64,
    pub layers: u64,
    /// Agents' uploads paced at this share of their link.
    pub upload_share: f64,
    /// Bytes of an upload that fit in socket buffers: once no more is left to write, the
    /// agent's upload slot is free and the sender's link no longer carries it.
    pub send_buffer: f64,
    pub step: Duration,
}

impl Shape {
    fn racks(&self) -> usize {
        self.hosts.div_ceil(self.rack_size)
    }

    fn bps(mbit: f64) -> f64 {
        mbit * 1e6 / 8.0
    }

    fn rack_link(&self) -> Option<f64> {
        (self.oversubscription > 0.0)
            .then(|| Self::bps(self.host_mbit) * self.rack_size as f64 / self.oversubscription)
    }

    /// Kumar and Ross's bound with the rack uplinks: the origin and the edge send the image at
    /// least once, every host receives it, all hosts' and the edge's uploads together carry
    /// N copies, every rack receives it through its uplink, and the uplinks and the edge
    /// together carry one copy into each rack.
    pub fn bound(&self) -> f64 {
        let f = self.image_bytes as f64;
        let (n, d, edge) = (
            self.hosts as f64,
            Self::bps(self.host_mbit),
            Self::bps(self.edge_mbit),
        );
        let mut bound = (f / Self::bps(self.origin_mbit))
            .max(f / edge)
            .max(f / d)
            .max(n * f / (edge + n * d));
        if let Some(rack) = self.rack_link() {
            let racks = self.racks() as f64;
            bound = bound.max(f / rack).max(racks * f / (edge + racks * rack));
        }
        bound
    }
}

/// What a run measured.
pub struct Outcome {
    /// Per host, seconds from the start until its last blob was complete.
    pub done: Vec<f64>,
    pub origin_bytes: f64,
    pub edge_bytes: f64,
    pub peer_bytes_in_rack: f64,
    pub peer_bytes_across_racks: f64,
    pub traffic: Traffic,
    pub busy_answers: u64,
    /// Per second of the run: bytes sent by the origin, the edge and the peers.
    pub timeline: Vec<[f64; 3]>,
}

impl Outcome {
    pub fn all_done(&self) -> f64 {
        self.done.iter().copied().fold(0.0, f64::max)
    }

    pub fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.done.clone();
        sorted.sort_by(f64::total_cmp);
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
        sorted[i - 1]
    }
}

struct Task {
    layout: PieceLayout,
    ingested: f64,
    ingesting: bool,
}

impl Task {
    /// Pieces the edge has sealed and lists in its table.
    fn listed(&self) -> u64 {
        if self.ingested >= self.layout.size as f64 - 0.5 {
            self.layout.count()
        } else {
            (self.ingested / self.layout.piece_length as f64) as u64
        }
    }
}

struct Host {
    id: String,
    location: Location,
    rack: usize,
    up: LinkId,
    down: LinkId,
    uploads_active: u32,
    edge_in_flight: usize,
    downloads: Vec<Download>,
    /// The next blob the runtime asks for.
    runtime_next: usize,
    /// Per blob: whether its download started (asked for or read ahead).
    started: Vec<bool>,
    done_at: Option<f64>,
    /// When the host last looked at its blobs as a whole (read-ahead, as the agent does
    /// every 100 ms).
    last_check: Option<Instant>,
}

struct Sim {
    shape_send_buffer: f64,
    config: DownloadConfig,
    upload_slots: u32,
    net: Network,
    rack_up: Vec<LinkId>,
    rack_down: Vec<LinkId>,
    edge_up: LinkId,
    edge_down: LinkId,
    origin_up: LinkId,
    tasks: Vec<Task>,
    hosts: Vec<Host>,
    scheduler: Scheduler,
    hashes: Vec<[u8; 32]>,
    /// Fetches answered "busy", delivered at the next step: (host, download's task, piece).
    busy: Vec<(usize, usize, u64)>,
    busy_answers: u64,
}

pub fn run(shape: &Shape, config: &DownloadConfig, upload_slots: u32, max_parents: usize) -> Outcome {
    let mut sim = Sim::new(shape, config, upload_slots, max_parents);
    let start = Instant::now();
    let dt = shape.step.as_secs_f64();
    let mut seconds = 0.0;
    let mut outcome = Outcome {
        done: Vec::new(),
        origin_bytes: 0.0,
        edge_bytes: 0.0,
        peer_bytes_in_rack: 0.0,
        peer_bytes_across_racks: 0.0,
        traffic: Traffic::default(),
        busy_answers: 0,
        timeline: Vec::new(),
    };
    for h in 0..sim.hosts.len() {
        sim.start_blobs(h, start);
    }
    let (mut released, mut done) = (Vec::new(), Vec::new());
    let mut finished = 0;
    while finished < sim.hosts.len() {
        seconds += dt;
        let now = start + Duration::from_secs_f64(seconds);
        sim.scheduler.now_ms = (seconds * 1000.0) as u64;
        let tasks = &mut sim.tasks;
        let second = seconds as usize;
        if outcome.timeline.len() <= second {
            outcome.timeline.resize(second + 1, [0.0; 3]);
        }
        let sent = &mut outcome.timeline[second];
        sim.net
            .step(dt, &mut released, &mut done, |carries, bytes| match carries {
                Carries::Ingest { task } => {
                    tasks[*task].ingested += bytes;
                    outcome.origin_bytes += bytes;
                    sent[0] += bytes;
                }
                Carries::Piece { from, .. } => match from {
                    From::Edge => {
                        outcome.edge_bytes += bytes;
                        sent[1] += bytes;
                    }
                    From::Peer { same_rack: true, .. } => {
                        outcome.peer_bytes_in_rack += bytes;
                        sent[2] += bytes;
                    }
                    From::Peer { .. } => {
                        outcome.peer_bytes_across_racks += bytes;
                        sent[2] += bytes;
                    }
                },
            });
        for carries in released.drain(..) {
            if let Carries::Piece {
                from: From::Peer { host, .. },
                ..
            } = carries
            {
                sim.hosts[host].uploads_active -= 1;
            }
        }
        for carries in done.drain(..) {
            sim.landed(carries);
        }
        for (host, task, index) in std::mem::take(&mut sim.busy) {
            if let Some(d) = sim.hosts[host].downloads.iter_mut().find(|d| d.task == task) {
                d.parent_busy(index, now);
            }
        }
        for h in 0..sim.hosts.len() {
            let host = &sim.hosts[h];
            let ticked = host.last_check.is_none_or(|t| now.duration_since(t) >= TICK);
            let turning = host.downloads.iter().any(|d| d.turn_due(now));
            if host.done_at.is_none() && (turning || ticked) {
                sim.turn(h, now, seconds);
                if sim.hosts[h].done_at.is_some() {
                    finished += 1;
                }
            }
        }
        assert!(
            seconds < 3600.0,
            "the simulated swarm has not finished after an hour: a stuck model"
        );
    }
    outcome.done = sim.hosts.iter().map(|h| h.done_at.unwrap_or(seconds)).collect();
    outcome.traffic = std::mem::take(&mut sim.scheduler.traffic);
    outcome.busy_answers = sim.busy_answers;
    outcome
}

impl Sim {
    fn new(shape: &Shape, config: &DownloadConfig, upload_slots: u32, max_parents: usize) -> Sim {
        let mut net = Network::new();
        let bps = Shape::bps;
        let racks = shape.racks();
        let (mut rack_up, mut rack_down) = (Vec::new(), Vec::new());
        if let Some(rate) = shape.rack_link() {
            for _ in 0..racks {
                rack_up.push(net.link(rate));
                rack_down.push(net.link(rate));
            }
        }
        let edge_up = net.link(bps(shape.edge_mbit));
        let edge_down = net.link(bps(shape.edge_mbit));
        let origin_up = net.link(bps(shape.origin_mbit));
        let hosts = (0..shape.hosts)
            .map(|h| {
                let rack = h / shape.rack_size;
                Host {
                    id: format!("h{h}"),
                    location: Location {
                        region: "sim".into(),
                        zone: format!("z{}", rack / shape.racks_per_zone.max(1)),
                        rack: format!("r{rack}"),
                    },
                    rack,
                    up: net.link(bps(shape.host_mbit) * shape.upload_share),
                    down: net.link(bps(shape.host_mbit)),
                    uploads_active: 0,
                    edge_in_flight: 0,
                    downloads: Vec::new(),
                    runtime_next: 0,
                    started: vec![false; shape.layers as usize],
                    done_at: None,
                    last_check: None,
                }
            })
            .collect();
        let blob = shape.image_bytes / shape.layers;
        let tasks: Vec<Task> = (0..shape.layers)
            .map(|_| Task {
                layout: PieceLayout::for_size(blob),
                ingested: 0.0,
                ingesting: false,
            })
            .collect();
        let most_pieces = tasks.iter().map(|t| t.layout.count()).max().unwrap_or(0);
        Sim {
            shape_send_buffer: shape.send_buffer,
            config: config.clone(),
            upload_slots,
            net,
            rack_up,
            rack_down,
            edge_up,
            edge_down,
            origin_up,
            scheduler: Scheduler::new(tasks.len(), max_parents),
            hashes: vec![[0; 32]; most_pieces as usize],
            tasks,
            hosts,
            busy: Vec::new(),
            busy_answers: 0,
        }
    }

    /// The runtime asks for its next blobs, up to [`PARALLEL_BLOBS`] at once: it joins a
    /// download read ahead, takes a blob read ahead and complete at once, or starts one.
    fn start_blobs(&mut self, h: usize, now: Instant) {
        loop {
            let host = &mut self.hosts[h];
            let asked = host.downloads.iter().filter(|d| d.asked).count();
            if asked >= PARALLEL_BLOBS || host.runtime_next >= self.tasks.len() {
                return;
            }
            let task = host.runtime_next;
            host.runtime_next += 1;
            if let Some(d) = host.downloads.iter_mut().find(|d| d.task == task) {
                d.asked = true;
            } else if !host.started[task] {
                self.start_download(h, task, true, now);
            }
        }
    }

    /// Layer read-ahead (the agent's `read_ahead.rs`): once the edge is about to hold every
    /// piece of the layers being downloaded, and while the runtime is pulling, the next layer
    /// starts, one at a time; by default only in a swarm.
    fn read_ahead(&mut self, h: usize, now: Instant) {
        let host = &self.hosts[h];
        let Some(next) = host.started.iter().position(|s| !s) else {
            return;
        };
        let active = &host.downloads;
        let pulling = active.iter().any(|d| d.asked);
        let nearly_done = active
            .iter()
            .all(|d| d.edge_left(now).is_some_and(|left| left <= READ_AHEAD_LEAD));
        let wanted = match self.config.read_ahead {
            ReadAhead::Off => false,
            ReadAhead::Always => true,
            ReadAhead::Swarm => active.iter().any(|d| d.in_swarm()),
        };
        if pulling && nearly_done && wanted {
            self.start_download(h, next, false, now);
        }
    }

    /// A download starts; the first request for a blob starts the edge's transfer from the
    /// origin.
    fn start_download(&mut self, h: usize, task: usize, asked: bool, now: Instant) {
        let t = &mut self.tasks[task];
        if !t.ingesting {
            t.ingesting = true;
            self.net.start(
                &[self.origin_up, self.edge_down],
                t.layout.size as f64,
                0.0,
                Carries::Ingest { task },
            );
        }
        let pieces = t.layout.count();
        let host = &mut self.hosts[h];
        host.started[task] = true;
        host.downloads.push(Download::new(task, pieces, asked, now));
    }

    fn landed(&mut self, carries: Carries) {
        let Carries::Piece {
            host,
            task,
            index,
            from,
        } = carries
        else {
            return;
        };
        if from == From::Edge {
            self.hosts[host].edge_in_flight -= 1;
        }
        let h = &mut self.hosts[host];
        if let Some(d) = h.downloads.iter_mut().find(|d| d.task == task) {
            d.landed(index);
        }
    }

    /// The turns due of the host's downloads (each its own loop, as in the agent), then the
    /// runtime's next blobs and the read-ahead.
    fn turn(&mut self, h: usize, now: Instant, seconds: f64) {
        let mut downloads = std::mem::take(&mut self.hosts[h].downloads);
        let (config, hashes) = (self.config.clone(), std::mem::take(&mut self.hashes));
        let id = self.hosts[h].id.clone();
        let before = downloads.len();
        downloads.retain_mut(|d| {
            if !d.turn_due(now) {
                return true;
            }
            let mut world = HostWorld { sim: self, host: h };
            if d.is_complete() {
                // The last announcement, as the agent's loop ends with (it then seeds).
                world.announce(d.task, &d.have, &[]);
                return false;
            }
            d.turn(&mut world, &id, &config, &hashes, now);
            true
        });
        self.hashes = hashes;
        self.hosts[h].downloads = downloads;
        let checked = self.hosts[h]
            .last_check
            .is_none_or(|t| now.duration_since(t) >= TICK);
        if self.hosts[h].downloads.len() == before && !checked {
            return;
        }
        self.hosts[h].last_check = Some(now);
        self.start_blobs(h, now);
        self.read_ahead(h, now);
        let host = &mut self.hosts[h];
        let runtime_done = host.runtime_next >= self.tasks.len() && !host.downloads.iter().any(|d| d.asked);
        if runtime_done {
            host.done_at = Some(seconds);
        }
    }
}

/// The world as one host's downloads see it.
struct HostWorld<'a> {
    sim: &'a mut Sim,
    host: usize,
}

impl World for HostWorld<'_> {
    fn table(&mut self, task: usize) -> (u64, bool) {
        self.sim.scheduler.traffic.table_refreshes += 1;
        let t = &self.sim.tasks[task];
        (t.listed(), t.listed() == t.layout.count())
    }

    fn parents(&mut self, task: usize, edge_room: usize, known: u64) -> ParentsAnswer {
        let h = &self.sim.hosts[self.host];
        let asking = Asking {
            host_id: &h.id,
            location: &h.location,
            edge_room: Some(edge_room as u32),
            known: Some(known),
        };
        self.sim.scheduler.parents(task, &asking)
    }

    fn edge_in_flight(&self) -> usize {
        self.sim.hosts[self.host].edge_in_flight
    }

    fn fetch(&mut self, task: usize, index: u64, source: &Source) {
        let sim = &mut *self.sim;
        let bytes = sim.tasks[task].layout.sealed_len(index) as f64;
        let me = &sim.hosts[self.host];
        let (my_rack, my_down) = (me.rack, me.down);
        let (path, from, buffered): (Vec<LinkId>, From, f64) = match source {
            Source::Edge => {
                let mut path = vec![sim.edge_up];
                path.extend(sim.rack_down.get(my_rack));
                path.push(my_down);
                (path, From::Edge, 0.0)
            }
            Source::Peer { host_id, .. } => {
                let peer = host_index(host_id);
                let p = &mut sim.hosts[peer];
                if p.uploads_active >= sim.upload_slots {
                    sim.busy.push((self.host, task, index));
                    sim.busy_answers += 1;
                    return;
                }
                p.uploads_active += 1;
                let same_rack = p.rack == my_rack;
                let mut path = vec![p.up];
                if !same_rack {
                    path.extend(sim.rack_up.get(p.rack));
                    path.extend(sim.rack_down.get(my_rack));
                }
                path.push(my_down);
                (
                    path,
                    From::Peer {
                        host: peer,
                        same_rack,
                    },
                    sim.shape_send_buffer,
                )
            }
        };
        if from == From::Edge {
            sim.hosts[self.host].edge_in_flight += 1;
        }
        sim.net.start(
            &path,
            bytes,
            buffered,
            Carries::Piece {
                host: self.host,
                task,
                index,
                from,
            },
        );
    }

    fn announce(&mut self, task: usize, pieces: &Bitfield, fetching: &[u64]) {
        let h = &self.sim.hosts[self.host];
        let fetching = (!fetching.is_empty()).then(|| {
            let mut bits = Bitfield::new(pieces.len());
            fetching.iter().for_each(|i| bits.set(*i));
            bits
        });
        let announcement = PeerAnnouncement {
            upload_url: format!("http://{}:5091", h.id),
            location: h.location.clone(),
            pieces: pieces.clone(),
            fetching,
            uploads_active: h.uploads_active,
            upload_slots: self.sim.upload_slots,
            downloaded: None,
        };
        let id = h.id.clone();
        self.sim.scheduler.announce(task, &id, announcement);
    }
}

fn host_index(host_id: &str) -> usize {
    host_id
        .strip_prefix('h')
        .and_then(|n| n.parse().ok())
        .expect("the simulation names its hosts h<index>")
}
