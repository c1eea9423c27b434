//! Harbor 2.1–2.11: the Dragonfly 1.x API, `POST /preheats` and `GET /preheats/<id>`.
//!
//! The create answer is `{"id": "<string>"}` (Harbor matches keys case-insensitively). Status
//! words: `WAITING` (Harbor shows PENDING), `RUNNING`, `SUCCESS`, `FAILED`; Harbor polls any other
//! word until its 30-minute timeout, so no other word is ever sent. Times are Dragonfly 1.x's
//! `YYYY-MM-DD HH:MM:SS` strings, `""` until there is one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::job::{Api, Origin, PreheatRequest, Progress, ProviderJob};
use super::oapi::authorization;
use crate::time::legacy;
use crate::{ManifestUrl, Scope};

/// Harbor's `PreheatImage`. `image`, `tag` and `digest` repeat what `url` says.
#[derive(Debug, Deserialize)]
struct PreheatImage {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    url: String,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

pub fn parse(body: &[u8]) -> Result<PreheatRequest, String> {
    let request: PreheatImage =
        serde_json::from_slice(body).map_err(|e| format!("not a preheat request: {e}"))?;
    if let Some(kind) = request.kind.as_deref().filter(|k| *k != "image") {
        return Err(format!("preheat type {kind:?} is not supported (only \"image\")"));
    }
    Ok(PreheatRequest {
        manifest: ManifestUrl::parse(&request.url)?,
        authorization: authorization(request.headers.as_ref()),
        // Harbor before 2.12 has no scope: every edge, as Dragonfly 1.x warmed every supernode.
        origin: Origin {
            api: Api::Legacy,
            url: request.url,
            scope: Scope::AllSeedPeers,
        },
        cluster_ids: None,
    })
}

#[derive(Debug, Serialize)]
pub struct Created {
    pub id: String,
}

impl From<&ProviderJob> for Created {
    fn from(job: &ProviderJob) -> Self {
        Created {
            id: job.id.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub id: String,
    pub status: &'static str,
    #[serde(rename = "startTime")]
    pub start_time: String,
    #[serde(rename = "finishTime")]
    pub finish_time: String,
    #[serde(rename = "errorMsg")]
    pub error_msg: String,
}

pub fn status(progress: Progress) -> &'static str {
    match progress {
        Progress::Waiting => "WAITING",
        Progress::Running => "RUNNING",
        Progress::Succeeded => "SUCCESS",
        Progress::Failed => "FAILED",
    }
}

impl From<&ProviderJob> for Status {
    fn from(job: &ProviderJob) -> Self {
        let finished = matches!(job.progress, Progress::Succeeded | Progress::Failed);
        Status {
            id: job.id.to_string(),
            status: status(job.progress),
            start_time: legacy(job.created_at),
            finish_time: if finished {
                legacy(job.updated_at)
            } else {
                String::new()
            },
            error_msg: job.error.clone().unwrap_or_default(),
        }
    }
}
