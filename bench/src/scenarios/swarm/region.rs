//! Two regions of edge clusters, chained: region `eu` (its edges on one Redis) fetches from the
//! origin, region `us` (its own edges and Redis) names eu's edges as parents. Every host in a
//! network namespace on one switch; the inter-region link is a gateway host whose shaped link
//! every byte between the regions crosses (a relay in it forwards each us → eu parent
//! connection), the origin's link is shaped apart. N agents per region spread over their
//! region's edges. Reported, with all edges up and with one eu edge killed a third of the way
//! in: time until every host of both regions is done against a lower bound, the origin's bytes
//! over the image (target 1.00x world-wide) and the bytes across the inter-region link over the
//! image (target 1.00x).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use damselfly_test_support::image::{build_image_async, ImageSpec};
use damselfly_test_support::process::{private_file, ChildGuard};
use damselfly_test_support::skopeo::{self, PushOptions};
use serde_json::json;

use super::clients::{Client, HostClient};
use super::daemons::{self, AgentSetup, Daemon, Logs, EDGE_PORT, REGISTRY_PORT};
use super::report::lower_bound;
use super::{pull, REPOSITORY, TAG};
use crate::netns::{Host, Topology, SWITCH};
use crate::report::{json_line, ratio, table, MIB};

const RELAY_PORT: u16 = 6000;
const REDIS_PORT: u16 = 6379;

#[derive(Args, Debug)]
pub struct RegionArgs {
    /// Agents (hosts) in each region.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Edges in each region (one cluster per region).
    #[arg(long, default_value_t = 3)]
    edges: usize,
    /// Every agent's link, in Mbit/s, each direction.
    #[arg(long, default_value_t = 100)]
    host_mbit: u64,
    /// Every edge's link, in Mbit/s, each direction.
    #[arg(long, default_value_t = 100)]
    edge_mbit: u64,
    /// The origin's link, in Mbit/s (slower than the regions' own links).
    #[arg(long, default_value_t = 40)]
    origin_mbit: u64,
    /// The link between the regions, in Mbit/s.
    #[arg(long, default_value_t = 40)]
    inter_mbit: u64,
    /// Image size in MiB, split evenly over the layers.
    #[arg(long, default_value_t = 32)]
    image_mib: u64,
    /// Number of layers.
    #[arg(long, default_value_t = 4)]
    layers: u64,
    /// First three octets of the bench subnet (must be unused on this machine).
    #[arg(long, default_value = "10.213.0")]
    subnet: String,
    /// Keep the edges' and agents' logs (at info level) in this directory, as
    /// `<round>-<daemon>.log`.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<std::path::PathBuf>,
}

/// What one round measured.
struct Round {
    killed: bool,
    all_done: f64,
    eu_done: f64,
    us_done: f64,
    origin_bytes: u64,
    inter_bytes: u64,
}

pub async fn run(bin_dir: &Path, args: RegionArgs) -> Result<()> {
    anyhow::ensure!(
        args.agents >= 1 && args.edges >= 2 && args.agents <= 60 && args.edges <= 9,
        "--agents 1..=60 and --edges 2..=9"
    );
    let edge_binary = crate::scenarios::binary(bin_dir, "edge-cache")?;
    let agent_binary = crate::scenarios::binary(bin_dir, "peer-agent")?;
    let work = tempfile::Builder::new()
        .prefix("damselfly-bench-region-")
        .tempdir()?;
    let per_layer = args.image_mib * MIB / args.layers;
    let spec = ImageSpec::new("region", vec![per_layer; args.layers as usize]);
    let image = build_image_async(spec, work.path().join("layout"), TAG.into()).await?;
    let blob_bytes = image.total_blob_bytes;
    let mut rounds = Vec::new();
    for killed in [false, true] {
        eprintln!(
            "round: {}",
            if killed {
                "one eu edge killed"
            } else {
                "all edges up"
            }
        );
        let mut topology = Topology::create(&args.subnet)?;
        let outcome = round(&mut topology, &edge_binary, &agent_binary, &args, &image, killed).await;
        drop(topology);
        rounds.push(outcome?);
    }
    print(&args, blob_bytes, &rounds);
    Ok(())
}

