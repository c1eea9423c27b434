//! The client side of an edge's warm API (`core::api::warm` describes it). Errors are OCI error
//! JSON; 5xx, 408 and 429 may pass with time, other 4xx will not.

use std::time::Duration;

use damselfly_core::api::warm::{warm_status_path, WARM_PATH};
use damselfly_core::api::{WarmAnswer, WarmRequest};
use http::StatusCode;

use damselfly_server::tls::TlsConfig;

use crate::error::{Error, Result};
use damselfly_core::error_summary as oci_error_message;

pub struct EdgeClient {
    region: String,
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
}

impl EdgeClient {
    pub fn new(
        region: &str,
        url: &str,
        token: Option<String>,
        timeout: Duration,
        tls: &TlsConfig,
    ) -> Result<Self> {
        let base =
            reqwest::Url::parse(url).map_err(|e| Error::Internal(format!("bad edge url {url}: {e}")))?;
        // Edges' certificates from the cluster CA (`tls.ca_file`); the preheater's own, if any,
        // as its identity.
        let http = damselfly_server::tls::client_builder(tls, true)
            .map_err(Error::Internal)?
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

    /// `path` (absolute in the API) under the edge's base URL, which may carry a path prefix.
    fn url(&self, path: &str) -> Result<reqwest::Url> {
        self.base
            .join(path.trim_start_matches('/'))
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
            .authorize(self.http.post(self.url(WARM_PATH)?))
            .timeout(self.timeout)
            .json(request);
        self.answer(http_request.send().await).await
    }

    pub async fn status(&self, digest: &str) -> Result<WarmAnswer> {
        let http_request = self
            .authorize(self.http.get(self.url(&warm_status_path(digest))?))
            .timeout(self.timeout);
        self.answer(http_request.send().await).await
    }

    /// Whether the edge has an upstream by this name (`None`: a default upstream), asked with
    /// the registry ping a runtime sends (`GET /v2/?ns=`): an edge answers `404 NAME_UNKNOWN`
    /// for a name it has no upstream for, and anything else (the upstream's challenge, its
    /// `200`, a `502` while it is down) means it does. Unreachable edges are an error.
    pub async fn knows_registry(&self, registry: Option<&str>) -> Result<bool> {
        let mut url = self.url("/v2/")?;
        if let Some(name) = registry {
            url.query_pairs_mut().append_pair("ns", name);
        }
        let response = self
            .http
            .get(url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Error::EdgeUnavailable {
                region: self.region.clone(),
                message: format!("{e}"),
            })?;
        if response.status() != StatusCode::NOT_FOUND {
            return Ok(true);
        }
        let body = response.bytes().await.unwrap_or_default();
        Ok(!oci_error_message(&body).starts_with("NAME_UNKNOWN"))
    }

    pub fn url_text(&self) -> &str {
        self.base.as_str()
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

#[cfg(test)]
mod tests {
    use super::*;

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
