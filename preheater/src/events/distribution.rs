//! CNCF Distribution notification envelopes (`application/vnd.docker.distribution.events.v1+json`,
//! `…v2+json` from distribution 3.x).
//!
//! Delivery is at-least-once and retried forever, one event per POST in practice. Only the
//! fields the preheater uses are modelled; unknown fields are accepted (3.x adds some).

use serde::Deserialize;

use super::{host_of_url, ClassifiedEvent, Intent};

/// Content types a registry sends (plain JSON accepted for hand-made deliveries).
pub const CONTENT_TYPES: [&str; 3] = [
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
];

/// Blob events always carry this media type: the registry does not know the layer type.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

const MANIFEST_MEDIA_TYPES: [&str; 5] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    pub timestamp: Option<String>,
    pub action: String,
    pub target: Target,
    pub request: Option<Request>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Target {
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub digest: Option<String>,
    pub repository: Option<String>,
    pub from_repository: Option<String>,
    pub url: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Request {
    pub host: Option<String>,
    pub method: Option<String>,
}

/// Parses an envelope; anything structurally wrong (truncated JSON, no `events`, an event
/// without `id`/`action`/`target`) is an error the sender must fix.
pub fn parse(body: &[u8]) -> Result<Envelope, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a notification envelope: {e}"))
}

impl Event {
    /// The registry as the pusher named it: the host of `target.url`, else `request.host`.
    pub fn registry(&self) -> Option<String> {
        self.target
            .url
            .as_deref()
            .and_then(host_of_url)
            .or_else(|| self.request.as_ref().and_then(|r| r.host.clone()))
            .filter(|h| !h.is_empty())
    }