/// A fresh world: origin, gateway, two Redis, two clusters of edges, agents; one pull round.
async fn round(
    topology: &mut Topology,
    edge_binary: &Path,
    agent_binary: &Path,
    args: &RegionArgs,
    image: &damselfly_test_support::image::BuiltImage,
    kill: bool,
) -> Result<Round> {
    let origin_host = topology.add_host("origin", 1)?;
    let gateway = topology.add_host("gw", 2)?;
    let redis_hosts = [
        topology.add_host("redis-eu", 3)?,
        topology.add_host("redis-us", 4)?,
    ];
    let mut edge_hosts: [Vec<Host>; 2] = [Vec::new(), Vec::new()];
    let mut agent_hosts: [Vec<Host>; 2] = [Vec::new(), Vec::new()];
    for (r, name) in ["eu", "us"].iter().enumerate() {
        for i in 0..args.edges {
            let octet = 10 + (r * 10 + i) as u8;
            edge_hosts[r].push(topology.add_host(&format!("{name}-e{i}"), octet)?);
        }
        for i in 0..args.agents {
            let octet = 40 + (r * 60 + i) as u8;
            agent_hosts[r].push(topology.add_host(&format!("{name}-h{i:02}"), octet)?);
        }
    }
    let registry = daemons::registry(&origin_host).await?;
    let origin = format!("{}:{REGISTRY_PORT}", origin_host.ip);
    skopeo::push(
        image,
        &format!("{origin}/{REPOSITORY}:{TAG}"),
        &PushOptions::default(),
    )
    .await?;
    topology.shape(&origin_host, args.origin_mbit, args.origin_mbit)?;
    topology.shape(&gateway, args.inter_mbit, args.inter_mbit)?;
    for host in edge_hosts.iter().flatten() {
        topology.shape(host, args.edge_mbit, args.edge_mbit)?;
    }
    for host in agent_hosts.iter().flatten() {
        topology.shape(host, args.host_mbit, args.host_mbit)?;
    }

    let _redis = [redis(&redis_hosts[0])?, redis(&redis_hosts[1])?];
    // us reaches each eu edge through its own port on the gateway.
    let relays: Vec<(String, String)> = edge_hosts[0]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let listen = format!("{}:{}", gateway.ip, RELAY_PORT + i as u16);
            (listen, format!("{}:{EDGE_PORT}", h.ip))
        })
        .collect();
    let _relay = relay(&gateway, &relays)?;
    let parents: Vec<String> = relays
        .iter()
        .map(|(listen, _)| format!("http://{listen}"))
        .collect();

    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
    }
    let logs = Logs {
        keep_in: args.keep_logs.as_deref(),
        setup: if kill { "killed" } else { "up" },
    };
    let cluster_toml = "[cluster]\nheartbeat_ms = 500\nmember_timeout_ms = 2000\n";
    // One secret for every edge: agents take tickets, keys and pieces from several of them.
    let secret_dir = tempfile::tempdir()?;
    let secret = private_file(secret_dir.path(), "cluster.secret", &"b".repeat(48));
    let mut edges: [Vec<Daemon>; 2] = [Vec::new(), Vec::new()];
    for (r, name) in ["eu", "us"].iter().enumerate() {
        for host in &edge_hosts[r] {
            let mut flags = vec![
                format!("--region={name}"),
                format!("--redis=redis://{}:{REDIS_PORT}", redis_hosts[r].ip),
                format!("--advertise-url=http://{}:{EDGE_PORT}", host.ip),
                format!("--cluster-secret-file={}", secret.display()),
            ];
            if r == 1 {
                flags.extend(parents.iter().map(|p| format!("--parent={p}")));
            }
            let edge = daemons::edge(edge_binary, host, &origin, cluster_toml, None, logs, &flags).await?;
            edges[r].push(edge);
        }
    }
    // Pulls start once every edge sees its whole cluster: before that, an edge that has not
    // heard of the others yet takes itself for every blob's owner.
    for edge in edges.iter().flatten() {
        converged(&edge.url, args.edges).await?;
    }
    let mut agents = Vec::new();
    let mut hosts = Vec::new();
    for (r, name) in ["eu", "us"].iter().enumerate() {
        let urls: Vec<String> = edges[r].iter().map(|e| e.url.clone()).collect();
        for (i, host) in agent_hosts[r].iter().enumerate() {
            let setup = AgentSetup {
                binary: agent_binary,
                edges: &urls,
                spread_edges: true,
                origin: &origin,
                location: format!("{name}/z1/r1"),
                extra_toml: "",
                tls: None,
                logs,
            };
            agents.push(daemons::agent(host, &format!("agent-{name}-{i:02}"), &setup).await?);
            hosts.push(host.clone());
        }
    }

    let origin_before = sent_by(&origin_host)?;
    let inter_before = sent_by(&gateway)?;
    let clients = HostClient::for_hosts(Client::Curl, hosts.len()).await?;
    if kill {
        // A third of the way through the origin's transfer, eu's first edge (us's first parent,
        // and the owner of some of the blobs) dies.
        let victim = edges[0].remove(0);
        let after = image.total_blob_bytes as f64 * 8.0 / (args.origin_mbit as f64 * 1e6) / 3.0;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(after)).await;
            eprintln!("  killing eu's first edge after {after:.1} s");
            drop(victim);
        });
    }
    let servers = (&origin_host, &edge_hosts[0][1]);
    let measured = pull::all(&hosts, &clients, servers, |i| agents[i].url.clone(), image).await?;
    let times: Vec<f64> = measured.times.iter().map(Duration::as_secs_f64).collect();
    // Where each edge's bytes came from, for a round that went wrong.
    for (r, name) in ["eu", "us"].iter().enumerate() {
        for (i, edge) in edges[r].iter().enumerate() {
            if let Ok(m) = edge.metrics().await {
                eprintln!(
                    "  {name} edge {i}: received {:.1} MiB, from owners {} (failed {}), from parents {} (failed {})",
                    m.get("damselfly_edge_upstream_bytes_total") / MIB as f64,
                    m.get("damselfly_edge_owner_fetches_total"),
                    m.get("damselfly_edge_owner_failures_total"),
                    m.get("damselfly_edge_parent_fetches_total"),
                    m.get("damselfly_edge_parent_failures_total"),
                );
            }
        }
    }
    let done = |r: usize| {
        times[r * args.agents..(r + 1) * args.agents]
            .iter()
            .copied()
            .fold(0.0, f64::max)
    };
    drop(registry);
    Ok(Round {
        killed: kill,
        all_done: done(0).max(done(1)),
        eu_done: done(0),
        us_done: done(1),
        origin_bytes: sent_by(&origin_host)? - origin_before,
        inter_bytes: sent_by(&gateway)? - inter_before,
    })
}

