//! Which edges a Harbor preheat warms.
//!
//! Harbor ≥ 2.13 sends the policy's `extra_attrs.scope` (`""`, `single_seed_peer`,
//! `all_seed_peers`, `all_peers`); 2.12 sends `policy.scope` (`single_peer`, `all_peers`);
//! 2.1–2.11 send none. An empty scope means what it means to Dragonfly: one seed peer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One edge: the first selected region's.
    SingleSeedPeer,
    /// Every selected region's edge.
    AllSeedPeers,
    /// Every selected region's edge; Damselfly has no registry of agents to push a prefetch to,
    /// so this warms exactly what `all_seed_peers` warms (agents then pull from a warm edge).
    AllPeers,
}

impl Scope {
    /// Parses what any Harbor version sends.
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s {
            "" | "single_seed_peer" | "single_peer" => Ok(Scope::SingleSeedPeer),
            "all_seed_peers" => Ok(Scope::AllSeedPeers),
            "all_peers" => Ok(Scope::AllPeers),
            other => Err(format!(
                "unknown scope {other:?} (expected single_seed_peer, all_seed_peers or all_peers)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SingleSeedPeer => "single_seed_peer",
            Scope::AllSeedPeers => "all_seed_peers",
            Scope::AllPeers => "all_peers",
        }
    }

    /// Whether every selected region is warmed (else only the first).
    pub fn every_region(self) -> bool {
        !matches!(self, Scope::SingleSeedPeer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_harbor_spelling_parses() {
        assert_eq!(Scope::parse("").unwrap(), Scope::SingleSeedPeer);
        assert_eq!(Scope::parse("single_peer").unwrap(), Scope::SingleSeedPeer);
        assert_eq!(Scope::parse("single_seed_peer").unwrap(), Scope::SingleSeedPeer);
        assert_eq!(Scope::parse("all_seed_peers").unwrap(), Scope::AllSeedPeers);
        assert_eq!(Scope::parse("all_peers").unwrap(), Scope::AllPeers);
        assert!(Scope::parse("some_peers").is_err());
        assert!(!Scope::SingleSeedPeer.every_region());
        assert!(Scope::AllPeers.every_region());
    }
}
