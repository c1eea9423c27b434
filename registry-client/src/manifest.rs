//! Manifests: the types a registry is asked for, bounded reads, and the media type of what came.

use bytes::{Bytes, BytesMut};
use damselfly_core::{Digest, Reference, RepositoryName};
use http::{HeaderMap, HeaderValue};

use crate::client::{RegistryClient, Request};
use crate::error::{Error, Result};

/// Every modern manifest type; a registry answers 404 for types missing from `Accept`.
pub const MANIFEST_ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Characters of a refusal's body kept in the error: enough for the registry's error code.
const REFUSAL_EXCERPT: usize = 300;

/// A manifest as fetched, verified against its digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

impl RegistryClient {
    /// `GET v2/<repository>/manifests/<reference>` (below the base URL) with every modern type in
    /// `Accept`, read up to `max_bytes` and verified: against the reference when it is a digest,
    /// else against the registry's `Docker-Content-Digest`. The media type comes from the header
    /// or else the body, and must be one of [`MANIFEST_ACCEPT`]. A `presented` credential is sent
    /// as it is, without the token dance: it is the only one the requester vouches for.
    pub async fn manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
        presented: Option<&HeaderValue>,
        max_bytes: u64,
    ) -> Result<Manifest> {
        let request = Request {
            scope: Some(format!("repository:{repository}:pull")),
            accept: MANIFEST_ACCEPT.map(HeaderValue::from_static).to_vec(),
            authorization: presented,
            ..Request::get(format!("v2/{repository}/manifests/{reference}"))
        };
        let response = self.send(request).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Error::Status {
                status,
                message: format!(
                    "{} answered {status} for {repository}:{reference}: {}",
                    self.authority(),
                    body.chars().take(REFUSAL_EXCERPT).collect::<String>()
                ),
            });
        }
        let header_type = content_type(response.headers());
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = read_bounded(response, max_bytes).await?;
        let digest = Digest::of(&bytes);
        let expected = match reference {
            Reference::Digest(d) => Some(*d),
            Reference::Tag(_) => header_digest,
        };
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(Error::DigestMismatch {
                reference: format!("{repository}:{reference}"),
                expected,
                actual: digest,
            });
        }
        let media_type = header_type
            .filter(|t| is_manifest_type(t))
            .or_else(|| media_type_in_body(&bytes).filter(|t| is_manifest_type(t)))
            .ok_or_else(|| Error::UnknownMediaType(format!("{repository}:{reference}")))?;
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }
}

fn is_manifest_type(media_type: &str) -> bool {
    MANIFEST_ACCEPT.contains(&media_type)
}

/// A manifest's whole body (or the error answer sent in its place), refused once it passes
/// `limit` bytes, announced or streamed: a registry should not make us buffer what it likes.
pub async fn read_bounded(mut response: reqwest::Response, limit: u64) -> Result<Bytes> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(Error::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(Error::BodyCut)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The media type in a `Content-Type` header, without parameters; `None` when absent or empty.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or(value).trim();
    (!essence.is_empty()).then(|| essence.to_string())
}

/// The `mediaType` field of a manifest body, for registries that send a generic Content-Type.
pub fn media_type_in_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    // serde reads a struct from an array too (`["…"]`, field by position): a manifest is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Doc>(body).ok()?.media_type
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response with a known length (as with `Content-Length`).
    fn announced(body: &'static [u8]) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body))
    }

    /// A response whose length is known only once read (chunked).
    fn streamed(chunks: &[&'static [u8]]) -> reqwest::Response {
        let chunks: Vec<Result<&'static [u8], std::io::Error>> = chunks.iter().map(|c| Ok(*c)).collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        reqwest::Response::from(http::Response::new(body))
    }

    #[test]
    fn media_type_comes_from_the_body_when_the_header_is_generic() {
        assert_eq!(
            media_type_in_body(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            )
            .as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(
            media_type_in_body(br#"{"mediaType":"text/html"}"#).as_deref(),
            Some("text/html")
        );
        assert_eq!(media_type_in_body(br#"{"mediaType":7}"#), None);
        assert_eq!(media_type_in_body(b"[1]"), None);
        // Found by fuzzing: an array was read as the struct it is not, field by position.
        assert_eq!(
            media_type_in_body(br#"["application/vnd.oci.image.manifest.v1+json"]"#),
            None
        );
        assert_eq!(
            media_type_in_body(b" \n{\"mediaType\":\"text/html\"}").as_deref(),
            Some("text/html")
        );
        assert_eq!(media_type_in_body(b"{"), None);
    }

    #[test]
    fn content_types_lose_their_parameters() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_type(&headers), None);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        );
        assert_eq!(
            content_type(&headers).as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(" ;x=y"));
        assert_eq!(content_type(&headers), None);
    }

    #[test]
    fn only_manifest_types_are_manifest_types() {
        assert!(MANIFEST_ACCEPT.iter().all(|t| is_manifest_type(t)));
        assert!(!is_manifest_type("application/json"));
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_their_bound() {
        assert_eq!(&read_bounded(announced(b"{}"), 2).await.unwrap()[..], b"{}");
        assert_eq!(
            &read_bounded(streamed(&[b"{", b"}"]), 2).await.unwrap()[..],
            b"{}"
        );
        assert!(matches!(
            read_bounded(announced(b"{ }"), 2).await,
            Err(Error::TooLarge { limit: 2 })
        ));
        assert!(matches!(
            read_bounded(streamed(&[b"{", b" }"]), 2).await,
            Err(Error::TooLarge { limit: 2 })
        ));
    }
}