/// Waits until the edge at `url` lists `members` live members.
async fn converged(url: &str, members: usize) -> Result<()> {
    let client = damselfly_test_support::net::loopback_client()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view: serde_json::Value = client
            .get(format!("{url}/api/v1/cluster"))
            .send()
            .await?
            .json()
            .await?;
        if view["members"].as_array().map(Vec::len) == Some(members) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{url} sees {view}, not {members} members"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes `host` has sent so far (its switch port's received bytes).
fn sent_by(host: &Host) -> Result<u64> {
    let path = format!("/sys/class/net/{}/statistics/rx_bytes", host.port());
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", SWITCH, "cat", &path])
        .output()
        .context("reading a port counter")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| anyhow!("{path}: {e}"))
}

/// A process in a namespace and the directory holding its log (removed after it stops).
type Helper = (ChildGuard, tempfile::TempDir);

/// A Redis without persistence on `host`'s address.
fn redis(host: &Host) -> Result<Helper> {
    let dir = tempfile::Builder::new()
        .prefix("damselfly-bench-redis-")
        .tempdir()?;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &host.ns, "redis-server", "--bind", &host.ip])
        .args([
            "--port",
            &REDIS_PORT.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--protected-mode", "no"]);
    let guard = ChildGuard::spawn_logged("redis", cmd, dir.path())?;
    wait_port(&format!("{}:{REDIS_PORT}", host.ip))?;
    Ok((guard, dir))
}

/// `bench relay` in `host`'s namespace, forwarding each `(listen, to)` pair.
fn relay(host: &Host, pairs: &[(String, String)]) -> Result<Helper> {
    let dir = tempfile::Builder::new()
        .prefix("damselfly-bench-relay-")
        .tempdir()?;
    let bench = std::env::current_exe()?;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &host.ns]).arg(bench).arg("relay");
    for (listen, to) in pairs {
        cmd.arg(format!("{listen}={to}"));
    }
    let guard = ChildGuard::spawn_logged("relay", cmd, dir.path())?;
    for (listen, _) in pairs {
        wait_port(listen)?;
    }
    Ok((guard, dir))
}

