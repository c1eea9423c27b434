//! A network namespace joined to this one by a veth pair: a host behind one link, for tests
//! that cut that link mid-transfer (`ip link set down`, the way a failed cable or switch port
//! looks from the far end: no reset, no refusal, nothing).
//!
//! Needs root (`ip netns`). Names carry the process id, so concurrent test binaries never meet,
//! and everything is deleted on drop (the namespace takes its end of the veth with it).

use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context, Result};

/// Links made by this process, for distinct names and subnets.
static NEXT: AtomicU8 = AtomicU8::new(0);

#[derive(Debug)]
pub struct Link {
    /// The namespace at the far end (`ip netns exec <ns> …` runs a process there).
    pub ns: String,
    /// This namespace's address on the link.
    pub near_ip: String,
    /// The far namespace's address on the link.
    pub far_ip: String,
    far_if: String,
}

impl Link {
    /// A new namespace with a /30 to this one, both ends up.
    pub fn create() -> Result<Link> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // 10.77.0.0/16 in /30s: the process id spreads concurrent binaries over the subnets.
        let slot = (pid as usize * 7 + n as usize) % 16_384;
        let (third, fourth) = (slot / 64, (slot % 64) * 4);
        let ns = format!("dfl-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let near_if = format!("dfl{}{n}a", pid % 100_000);
        let far_if = format!("dfl{}{n}b", pid % 100_000);
        let link = Link {
            ns: ns.clone(),
            near_ip: format!("10.77.{third}.{}", fourth + 1),
            far_ip: format!("10.77.{third}.{}", fourth + 2),
            far_if: far_if.clone(),
        };
        ip(&["netns", "add", &ns])?;
        // From here on, drop removes what was made.
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &near_if, "type", "veth", "peer", "name", &far_if, "netns", &ns,
        ])?;
        ip(&["addr", "add", &format!("{}/30", link.near_ip), "dev", &near_if])?;
        ip(&["link", "set", &near_if, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/30", link.far_ip),
            "dev",
            &far_if,
        ])?;
        ip(&["-n", &ns, "link", "set", &far_if, "up"])?;
        Ok(link)
    }

    /// Takes the far end's interface down: packets either way are lost from now on. This
    /// namespace's end stays configured (its route is only marked `linkdown`), so connections
    /// see silence rather than an error, as across a real cut.
    pub fn cut(&self) -> Result<()> {
        ip(&["-n", &self.ns, "link", "set", &self.far_if, "down"])
    }

    /// Brings the far end up again.
    pub fn restore(&self) -> Result<()> {
        ip(&["-n", &self.ns, "link", "set", &self.far_if, "up"])
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.ns]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    crate::process::run_checked("ip", args).context("network namespaces need root")
}
