//! A preheat job: what to warm, where, and how far each piece of it got.
//!
//! A job is the unit of durability: it is stored whole after every change, so a preheater that
//! stops at any point resumes from the last stored state. State moves one way:
//! `pending → running → succeeded | failed`; a job found `running` at start-up is resumed.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use damselfly_core::SealedValue;
use serde::{Deserialize, Serialize};

use crate::events::Intent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
}

/// What the job warms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// An image by tag or digest: resolved to its manifests, config and layers. `digest` pins
    /// the manifest a push event announced for the tag.
    Image {
        reference: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// One manifest by digest.
    Manifest { digest: String },
    /// One blob.
    Blob { digest: String, size: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    Blob,
    Manifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmState {
    Pending,
    Warming,
    Cached,
    Failed,
}

/// One item at one region's edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    pub state: WarmState,
    /// Warm attempts the last run needed (or spent, when it failed).
    pub attempts: u32,
    pub error: Option<String>,
}

/// A blob or manifest to warm at every target region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: ItemKind,
    /// Always set for blobs; for the tagged top manifest, the digest the tag resolved to.
    pub digest: Option<String>,
    /// Manifests warmed by tag (the edge then records the tag mapping).
    pub tag: Option<String>,
    pub size: Option<u64>,
    pub media_type: Option<String>,
    pub regions: BTreeMap<String, RegionState>,
}

impl Item {
    pub fn new(kind: ItemKind, digest: Option<String>, tag: Option<String>) -> Self {
        Item {
            kind,
            digest,
            tag,
            size: None,
            media_type: None,
            regions: BTreeMap::new(),
        }
    }

    pub fn with_size(mut self, size: Option<u64>) -> Self {
        self.size = size;
        self
    }

    pub fn with_media_type(mut self, media_type: Option<String>) -> Self {
        self.media_type = media_type;
        self
    }
}

/// What a client or an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// `api`, `distribution`, `harbor` (webhooks) or `harbor-p2p` (Harbor's P2P Preheat).
    pub source: &'static str,
    pub registry: String,
    pub repository: String,
    pub target: Target,
    /// Platform filter for indexes; empty: the configured default.
    pub platforms: Vec<String>,
    /// Target regions.
    pub regions: Vec<String>,
}

