//! The warm API, the preheater's way into an edge (bearer `warm_token`):
//!
//! - `POST /api/v1/warm` with a [`WarmRequest`]: a blob is answered at once
//!   (`202`, state `cached` or `ingesting`, the size the origin reported) and ingested in the
//!   background like a pull; a manifest is fetched and cached before the answer
//!   (`200`, state `cached`, its digest and media type).
//! - `GET /api/v1/warm/<digest>` → a [`WarmAnswer`] with the blob's state (and the error of a
//!   failed transfer).
//!
//! Errors are OCI error JSON; 5xx, 408 and 429 may pass with time, other 4xx will not.

use serde::{Deserialize, Serialize};

/// `POST` here to warm.
pub const WARM_PATH: &str = "/api/v1/warm";

/// `/api/v1/warm/<digest>`: where a blob stands.
pub fn warm_status_path(digest: &str) -> String {
    format!("{WARM_PATH}/{digest}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmKind {
    Blob,
    Manifest,
}

impl WarmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WarmKind::Blob => "blob",
            WarmKind::Manifest => "manifest",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmRequest {
    /// Registry as clients name it (`?ns=`); absent means the edge's default upstream.
    pub registry: Option<String>,
    pub repository: String,
    pub kind: WarmKind,
    /// A blob's digest; for a manifest, its digest when warmed by digest.
    pub digest: Option<String>,
    /// Manifests only: warm the tag→digest mapping too (the edge resolves the tag itself).
    pub tag: Option<String>,
    /// Credential to present upstream (`Basic …`, `Bearer …`); absent means anonymous or the
    /// edge's own credentials for that upstream.
    pub authorization: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmState {
    Cached,
    Ingesting,
    /// Neither cached nor arriving.
    Absent,
    /// The last transfer failed (see [`WarmAnswer::error`]).
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmAnswer {
    pub state: WarmState,
    /// A blob's size as the origin reported it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A warmed manifest's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A warmed manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Why the last transfer failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WarmAnswer {
    pub fn new(state: WarmState) -> Self {
        WarmAnswer {
            state,
            size: None,
            digest: None,
            media_type: None,
            error: None,
        }
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
            kind: WarmKind::Manifest,
            digest: None,
            tag: Some("v1".into()),
            authorization: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"registry":null,"repository":"demo/app","kind":"manifest","digest":null,"tag":"v1","authorization":null}"#
        );
        assert_eq!(serde_json::from_str::<WarmRequest>(&json).unwrap(), r);
        let unknown = json.replace("\"tag\"", "\"tags\"");
        assert!(serde_json::from_str::<WarmRequest>(&unknown).is_err());
    }

    #[test]
    fn warm_answers_round_trip_and_read_nulls_as_absent() {
        let mut answer = WarmAnswer::new(WarmState::Ingesting);
        answer.size = Some(42);
        let json = serde_json::to_string(&answer).unwrap();
        assert_eq!(json, r#"{"state":"ingesting","size":42}"#);
        assert_eq!(serde_json::from_str::<WarmAnswer>(&json).unwrap(), answer);
        let status: WarmAnswer = serde_json::from_str(r#"{"state":"failed","error":"gone"}"#).unwrap();
        assert_eq!(
            (status.state, status.error.as_deref()),
            (WarmState::Failed, Some("gone"))
        );
        let nulls: WarmAnswer = serde_json::from_str(r#"{"state":"cached","error":null}"#).unwrap();
        assert_eq!(nulls, WarmAnswer::new(WarmState::Cached));
        assert!(serde_json::from_str::<WarmAnswer>(r#"{"state":"lost"}"#).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(warm_status_path("sha256:ab"), "/api/v1/warm/sha256:ab");
        assert_eq!(WarmKind::Blob.as_str(), "blob");
    }
}