/// Waits until something listens at `addr` (reached over the unshaped control link).
fn wait_port(addr: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let target: std::net::SocketAddr = addr.parse()?;
    while std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "nothing listens at {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `bench relay LISTEN=TO...`: forwards every TCP connection to LISTEN on to TO.
pub async fn serve_relay(pairs: Vec<String>) -> Result<()> {
    let mut tasks = Vec::new();
    for pair in pairs {
        let (listen, to) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("{pair}: expected LISTEN=TO"))?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let to = to.to_string();
        tasks.push(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }
    futures::future::join_all(tasks).await;
    Ok(())
}

/// A lower bound per region (Kumar-Ross, the region's way in as the source: the origin's link
/// for eu, the inter-region link, at most the origin's, for us; the edges' and the agents'
/// uplinks as the peers'), and the later of the two.
fn bound(args: &RegionArgs, bytes: f64) -> (f64, f64) {
    let bps = |mbit: u64| mbit as f64 * 1e6 / 8.0;
    let mut uplinks = vec![bps(args.edge_mbit); args.edges];
    uplinks.extend(vec![bps(args.host_mbit); args.agents]);
    let downlinks = vec![bps(args.host_mbit.min(args.edge_mbit)); args.edges + args.agents];
    let eu = lower_bound(bytes, bps(args.origin_mbit), &uplinks, &downlinks);
    let us = lower_bound(
        bytes,
        bps(args.inter_mbit.min(args.origin_mbit)),
        &uplinks,
        &downlinks,
    );
    (eu, us)
}

fn print(args: &RegionArgs, blob_bytes: u64, rounds: &[Round]) {
    let (eu_bound, us_bound) = bound(args, blob_bytes as f64);
    let all_bound = eu_bound.max(us_bound);
    let cells: Vec<Vec<String>> = rounds
        .iter()
        .map(|r| {
            vec![
                if r.killed { "one eu edge killed" } else { "all up" }.into(),
                format!("{:.1}", r.eu_done),
                format!("{:.1}", r.us_done),
                format!("{:.2}", ratio(r.all_done, all_bound)),
                format!("{:.2}", ratio(r.origin_bytes as f64, blob_bytes as f64)),
                format!("{:.2}", ratio(r.inter_bytes as f64, blob_bytes as f64)),
            ]
        })
        .collect();
    table(
        &format!(
            "two regions of {} edges and {} agents: origin {} Mbit/s, between the regions {} Mbit/s, \
             edges {} and agents {} Mbit/s; {:.1} MiB image; bound {:.1} s (eu {:.1}, us {:.1}); \
             bytes counted on the wire, headers included",
            args.edges,
            args.agents,
            args.origin_mbit,
            args.inter_mbit,
            args.edge_mbit,
            args.host_mbit,
            blob_bytes as f64 / MIB as f64,
            all_bound,
            eu_bound,
            us_bound
        ),
        &[
            "round",
            "eu all done s",
            "us all done s",
            "vs bound",
            "origin / image",
            "between regions / image",
        ],
        &cells,
    );
    let results: Vec<_> = rounds
        .iter()
        .map(|r| {
            json!({
                "one_eu_edge_killed": r.killed,
                "all_done_s": r.all_done,
                "eu_all_done_s": r.eu_done,
                "us_all_done_s": r.us_done,
                "vs_bound": ratio(r.all_done, all_bound),
                "origin_vs_image": ratio(r.origin_bytes as f64, blob_bytes as f64),
                "inter_region_vs_image": ratio(r.inter_bytes as f64, blob_bytes as f64),
            })
        })
        .collect();
    json_line(&json!({
        "scenario": "region",
        "edges_per_region": args.edges,
        "agents_per_region": args.agents,
        "origin_mbit": args.origin_mbit,
        "inter_mbit": args.inter_mbit,
        "image_bytes": blob_bytes,
        "lower_bound_s": all_bound,
        "results": results,
    }));
}
