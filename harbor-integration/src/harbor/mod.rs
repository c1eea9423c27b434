//! A small client for the parts of Harbor's REST API (`/api/v2.0`) that `register` uses.
//!
//! `X-Is-Resource-Name: true` goes with every request so a numeric project name is never read as
//! a project id. Lists are read page by page (`page_size=100`) until a short page.

pub mod model;

use std::time::Duration;

use damselfly_core::error_summary as error_message;
use serde::de::DeserializeOwned;
use serde::Serialize;

const PAGE_SIZE: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum HarborError {
    #[error("{method} {url}: Harbor answered {status}: {message}")]
    Refused {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{method} {url}: {message}")]
    Unreachable {
        method: String,
        url: String,
        message: String,
    },
    #[error("{url}: unexpected answer: {message}")]
    Decode { url: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub struct HarborClient {
    api: reqwest::Url,
    http: reqwest::Client,
    credentials: Option<(String, String)>,
}

impl HarborClient {
    /// `harbor` is Harbor's address (`https://harbor.example.com`); the API lives under `/api/v2.0/`.
    pub fn new(
        harbor: &str,
        credentials: Option<(String, String)>,
        insecure: bool,
        timeout: Duration,
    ) -> Result<Self, HarborError> {
        let mut base = reqwest::Url::parse(harbor)
            .map_err(|e| HarborError::Invalid(format!("--harbor {harbor:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(HarborError::Invalid(format!(
                "--harbor {harbor:?} must be http(s)://…"
            )));
        }
        let path = format!("{}/api/v2.0/", base.path().trim_end_matches('/'));
        base.set_path(&path);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(insecure)
            .user_agent(concat!(
                "damselfly-harbor-integration/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| HarborError::Invalid(format!("http client: {e}")))?;
        Ok(HarborClient {
            api: base,
            http,
            credentials,
        })
    }

    /// The full URL of an API path (`projects/library`).
    pub fn url(&self, path: &str) -> Result<reqwest::Url, HarborError> {
        self.api
            .join(path)
            .map_err(|e| HarborError::Invalid(format!("bad API path {path}: {e}")))
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, url)
            .header("accept", "application/json")
            .header("x-is-resource-name", "true");
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&serde_json::Value>,
    ) -> Result<bytes::Bytes, HarborError> {
        let mut request = self.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| HarborError::Unreachable {
            method: method.to_string(),
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| HarborError::Unreachable {
            method: method.to_string(),
            url: url.to_string(),
            message: format!("reading the answer: {e}"),
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(HarborError::Refused {
            method: method.to_string(),
            url: url.to_string(),
            status: status.as_u16(),
            message: error_message(&bytes),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, HarborError> {
        let url = self.url(path)?;
        let bytes = self.send(reqwest::Method::GET, url.clone(), None).await?;
        serde_json::from_slice(&bytes).map_err(|e| HarborError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// Every item of a paginated list.
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, HarborError> {
        let mut all = Vec::new();
        for page in 1.. {
            let page_items: Vec<T> = self
                .get(&format!("{path}?page={page}&page_size={PAGE_SIZE}"))
                .await?;
            let short = page_items.len() < PAGE_SIZE;
            all.extend(page_items);
            if short {
                break;
            }
        }
        Ok(all)
    }

    pub async fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<(), HarborError> {
        let body = to_value(body)?;
        self.send(reqwest::Method::POST, self.url(path)?, Some(&body))
            .await
            .map(drop)
    }

    pub async fn put<T: Serialize>(&self, path: &str, body: &T) -> Result<(), HarborError> {
        let body = to_value(body)?;
        self.send(reqwest::Method::PUT, self.url(path)?, Some(&body))
            .await
            .map(drop)
    }
}

fn to_value<T: Serialize>(body: &T) -> Result<serde_json::Value, HarborError> {
    serde_json::to_value(body).map_err(|e| HarborError::Invalid(format!("encoding a request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_and_errors() {
        let c =
            HarborClient::new("https://harbor.example.com/", None, false, Duration::from_secs(1)).unwrap();
        assert_eq!(
            c.url("projects/library").unwrap().as_str(),
            "https://harbor.example.com/api/v2.0/projects/library"
        );
        let c = HarborClient::new("http://h:8080/sub", None, false, Duration::from_secs(1)).unwrap();
        assert_eq!(
            c.url("p2p/preheat/instances").unwrap().as_str(),
            "http://h:8080/sub/api/v2.0/p2p/preheat/instances"
        );
        assert!(HarborClient::new("harbor.example.com", None, false, Duration::from_secs(1)).is_err());
        assert_eq!(
            error_message(br#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized"}]}"#),
            "UNAUTHORIZED: unauthorized"
        );
        assert_eq!(error_message(b"bad gateway"), "bad gateway");
    }
}
