//! Harbor ≥ 2.12: Dragonfly2's Open API, `POST /oapi/v1/jobs` and `GET /oapi/v1/jobs/<id>`.
//!
//! Harbor decodes the answer as `{id int, created_at time, updated_at time, state, result}`:
//! `id` must be a JSON integer, timestamps RFC3339 (never `""`), and `state` one of `PENDING`
//! (keep polling), `SUCCESS` or `FAILURE` — any other word fails the task as "unknown state".
//! The rest mirrors Dragonfly's manager so the task log Harbor renders from
//! `result.job_states[].results[]` lists what each edge holds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::job::{Api, Origin, PreheatRequest, Progress, ProviderJob};
use crate::time::rfc3339;
use crate::{ManifestUrl, Scope};

#[derive(Debug, Deserialize)]
struct JobRequest {
    #[serde(rename = "type")]
    kind: String,
    args: Args,
    #[serde(default)]
    scheduler_cluster_ids: Option<Vec<u64>>,
}

/// Harbor also sends `tag`, `filtered_query_params`, `concurrent_count` and `timeout`, always as
/// zero values; they are accepted and ignored.
#[derive(Debug, Deserialize)]
struct Args {
    /// `image` (2.13+ always; 2.12 may send the artifact type): resolved as an image either way.
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    url: String,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    scope: Option<String>,
}

/// The `Authorization` entry of Harbor's `headers` map, whatever its case.
pub(crate) fn authorization(headers: Option<&BTreeMap<String, String>>) -> Option<String> {
    headers?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.trim().is_empty())
}

/// A create request body → what to warm.
pub fn parse(body: &[u8]) -> Result<PreheatRequest, String> {
    let request: JobRequest =
        serde_json::from_slice(body).map_err(|e| format!("not a Dragonfly job request: {e}"))?;
    if request.kind != "preheat" {
        return Err(format!(
            "job type {:?} is not supported (only \"preheat\")",
            request.kind
        ));
    }
    let scope = Scope::parse(request.args.scope.as_deref().unwrap_or(""))?;
    Ok(PreheatRequest {
        manifest: ManifestUrl::parse(&request.args.url)?,
        authorization: authorization(request.args.headers.as_ref()),
        origin: Origin {
            api: Api::Oapi,
            url: request.args.url,
            scope,
        },
        cluster_ids: request.scheduler_cluster_ids.filter(|ids| !ids.is_empty()),
    })
}

#[derive(Debug, Serialize)]
pub struct JobResponse {
    pub id: u64,
    pub created_at: String,
    pub updated_at: String,
    pub task_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: &'static str,
    pub args: ArgsView,
    /// `null` while pending, as Dragonfly answers.
    pub result: Option<JobResult>,
    pub scheduler_clusters: Vec<ClusterRef>,
}

/// The request's arguments, without Harbor's token.
#[derive(Debug, Serialize)]
pub struct ArgsView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub url: String,
    pub scope: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ClusterRef {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct JobResult {
    pub group_uuid: String,
    pub state: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub job_states: Vec<JobState>,
}

#[derive(Debug, Serialize)]
pub struct JobState {
    pub task_name: &'static str,
    pub task_uuid: String,
    pub state: &'static str,
    /// Harbor joins these into the task's failure message.
    pub error: String,
    pub ttl: u64,
    pub created_at: String,
    pub results: Vec<ClusterResult>,
}

#[derive(Debug, Serialize)]
pub struct ClusterResult {
    pub scheduler_cluster_id: u64,
    pub success_tasks: Vec<SuccessTask>,
    pub failure_tasks: Vec<FailureTask>,
}

#[derive(Debug, Serialize)]
pub struct SuccessTask {
    pub url: String,
    pub hostname: String,
    pub ip: String,
}

#[derive(Debug, Serialize)]
pub struct FailureTask {
    pub url: String,
    pub hostname: String,
    pub ip: String,
    pub description: String,
}

/// The only three words Harbor ≥ 2.12 accepts.
pub fn state(progress: Progress) -> &'static str {
    match progress {
        Progress::Waiting | Progress::Running => "PENDING",
        Progress::Succeeded => "SUCCESS",
        Progress::Failed => "FAILURE",
    }
}

impl From<&ProviderJob> for JobResponse {
    fn from(job: &ProviderJob) -> Self {
        let state = state(job.progress);
        let group = format!("group_damselfly_{}", job.id);
        let result = matches!(job.progress, Progress::Succeeded | Progress::Failed).then(|| JobResult {
            group_uuid: group.clone(),
            state,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            job_states: vec![JobState {
                task_name: "preheat",
                task_uuid: format!("task_damselfly_{}", job.id),
                state,
                error: job.error.clone().unwrap_or_default(),
                ttl: 0,
                created_at: rfc3339(job.created_at),
                results: job
                    .regions
                    .iter()
                    .map(|r| ClusterResult {
                        scheduler_cluster_id: r.cluster_id,
                        success_tasks: r
                            .cached
                            .iter()
                            .map(|url| SuccessTask {
                                url: url.clone(),
                                hostname: r.hostname.clone(),
                                ip: r.ip.clone(),
                            })
                            .collect(),
                        failure_tasks: r
                            .failed
                            .iter()
                            .map(|(url, why)| FailureTask {
                                url: url.clone(),
                                hostname: r.hostname.clone(),
                                ip: r.ip.clone(),
                                description: why.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            }],
        });
        JobResponse {
            id: job.id,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            task_id: group,
            kind: "preheat",
            state,
            args: ArgsView {
                kind: "image",
                url: job.origin.url.clone(),
                scope: job.origin.scope.as_str(),
            },
            result,
            scheduler_clusters: job
                .regions
                .iter()
                .map(|r| ClusterRef {
                    id: r.cluster_id,
                    name: r.region.clone(),
                })
                .collect(),
        }
    }
}
