//! The client side of an edge's warm API.
//!
//! - `POST /api/v1/warm` `{registry, repository, kind, digest, tag, authorization}`: a blob is
//!   answered at once (`202 {"state":"cached"|"ingesting","size"}`) and ingested in the
//!   background like a pull; a manifest is fetched and cached before the answer
//!   (`200 {"state":"cached","digest","media_type"}`).
//! - `GET /api/v1/warm/<digest>`: `{"state":"cached"|"ingesting"|"absent"|"failed","error"}`.
//!
//! Errors are OCI error JSON; 5xx, 408 and 429 may pass with time, other 4xx will not.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WarmRequest {
    pub registry: Option<String>,
    pub repository: String,
    /// `blob` or `manifest`.
    pub kind: &'static str,
    pub digest: Option<String>,
    pub tag: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WarmAnswer {
    /// `cached`, `ingesting`, `absent` or `failed`.
    pub state: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

pub struct EdgeClient {
    region: String,
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
}

impl EdgeClient {
    pub fn new(region: &str, url: &str, token: Option<String>, timeout: Duration) -> Result<Self> {
        let base =
            reqwest::Url::parse(url).map_err(|e| Error::Internal(format!("bad edge url {url}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("damselfly-preheater/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        Ok(EdgeClient {
            region: region.to_string(),
            base,
            token,
            http,
            timeout,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn url(&self, path: &str) -> Result<reqwest::Url> {
        self.base
            .join(path)
            .map_err(|e| Error::Internal(format!("bad edge path {path}: {e}")))
    }

    /// Adds the warm token and the current trace context.
    fn authorize(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(traceparent) = damselfly_server::logging::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    pub async fn warm(&self, request: &WarmRequest) -> Result<WarmAnswer> {
        let http_request = self
            .authorize(self.http.post(self.url("api/v1/warm")?))
            .timeout(self.timeout)
            .json(request);
        self.answer(http_request.send().await).await
    }

    pub async fn status(&self, digest: &str) -> Result<WarmAnswer> {
        let http_request = self
            .authorize(self.http.get(self.url(&format!("api/v1/warm/{digest}"))?))
            .timeout(self.timeout);
        self.answer(http_request.send().await).await
    }

    async fn answer(&self, sent: reqwest::Result<reqwest::Response>) -> Result<WarmAnswer> {
        let unavailable = |message: String| Error::EdgeUnavailable {
            region: self.region.clone(),
            message,
        };
        let response = sent.map_err(|e| unavailable(format!("{e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("reading answer: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| unavailable(format!("unexpected answer ({status}): {e}")));
        }
        let message = format!("{status}: {}", oci_error_message(&body));
        if status.is_server_error()
            || matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT
            )
        {
            Err(unavailable(message))
        } else {
            Err(Error::EdgeRefused {
                region: self.region.clone(),
                status: status.as_u16(),
                message,
            })
        }
    }
}

/// `{"errors":[{"code","message","detail"}]}` → `CODE: message (detail)`; else the raw text.
fn oci_error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<OciError>,
    }
    #[derive(Deserialize)]
    struct OciError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| match &e.detail {
                serde_json::Value::Null => format!("{}: {}", e.code, e.message),
                d => format!("{}: {} ({d})", e.code, e.message),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_requests_serialise_as_the_contract_says() {
        let r = WarmRequest {
            registry: None,
            repository: "demo/app".into(),
            kind: "manifest",
            digest: None,
            tag: Some("v1".into()),
            authorization: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"registry":null,"repository":"demo/app","kind":"manifest","digest":null,"tag":"v1","authorization":null}"#
        );
    }

    #[test]
    fn oci_errors_are_summarised() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}"#;
        assert_eq!(
            oci_error_message(body),
            r#"BLOB_UNKNOWN: blob unknown to registry ("sha256:ab")"#
        );
        assert_eq!(oci_error_message(b"gateway timeout"), "gateway timeout");
    }
}
