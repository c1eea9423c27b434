//! Hosts in network namespaces on one bridge, with `tbf` rate limits.
//!
//! The bridge lives in its own "switch" namespace, so hosts' traffic never meets the root
//! namespace's routes or firewall. One unshaped veth joins the root namespace to the bridge so
//! this process can push the image, probe readiness and scrape metrics; no measured byte crosses
//! it. Rates are `tbf` on both ends of each host's veth: the host side limits what it sends, the
//! switch side what it receives. `tbf` is used because kernels built without `sch_netem` (like
//! the microVMs this runs on) still have it.
//!
//! Every name starts with [`PREFIX`], so whatever an interrupted run left behind is removed at
//! the next start.

use std::process::Command;

use anyhow::{bail, Context, Result};
use damselfly_test_support::process::{self, run_checked};

pub const PREFIX: &str = "dfb-";
/// The namespace holding the bridge and every host's switch-side port.
pub const SWITCH: &str = "dfb-sw";
const CONTROL_LINK: &str = "dfb-ctl";
/// Host octet of the root namespace on the bench subnet.
const CONTROL_OCTET: u8 = 254;

/// A host: its namespace and address on the bench subnet.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ip: String,
    /// Switch-side end of the host's veth.
    port: String,
}

impl Host {
    /// The switch-side end of the host's veth (`p-<name>`, in [`SWITCH`]): it receives what the
    /// host sends and sends what the host receives.
    pub fn port(&self) -> &str {
        &self.port
    }
}

/// The switch namespace and every host added to it; all deleted on drop.
pub struct Topology {
    subnet: String,
    hosts: Vec<Host>,
}

impl Topology {
    /// Removes stale `dfb-*` namespaces, then creates the switch and the control link.
    /// `subnet` is the first three octets (`10.213.0`).
    pub fn create(subnet: &str) -> Result<Topology> {
        ensure_root()?;
        remove_stale()?;
        let topology = Topology {
            subnet: subnet.to_string(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", SWITCH])?;
        ip(&["-n", SWITCH, "link", "set", "lo", "up"])?;
        ip(&["-n", SWITCH, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", SWITCH, "link", "set", "br0", "up"])?;
        ip(&[
            "link",
            "add",
            CONTROL_LINK,
            "type",
            "veth",
            "peer",
            "name",
            "p-ctl",
            "netns",
            SWITCH,
        ])?;
        ip(&["-n", SWITCH, "link", "set", "p-ctl", "master", "br0", "up"])?;
        let control = format!("{subnet}.{CONTROL_OCTET}/24");
        ip(&["addr", "add", &control, "dev", CONTROL_LINK])?;
        ip(&["link", "set", CONTROL_LINK, "up"])?;
        Ok(topology)
    }

    /// A new namespace `dfb-<name>` with `eth0` at `<subnet>.<octet>` on the bridge (unshaped).
    pub fn add_host(&mut self, name: &str, octet: u8) -> Result<Host> {
        let ns = format!("{PREFIX}{name}");
        // Interface names are limited to 15 bytes; host names here are short.
        let port = format!("p-{name}");
        let ip_addr = format!("{}.{octet}", self.subnet);
        ip(&["netns", "add", &ns])?;
        let host = Host {
            ns: ns.clone(),
            ip: ip_addr.clone(),
            port: port.clone(),
        };
        self.hosts.push(host.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", SWITCH,
        ])?;
        ip(&["-n", SWITCH, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(host)
    }

    /// Limits what `host` sends to `up_mbit` and what it receives to `down_mbit`.
    pub fn shape(&self, host: &Host, up_mbit: u64, down_mbit: u64) -> Result<()> {
        tbf(&host.ns, "eth0", up_mbit)?;
        tbf(SWITCH, &host.port, down_mbit)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut names: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        names.push(SWITCH.to_string());
        for ns in names {
            if let Err(e) = delete_namespace(&ns) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// The bench needs CAP_NET_ADMIN for namespaces and qdiscs; say so plainly rather than failing
/// on the first `ip` command.
fn ensure_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if euid != "0" {
        bail!(
            "this scenario creates network namespaces and tc qdiscs and must run as root \
             (try: sudo target/release/bench swarm)"
        );
    }
    Ok(())
}

/// Deletes every `dfb-*` namespace left by an interrupted run (and the processes inside).
fn remove_stale() -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running ip netns list")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name.starts_with(PREFIX) {
            eprintln!("removing stale namespace {name}");
            delete_namespace(name)?;
        }
    }
    // Deleting the switch namespace removes the control veth with it; this covers a half-made one.
    let _ = Command::new("ip").args(["link", "del", CONTROL_LINK]).output();
    Ok(())
}

/// Kills what still runs in `ns` (a namespace outlives nothing, but its processes outlive it),
/// then deletes it.
fn delete_namespace(ns: &str) -> Result<()> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output()?;
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    ip(&["netns", "del", ns]).with_context(|| format!("deleting namespace {ns}"))
}

fn tbf(ns: &str, dev: &str, mbit: u64) -> Result<()> {
    // The bucket must hold at least one timer tick of traffic or tbf undershoots its rate;
    // 256 KiB covers 200 Mbit/s at HZ=100 and was measured to give 96% goodput at 100 Mbit/s.
    let burst = (mbit * 1_000_000 / 8 / 100).max(256 * 1024);
    let (rate, burst) = (format!("{mbit}mbit"), burst.to_string());
    let _ = Command::new("tc")
        .args(["-n", ns, "qdisc", "del", "dev", dev, "root"])
        .output();
    run_checked(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "latency",
            "100ms",
        ],
    )
}

fn ip(args: &[&str]) -> Result<()> {
    run_checked("ip", args)
}

/// CPU seconds (user + system) used so far by the processes now in `namespaces`.
pub fn cpu_seconds<'a>(namespaces: impl IntoIterator<Item = &'a str>) -> f64 {
    let mut total = 0.0;
    for ns in namespaces {
        let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
            continue;
        };
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            // A process may end between the listing and the read: it then counts nothing.
            if let Some(seconds) = pid.parse().ok().and_then(|pid| process::cpu_seconds(pid).ok()) {
                total += seconds;
            }
        }
    }
    total
}
