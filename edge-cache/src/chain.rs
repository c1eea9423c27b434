//! Regions chained: an edge may name parent edges in other regions (`parents`, `--parent`),
//! asked in order for a blob before the origin, so that the origin sends each blob once
//! world-wide and the other regions take it across their own links.
//!
//! A request one edge makes to another names the regions it has passed through
//! ([`REGIONS_HEADER`], this edge's region last); an edge that finds its own region there
//! refuses it (`508 Loop Detected`), so a chain configured in a circle ends at the origin
//! instead of going round. A parent that cannot serve (refused, unreachable, an error) is
//! skipped: the next one, then the origin.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::cluster::OwnerRequest;
use crate::metrics::Metrics;

/// The regions a request between edges has passed through, comma-separated.
pub const REGIONS_HEADER: &str = "x-damselfly-regions";

/// Longest wait for a parent's answer (its headers) before the next one is asked.
const PARENT_ANSWER: Duration = Duration::from_secs(10);

/// Most regions a request may name: a chain longer than this is refused as a loop would be.
pub const MAX_REGIONS: usize = 8;

pub struct Parents {
    region: String,
    urls: Vec<String>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Parents {
    pub fn new(region: &str, urls: &[String], http: reqwest::Client, metrics: Arc<Metrics>) -> Parents {
        Parents {
            region: region.to_string(),
            urls: urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            http,
            metrics,
        }
    }

    /// The blob from the first parent that serves it, from byte `from` on; `None` when none
    /// does (the caller then asks the origin). `passed`: the regions the request that started
    /// this transfer had passed through.
    pub(crate) async fn fetch(
        &self,
        blob: &OwnerRequest<'_>,
        passed: &[String],
        from: u64,
    ) -> Option<reqwest::Response> {
        let mut path = passed.to_vec();
        path.push(self.region.clone());
        if path.len() > MAX_REGIONS {
            return None;
        }
        let regions = HeaderValue::from_str(&path.join(",")).ok()?;
        for parent in &self.urls {
            let mut request = self
                .http
                .get(format!("{parent}/v2/{}/blobs/{}", blob.repo, blob.digest))
                .query(&[("ns", blob.registry)])
                .header(REGIONS_HEADER, regions.clone());
            if let Some(auth) = blob.authorization {
                request = request.header(http::header::AUTHORIZATION, auth.clone());
            }
            if from > 0 {
                request = request.header(http::header::RANGE, format!("bytes={from}-"));
            }
            let why = match tokio::time::timeout(PARENT_ANSWER, request.send()).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    self.metrics.parent_fetches.inc();
                    return Some(response);
                }
                Ok(Ok(response)) => format!("answered {}", response.status()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PARENT_ANSWER:?}"),
            };
            self.metrics.parent_failures.inc();
            tracing::warn!(digest = %blob.digest, %parent, error = %why, "parent edge could not serve the blob");
        }
        None
    }
}

/// The regions named by an incoming request's [`REGIONS_HEADER`] (none for a client's own).
pub fn regions_passed(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get(REGIONS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regions_a_request_passed_are_read_from_its_header() {
        let mut headers = http::HeaderMap::new();
        assert!(regions_passed(&headers).is_empty());
        headers.insert(REGIONS_HEADER, HeaderValue::from_static("eu, us,,asia"));
        assert_eq!(regions_passed(&headers), ["eu", "us", "asia"]);
    }
}