    /// `blob`, `manifest`, or `other` when the event does not say (deletes carry only a digest).
    fn kind(&self) -> &'static str {
        let url = self.target.url.as_deref().unwrap_or("");
        match self.target.media_type.as_deref() {
            Some(BLOB_MEDIA_TYPE) => "blob",
            Some(t) if MANIFEST_MEDIA_TYPES.contains(&t) => "manifest",
            // 3.x may describe blobs with their real type: fall back to the URL's shape.
            _ if url.contains("/manifests/") || self.target.tag.is_some() => "manifest",
            _ if url.contains("/blobs/") => "blob",
            _ => "other",
        }
    }

    pub fn classify(&self) -> ClassifiedEvent {
        let action = match self.action.as_str() {
            "push" => "push",
            "pull" => "pull",
            "mount" => "mount",
            "delete" => "delete",
            _ => "unknown",
        };
        let kind = self.kind();
        let mut event = ClassifiedEvent {
            dedupe_key: format!("distribution:{}", self.id),
            kind,
            action,
            intents: Vec::new(),
            ignored: None,
        };
        match self.intent(action, kind) {
            Ok(Some(intent)) => event.intents.push(intent),
            Ok(None) => event.ignored = Some(format!("{action} events need no warming")),
            Err(why) => event.ignored = Some(why),
        }
        event
    }

    fn intent(&self, action: &str, kind: &str) -> Result<Option<Intent>, String> {
        if !matches!(action, "push" | "mount") {
            return Ok(None);
        }
        let registry = self
            .registry()
            .ok_or("event names no registry (no target.url, no request.host)")?;
        let repository = self
            .target
            .repository
            .as_deref()
            .ok_or("event has no target.repository")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let digest = match self.target.digest.as_deref() {
            Some(d) => Some(d.parse().map_err(|e| format!("{e}"))?),
            None => None,
        };
        Ok(Some(match (kind, digest, self.target.tag.as_deref()) {
            ("manifest", digest, Some(tag)) if action == "push" => Intent::Image {
                registry,
                repository,
                reference: tag.parse().map_err(|e| format!("{e}"))?,
                digest,
            },
            ("manifest", Some(digest), _) if action == "push" => Intent::Manifest {
                registry,
                repository,
                digest,
            },
            ("blob", Some(digest), _) => Intent::Blob {
                registry,
                repository,
                digest,
                size: self.target.size,
            },
            _ => return Err(format!("{action} of a {kind} without digest or tag")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn only(name: &str) -> ClassifiedEvent {
        let envelope = parse(&fixture(name)).unwrap();
        assert_eq!(envelope.events.len(), 1, "{name}");
        envelope.events[0].classify()
    }

    #[test]
    fn tagged_manifest_push_resolves_the_image() {
        let e = only("distribution_push_event.json");
        assert_eq!(e.dedupe_key, "distribution:8516fa41-4084-4381-b2f0-a0b6c8f3dc3b");
        assert_eq!((e.kind, e.action), ("manifest", "push"));
        assert_eq!(
            e.intents,
            vec![Intent::Image {
                registry: "127.0.0.1:5100".into(),
                repository: "library/busybox-mini".parse().unwrap(),
                reference: "1.36".parse().unwrap(),
                // The pushed manifest is pinned: the tag is linked only after the event is sent.
                digest: Some(
                    "sha256:df190e2dabd9cd492b2cd697f76b6347ff3285a2c6f029686e809091a26ceca3"
                        .parse()
                        .unwrap()
                ),
            }]
        );
        let v2s2 = only("distribution_push_manifest_v2s2_event.json");
        assert!(
            matches!(&v2s2.intents[..], [Intent::Image { reference, .. }] if reference.to_string() == "3.19")
        );
    }

    #[test]
    fn blob_push_and_mount_warm_the_blob() {
        let e = only("distribution_push_blob_event.json");
        assert_eq!((e.kind, e.action), ("blob", "push"));
        assert!(
            matches!(&e.intents[..], [Intent::Blob { size: Some(135), digest, .. }]
            if digest.to_string() == "sha256:6dde6128eb03bd4b73867f99b63dc1798beba4bd44d2094c633ababe6c63417b")
        );
        let m = only("distribution_mount_event.json");
        assert_eq!((m.kind, m.action), ("blob", "mount"));
        assert!(
            matches!(&m.intents[..], [Intent::Blob { repository, .. }] if repository.as_str() == "library/alpine-mini")
        );
    }

    #[test]
    fn pulls_and_deletes_are_understood_but_need_no_work() {
        for (name, kind) in [
            ("distribution_pull_event.json", "manifest"),
            ("distribution_delete_blob_event.json", "other"),
            ("distribution_delete_manifest_event.json", "other"),
            ("distribution_delete_tag_event.json", "manifest"),
        ] {
            let e = only(name);
            assert!(e.intents.is_empty(), "{name}");
            assert!(e.ignored.is_some(), "{name}");
            assert_eq!(e.kind, kind, "{name}");
        }
    }

    #[test]
    fn the_oci_index_push_sequence_warms_blobs_then_children_then_the_tag() {
        let sequence: Vec<Envelope> =
            serde_json::from_slice(&fixture("distribution_push_sequence_oci_index.json")).unwrap();
        let kinds: Vec<&str> = sequence
            .iter()
            .flat_map(|env| env.events.iter().map(|e| e.classify()))
            .map(|e| match &e.intents[..] {
                [Intent::Blob { .. }] => "blob",
                [Intent::Manifest { .. }] => "manifest",
                [Intent::Image { .. }] => "image",
                _ => "none",
            })
            .collect();
        assert_eq!(
            kinds,
            ["blob", "blob", "blob", "manifest", "blob", "blob", "blob", "manifest", "image"]
        );
    }

    #[test]
    fn unknown_actions_and_bad_fields_are_ignored_not_refused() {
        let body = br#"{"events":[{"id":"x","action":"replicate","target":{"repository":"a/b"}}]}"#;
        let e = parse(body).unwrap().events[0].classify();
        assert_eq!(e.action, "unknown");
        assert!(e.intents.is_empty());
        let body = br#"{"events":[{"id":"y","action":"push","target":{"mediaType":"application/octet-stream",
            "digest":"sha512:00","repository":"a/b","url":"http://r:5000/v2/a/b/blobs/sha512:00"}}]}"#;
        let e = parse(body).unwrap().events[0].classify();
        assert!(e.intents.is_empty());
        assert!(e.ignored.unwrap().contains("sha512"));
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        for body in [
            &b""[..],
            b"{",
            br#"{"events":"#,
            br#"{"evts":[]}"#,
            br#"{"events":[{"action":"push","target":{}}]}"#,
            br#"[1,2]"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let full = fixture("distribution_push_event.json");
        assert!(
            parse(&full[..full.len() / 2]).is_err(),
            "a truncated capture must not parse"
        );
    }

    #[test]
    fn captured_headers_name_the_content_type_we_accept() {
        let headers = String::from_utf8(fixture("distribution_event_request.headers.txt")).unwrap();
        let content_type = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: "))
            .unwrap();
        assert!(CONTENT_TYPES.contains(&content_type));
    }
}