impl JobSpec {
    pub fn from_intent(
        source: &'static str,
        intent: &Intent,
        platforms: Vec<String>,
        regions: Vec<String>,
    ) -> Self {
        let (registry, repository, target) = match intent {
            Intent::Blob {
                registry,
                repository,
                digest,
                size,
            } => (
                registry,
                repository,
                Target::Blob {
                    digest: digest.to_string(),
                    size: *size,
                },
            ),
            Intent::Image {
                registry,
                repository,
                reference,
                digest,
            } => (
                registry,
                repository,
                Target::Image {
                    reference: reference.to_string(),
                    digest: digest.map(|d| d.to_string()),
                },
            ),
            Intent::Manifest {
                registry,
                repository,
                digest,
            } => (
                registry,
                repository,
                Target::Manifest {
                    digest: digest.to_string(),
                },
            ),
        };
        JobSpec {
            source,
            registry: registry.clone(),
            repository: repository.to_string(),
            target,
            platforms,
            regions,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub source: String,
    pub registry: String,
    pub repository: String,
    pub target: Target,
    pub platforms: Vec<String>,
    pub regions: Vec<String>,
    pub state: JobState,
    /// Why the job failed.
    pub error: Option<String>,
    /// The digest and media type the target resolved to.
    pub resolved_digest: Option<String>,
    pub resolved_media_type: Option<String>,
    /// Every blob and manifest to warm, once resolved (empty before).
    pub items: Vec<Item>,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
    pub finished_at: Option<u64>,
    /// W3C `traceparent` of the request that created the job, so its trace continues here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The credential the requester supplied for this registry (Harbor's pull-only token):
    /// used to resolve and handed to the edges instead of the configured one. Stored so a
    /// resumed job can still use it, sealed with the cluster secret ([`CREDENTIAL`]), dropped
    /// when the job ends; never shown by the job API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<SealedValue>,
    /// Set when Harbor's P2P Preheat created the job through the provider API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<damselfly_harbor::provider::Origin>,
}

/// The purpose a job's credential is sealed for (see [`damselfly_core::SealedValue`]).
pub const CREDENTIAL: &str = "job-credential";

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Ids sort by creation time (millisecond hex prefix), so listings need no second index.
pub fn new_id(now: u64) -> String {
    format!("{now:012x}{:08x}", rand::random::<u32>())
}

/// Harbor reads provider job ids as integers (Go `int`). A numbered job's id is the usual
/// layout with a 21-bit random part, so the number `millis << 21 | random` and the id convert
/// both ways without a second index; it stays below 2^63 until the year 2109.
const NUMBER_RANDOM_BITS: u32 = 21;

pub fn id_for_number(number: u64) -> String {
    let random = number & ((1 << NUMBER_RANDOM_BITS) - 1);
    format!("{:012x}{random:08x}", number >> NUMBER_RANDOM_BITS)
}

/// The number of a numbered job's id; `None` for any other id.
pub fn number_of_id(id: &str) -> Option<u64> {
    if id.len() != 20 {
        return None;
    }
    let millis = u64::from_str_radix(id.get(..12)?, 16).ok()?;
    let random = u64::from_str_radix(id.get(12..)?, 16).ok()?;
    (millis < 1 << (63 - NUMBER_RANDOM_BITS) && random < 1 << NUMBER_RANDOM_BITS)
        .then_some(millis << NUMBER_RANDOM_BITS | random)
}

impl Job {
    /// Items cached at `region`, and items in all (0 before the job is resolved).
    pub fn cached_at(&self, region: &str) -> (u64, u64) {
        let done = self
            .items
            .iter()
            .filter(|i| {
                i.regions
                    .get(region)
                    .is_some_and(|r| r.state == WarmState::Cached)
            })
            .count();
        (done as u64, self.items.len() as u64)
    }

    /// A job whose id is also a number (see [`id_for_number`]).
    pub fn new_numbered(spec: JobSpec, now: u64) -> (u64, Job) {
        let random = u64::from(rand::random::<u32>()) & ((1 << NUMBER_RANDOM_BITS) - 1);
        let number = (now << NUMBER_RANDOM_BITS) | random;
        let mut job = Job::new(spec, now);
        job.id = id_for_number(number);
        (number, job)
    }

    /// The job as the job API shows it: without the requester's credential.
    pub fn redacted(mut self) -> Job {
        self.authorization = None;
        self
    }

    pub fn new(spec: JobSpec, now: u64) -> Job {
        Job {
            id: new_id(now),
            source: spec.source.to_string(),
            registry: spec.registry,
            repository: spec.repository,
            target: spec.target,
            platforms: spec.platforms,
            regions: spec.regions,
            state: JobState::Pending,
            error: None,
            resolved_digest: None,
            resolved_media_type: None,
            items: Vec::new(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            traceparent: damselfly_server::logging::current_traceparent(),
            authorization: None,
            provider: None,
        }
    }

    /// A pending job for `r:5000/a/b:v1` at region `eu`, created at `now`: the job the store
    /// tests queue (the embedded store's here, the Redis store's against a real server), where
    /// only its id and times matter.
    #[doc(hidden)]
    pub fn sample(now: u64) -> Job {
        Job::new(
            JobSpec {
                source: "api",
                registry: "r:5000".into(),
                repository: "a/b".into(),
                target: Target::Image {
                    reference: "v1".into(),
                    digest: None,
                },
                platforms: vec![],
                regions: vec!["eu".into()],
            },
            now,
        )
    }

    /// `pending`/`running` → `running`. False (and no change) for a finished job.
    pub fn start(&mut self, now: u64) -> bool {
        if self.state.is_terminal() {
            return false;
        }
        self.state = JobState::Running;
        self.updated_at = now;
        true
    }

    /// Sets the resolved items, each pending at every target region.
    pub fn set_items(&mut self, items: Vec<Item>, now: u64) {
        self.items = items
            .into_iter()
            .map(|mut item| {
                item.regions = self
                    .regions
                    .iter()
                    .map(|r| {
                        let state = RegionState {
                            state: WarmState::Pending,
                            attempts: 0,
                            error: None,
                        };
                        (r.clone(), state)
                    })
                    .collect();
                item
            })
            .collect();
        self.updated_at = now;
    }

    pub fn is_resolved(&self) -> bool {
        !self.items.is_empty()
    }

    /// Every (item index, region) not cached yet, blobs before manifests so a tag appears at an
    /// edge only after the layers it needs.
    pub fn outstanding(&self) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = self
            .items
            .iter()
            .enumerate()
            .flat_map(|(i, item)| {
                item.regions
                    .iter()
                    .filter(|(_, s)| s.state != WarmState::Cached)
                    .map(move |(r, _)| (i, r.clone()))
            })
            .collect();
        out.sort_by_key(|(i, _)| self.items[*i].kind == ItemKind::Manifest);
        out
    }

    pub fn set_warm_state(&mut self, item: usize, region: &str, state: RegionState, now: u64) {
        if let Some(slot) = self.items.get_mut(item).and_then(|i| i.regions.get_mut(region)) {
            *slot = state;
            self.updated_at = now;
        }
    }

    /// Ends the job: succeeded only when every item is cached at every region.
    pub fn finish(&mut self, now: u64) {
        let failures: Vec<String> = self
            .items
            .iter()
            .flat_map(|item| {
                item.regions
                    .iter()
                    .filter(|(_, s)| s.state != WarmState::Cached)
                    .map(move |(region, s)| {
                        let what = item.tag.as_deref().or(item.digest.as_deref()).unwrap_or("?");
                        format!("{region}: {what}: {}", s.error.as_deref().unwrap_or("not cached"))
                    })
            })
            .collect();
        if self.items.is_empty() {
            self.fail("nothing to warm".into(), now);
        } else if failures.is_empty() {
            self.state = JobState::Succeeded;
            self.error = None;
            self.finished_at = Some(now);
            self.updated_at = now;
            self.authorization = None;
        } else {
            let total: usize = self.items.iter().map(|i| i.regions.len()).sum();
            let shown: Vec<&str> = failures.iter().take(5).map(String::as_str).collect();
            self.fail(
                format!("{} of {total} warms failed: {}", failures.len(), shown.join("; ")),
                now,
            );
        }
    }

    pub fn fail(&mut self, error: String, now: u64) {
        self.state = JobState::Failed;
        self.error = Some(error);
        self.finished_at = Some(now);
        self.updated_at = now;
        // Nothing runs any more that needs it: the store keeps no credential past the job.
        self.authorization = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn job() -> Job {
        Job::new(
            JobSpec {
                source: "api",
                registry: "127.0.0.1:5000".into(),
                repository: "demo/app".into(),
                target: Target::Image {
                    reference: "v1".into(),
                    digest: None,
                },
                platforms: vec![],
                regions: vec!["eu".into(), "us".into()],
            },
            1_000,
        )
    }

    impl Job {
        fn spec_for_test(&self) -> JobSpec {
            JobSpec {
                source: "api",
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                target: self.target.clone(),
                platforms: vec![],
                regions: self.regions.clone(),
            }
        }
    }

    fn cached() -> RegionState {
        RegionState {
            state: WarmState::Cached,
            attempts: 1,
            error: None,
        }
    }

    #[test]
    fn succeeds_only_when_everything_is_cached_everywhere() {
        let mut j = job();
        assert!(j.start(2_000));
        assert_eq!(j.state, JobState::Running);
        j.set_items(
            vec![
                Item::new(ItemKind::Manifest, Some(D2.into()), Some("v1".into())),
                Item::new(ItemKind::Blob, Some(D1.into()), None),
            ],
            2_000,
        );
        let outstanding = j.outstanding();
        assert_eq!(outstanding.len(), 4);
        assert_eq!(outstanding[0].0, 1, "blobs come before manifests");
        for (i, r) in outstanding {
            if !(i == 1 && r == "us") {
                j.set_warm_state(i, &r, cached(), 3_000);
            }
        }
        assert_eq!(j.outstanding(), vec![(1, "us".to_string())]);
        let mut failed = j.clone();
        failed.set_warm_state(
            1,
            "us",
            RegionState {
                state: WarmState::Failed,
                attempts: 5,
                error: Some("edge said 503".into()),
            },
            4_000,
        );
        failed.finish(4_000);
        assert_eq!(failed.state, JobState::Failed);
        let error = failed.error.unwrap();
        assert!(
            error.contains("1 of 4") && error.contains("us: ") && error.contains("503"),
            "{error}"
        );

        j.set_warm_state(1, "us", cached(), 5_000);
        j.finish(5_000);
        assert_eq!(j.state, JobState::Succeeded);
        assert_eq!(j.finished_at, Some(5_000));
        assert!(!j.start(6_000), "a finished job does not start again");
        assert_eq!(j.state, JobState::Succeeded);
    }

    #[test]
    fn numbered_ids_convert_both_ways() {
        let now = 1_795_638_956_459;
        let (number, j) = Job::new_numbered(job().spec_for_test(), now);
        assert!(i64::try_from(number).is_ok());
        assert_eq!(j.id.len(), 20);
        assert_eq!(id_for_number(number), j.id);
        assert_eq!(number_of_id(&j.id), Some(number));
        assert!(j.id > new_id(now - 1), "numbered ids sort with the others");
        assert_eq!(number_of_id(&format!("{now:012x}ffffffff")), None);
        assert_eq!(number_of_id("zz"), None);
        assert_eq!(number_of_id(&format!("{now:012x}00200000")), None);
    }

    #[test]
    fn a_job_with_nothing_resolved_fails() {
        let mut j = job();
        j.start(1);
        j.finish(2);
        assert_eq!(j.state, JobState::Failed);
    }

    #[test]
    fn ids_sort_by_creation_and_jobs_round_trip_as_json() {
        assert!(new_id(1) < new_id(2));
        assert_eq!(new_id(5).len(), 20);
        let mut j = job();
        j.set_items(
            vec![Item::new(ItemKind::Blob, Some(D1.into()), None).with_size(Some(3))],
            9,
        );
        let text = serde_json::to_string(&j).unwrap();
        assert!(
            text.contains(r#""target":{"kind":"image","reference":"v1"}"#),
            "{text}"
        );
        assert!(text.contains(r#""state":"pending""#));
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), j);
    }
}
