//! The edges of a region as one cache: members found through the Redis they share, one owner
//! per blob, and a miss at any other member fetched from the owner instead of the origin.
//!
//! Membership: every member writes its `advertise_url` with the time into one sorted set per
//! region (`damselfly:edges:<region>`) each `cluster.heartbeat_ms`, drops entries older than
//! `cluster.member_timeout_ms`, and reads the rest: an edge that stops answering is out of every
//! member's ring within the timeout plus a heartbeat, and back with its next heartbeat.
//!
//! Ownership: rendezvous hashing of the blob's digest over the live members (the highest
//! BLAKE3 of digest and member URL wins), so a member leaving moves only its own blobs. A member
//! that is not a blob's owner fetches it from the owner's registry API (`/v2/…/blobs/…`, which
//! streams while the owner is still ingesting), forwarding the caller's credentials and marking
//! the request with [`EDGE_HOP_HEADER`]: the owner then goes to the origin itself, whatever its
//! own view of the ring, so two members that disagree can never send a blob round in a loop.
//! When the owner cannot be reached (it died, perhaps mid-transfer), the member waits until the
//! owner has left its view of the ring (`member_timeout_ms` at most) and asks the next owner,
//! resuming with `Range` from what it has: every member agrees on that one, which fetches the
//! rest from the origin, so the origin sends the rest once. An owner that answers with an error
//! (or a second owner that cannot be reached either) sends the member to the origin itself.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use damselfly_core::{Digest, PieceHash, RepositoryName};
use http::HeaderValue;
use redis::aio::ConnectionManager;

use crate::chain::REGIONS_HEADER;
use crate::error::{EdgeError, EdgeResult};
use crate::metrics::Metrics;
use crate::store::now_millis;

/// Set on a request one edge makes to another for a blob: the receiver fetches it from the
/// origin, never from a third member.
pub const EDGE_HOP_HEADER: &str = "x-damselfly-edge-hop";

/// Longest wait for an owner's answer (its headers) before the origin is asked instead.
const OWNER_ANSWER: Duration = Duration::from_secs(10);

pub struct Cluster {
    me: String,
    key: String,
    heartbeat: Duration,
    timeout: Duration,
    connection: ConnectionManager,
    /// The live members' URLs as last read (this edge's own included once it has written it).
    members: RwLock<Vec<String>>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// Joins the region's ring (see the module's doc) and keeps the view of it fresh while
    /// the runtime runs.
    pub async fn join(
        redis: &redis::Client,
        advertise_url: &str,
        region: &str,
        (heartbeat, timeout): (Duration, Duration),
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> EdgeResult<Arc<Cluster>> {
        let connection = damselfly_server::tls::redis_connection(redis)
            .await
            .map_err(|e| EdgeError::Internal(format!("cluster: redis: {e}")))?;
        let cluster = Arc::new(Cluster {
            me: advertise_url.trim_end_matches('/').to_string(),
            key: format!("damselfly:edges:{region}"),
            heartbeat,
            timeout,
            connection,
            members: RwLock::new(Vec::new()),
            http,
            metrics,
        });
        if let Err(e) = cluster.beat().await {
            tracing::warn!(error = %e, "cluster: first heartbeat failed; retrying");
        }
        // A second look one heartbeat later, before serving: edges started together (a
        // StatefulSet's) then see each other from their first request on, instead of each
        // taking itself for every blob's owner until its next heartbeat.
        tokio::time::sleep(cluster.heartbeat).await;
        if let Err(e) = cluster.beat().await {
            tracing::warn!(error = %e, "cluster: second heartbeat failed; retrying");
        }
        let (weak, heartbeat) = (Arc::downgrade(&cluster), cluster.heartbeat);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(heartbeat).await;
                let Some(cluster) = weak.upgrade() else { return };
                if let Err(e) = cluster.beat().await {
                    // Alone until Redis answers again: every blob is this edge's own.
                    tracing::warn!(error = %e, "cluster: heartbeat failed");
                    cluster.set_members(Vec::new());
                }
            }
        });
        Ok(cluster)
    }

    /// Writes this member's heartbeat, drops stale members, reads the live ones.
    async fn beat(&self) -> EdgeResult<()> {
        let now = now_millis();
        let stale = now.saturating_sub(self.timeout.as_millis() as u64);
        let mut c = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.zadd(&self.key, &self.me, now)
            .ignore()
            .zrembyscore(&self.key, 0, stale)
            .ignore()
            .zrangebyscore(&self.key, stale + 1, "+inf");
        let read = pipe.query_async::<(Vec<String>,)>(&mut c);
        let (members,) = tokio::time::timeout(self.heartbeat.max(Duration::from_secs(1)), read)
            .await
            .map_err(|_| EdgeError::Internal("cluster: redis did not answer".into()))?
            .map_err(|e| EdgeError::Internal(format!("cluster: {e}")))?;
        self.set_members(members);
        Ok(())
    }

    fn set_members(&self, mut members: Vec<String>) {
        members.sort();
        self.metrics.cluster_members.set(members.len() as i64);
        if let Ok(mut held) = self.members.write() {
            if *held != members {
                tracing::info!(?members, "cluster members changed");
            }
            *held = members;
        }
    }

    /// This edge's URL, as the others reach it.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live members, sorted.
    pub fn members(&self) -> Vec<String> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// The member that owns `digest`, when it is another edge than this one.
    pub fn other_owner(&self, digest: &Digest) -> Option<String> {
        let members = self.members.read().ok()?;
        let owner = owner_of(digest, &members)?;
        (owner != self.me).then(|| owner.to_string())
    }

    /// The blob from its owner (another member), from byte `from` on; `None` when this edge
    /// owns it, or no owner could serve it (the caller then asks the origin).
    pub(crate) async fn fetch_owned(&self, blob: &OwnerRequest<'_>, from: u64) -> Option<reqwest::Response> {
        let mut unreachable: Vec<String> = Vec::new();
        while let Some(owner) = self.other_owner(blob.digest) {
            if unreachable.contains(&owner) || unreachable.len() >= 2 {
                break;
            }
            match self.fetch_from(&owner, blob, from).await {
                Ok(response) => return Some(response),
                Err(OwnerFailure::Refused) => {
                    self.metrics.owner_failures.inc();
                    return None;
                }
                Err(OwnerFailure::Unreachable) => {
                    self.metrics.owner_failures.inc();
                    self.await_departure(&owner).await;
                    unreachable.push(owner);
                }
            }
        }
        None
    }

    /// Waits until `member` is out of this edge's view of the ring, or for as long as that
    /// takes a member that stopped (its timeout and two heartbeats).
    async fn await_departure(&self, member: &str) {
        let deadline = tokio::time::Instant::now() + self.timeout + 2 * self.heartbeat;
        while tokio::time::Instant::now() < deadline && self.members().iter().any(|m| m == member) {
            tokio::time::sleep(self.heartbeat / 4).await;
        }
    }

    async fn fetch_from(
        &self,
        owner: &str,
        blob: &OwnerRequest<'_>,
        from: u64,
    ) -> Result<reqwest::Response, OwnerFailure> {
        let mut request = self
            .http
            .get(format!("{owner}/v2/{}/blobs/{}", blob.repo, blob.digest))
            .query(&[("ns", blob.registry)])
            .header(EDGE_HOP_HEADER, "1");
        if !blob.passed.is_empty() {
            request = request.header(REGIONS_HEADER, blob.passed.join(","));
        }
        if let Some(auth) = blob.authorization {
            request = request.header(http::header::AUTHORIZATION, auth.clone());
        }
        if from > 0 {
            request = request.header(http::header::RANGE, format!("bytes={from}-"));
        }
        let answer = tokio::time::timeout(OWNER_ANSWER, request.send()).await;
        let (failure, why) = match answer {
            Ok(Ok(response)) if response.status().is_success() => {
                self.metrics.owner_fetches.inc();
                return Ok(response);
            }
            Ok(Ok(response)) => (OwnerFailure::Refused, format!("answered {}", response.status())),
            Ok(Err(e)) => (OwnerFailure::Unreachable, e.to_string()),
            Err(_) => (
                OwnerFailure::Unreachable,
                format!("no answer within {OWNER_ANSWER:?}"),
            ),
        };
        tracing::warn!(digest = %blob.digest, %owner, error = %why, "owner edge could not serve the blob");
        Err(failure)
    }
}

/// Why an owner did not serve a blob.
enum OwnerFailure {
    /// It answered with an error: another owner would not do better, the origin may.
    Refused,
    /// No answer: it may be gone, and the ring will say so.
    Unreachable,
}

/// What an owner is asked for.
pub(crate) struct OwnerRequest<'a> {
    pub digest: &'a Digest,
    pub repo: &'a RepositoryName,
    /// The registry's name, as `?ns=` names it to the owner.
    pub registry: &'a str,
    pub authorization: Option<&'a HeaderValue>,
    /// The regions the request that started the transfer had passed through (`chain.rs`).
    pub passed: &'a [String],
}

/// Rendezvous hashing: the member with the highest BLAKE3(digest ‖ member).
pub fn owner_of<'a>(digest: &Digest, members: &'a [String]) -> Option<&'a str> {
    let score = |member: &str| PieceHash::Blake3.of(&[digest.as_bytes(), member.as_bytes()].concat());
    members.iter().max_by_key(|m| score(m)).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("https://edge-{i}.eu:5080")).collect()
    }

    #[test]
    fn every_blob_has_one_owner_and_a_member_leaving_moves_only_its_own() {
        let all = members(5);
        let digests: Vec<Digest> = (0..2000u32).map(|i| Digest::of(&i.to_be_bytes())).collect();
        let owners: Vec<&str> = digests.iter().map(|d| owner_of(d, &all).unwrap()).collect();
        // Spread: each of 5 members owns about a fifth.
        for m in &all {
            let owned = owners.iter().filter(|o| **o == m.as_str()).count();
            assert!((300..500).contains(&owned), "{m} owns {owned} of 2000");
        }
        // The order members are listed in does not matter.
        let mut shuffled = all.clone();
        shuffled.reverse();
        assert!(digests
            .iter()
            .zip(&owners)
            .all(|(d, o)| owner_of(d, &shuffled) == Some(*o)));
        // Without edge-2, only edge-2's blobs move.
        let without: Vec<String> = all.iter().filter(|m| !m.contains("edge-2")).cloned().collect();
        for (d, before) in digests.iter().zip(&owners) {
            let after = owner_of(d, &without).unwrap();
            if !before.contains("edge-2") {
                assert_eq!(after, *before);
            }
        }
        assert_eq!(owner_of(&digests[0], &[]), None);
    }
}
