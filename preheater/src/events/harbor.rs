//! Harbor webhooks: the Default format (`application/json`) and CloudEvents
//! (`application/cloudevents+json`, Harbor ≥ 2.8, whose `data` is the Default `event_data`).
//!
//! Harbor names the artifact only by `resource_url` — `ext_endpoint` host without scheme, then
//! `project/repo:tag` or `project/repo@sha256:…` — so the host is mapped to a configured registry.

use serde::Deserialize;

use super::{ClassifiedEvent, Intent};
use damselfly_core::{Reference, RepositoryName};

pub const DEFAULT_CONTENT_TYPE: &str = "application/json";
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";

#[derive(Debug, Clone, Deserialize)]
pub struct DefaultPayload {
    #[serde(rename = "type")]
    pub kind: String,
    pub occur_at: i64,
    pub operator: Option<String>,
    pub event_data: Option<EventData>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: Option<String>,
    pub data: Option<EventData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventData {
    pub resources: Vec<Resource>,
    pub repository: Option<Repository>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Resource {
    pub digest: Option<String>,
    pub tag: Option<String>,
    pub resource_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Repository {
    pub repo_full_name: Option<String>,
}

/// The artifact a `resource_url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUrl {
    pub host: String,
    pub repository: RepositoryName,
    pub reference: Reference,
}

/// `harbor.example.com/library/nginx:1.25.3`, `harbor.example.com:8443/a/b@sha256:…`.
pub fn parse_resource_url(url: &str) -> Result<ResourceUrl, String> {
    let bad = || format!("resource_url {url:?} is not host/project/repo:tag or @digest");
    let (host, rest) = url.split_once('/').ok_or_else(bad)?;
    if host.is_empty() || host.contains("://") {
        return Err(bad());
    }
    let (repository, reference) = match rest.split_once('@') {
        Some((repo, digest)) => (repo, digest),
        None => {
            let (repo, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
            if tag.contains('/') {
                return Err(bad());
            }
            (repo, tag)
        }
    };
    Ok(ResourceUrl {
        host: host.to_string(),
        repository: repository.parse().map_err(|e| format!("{e}"))?,
        reference: reference.parse().map_err(|e| format!("{e}"))?,
    })
}

/// Maps Harbor's type names, both formats, to our action labels.
fn action_of(kind: &str) -> &'static str {
    match kind {
        "PUSH_ARTIFACT" | "harbor.artifact.pushed" => "push",
        "PULL_ARTIFACT" | "harbor.artifact.pulled" => "pull",
        "DELETE_ARTIFACT" | "harbor.artifact.deleted" => "delete",
        "SCANNING_COMPLETED"
        | "SCANNING_FAILED"
        | "SCANNING_STOPPED"
        | "harbor.scan.completed"
        | "harbor.scan.failed"
        | "harbor.scan.stopped" => "scan",
        "QUOTA_EXCEED" | "QUOTA_WARNING" | "harbor.quota.exceeded" | "harbor.quota.warned" => "quota",
        "REPLICATION" | "harbor.replication.status.changed" => "replication",
        "TAG_RETENTION" | "harbor.tag_retention.finished" => "retention",
        _ => "unknown",
    }
}

fn classify(dedupe_key: String, kind: &str, data: Option<&EventData>) -> ClassifiedEvent {
    let action = action_of(kind);
    let mut event = ClassifiedEvent {
        dedupe_key,
        kind: if matches!(action, "push" | "pull" | "delete" | "scan") {
            "artifact"
        } else {
            "other"
        },
        action,
        intents: Vec::new(),
        ignored: None,
    };
    if action != "push" {
        event.ignored = Some(format!("{kind} events need no warming"));
        return event;
    }
    let mut problems = Vec::new();
    for resource in data.map(|d| d.resources.as_slice()).unwrap_or_default() {
        match resource.resource_url.as_deref().map(parse_resource_url) {
            Some(Ok(r)) => event.intents.push(Intent::Image {
                registry: r.host,
                repository: r.repository,
                reference: r.reference,
                digest: None,
            }),
            Some(Err(e)) => problems.push(e),
            None => problems.push("resource without resource_url".to_string()),
        }
    }
    if event.intents.is_empty() {
        event.ignored = Some(if problems.is_empty() {
            "push event without resources".into()
        } else {
            problems.join("; ")
        });
    }
    event
}

/// A Default-format delivery; deduplicated on `(type, digest, occur_at)` since Harbor sends no id.
pub fn parse_default(body: &[u8]) -> Result<ClassifiedEvent, String> {
    let p: DefaultPayload =
        serde_json::from_slice(body).map_err(|e| format!("not a Harbor webhook payload: {e}"))?;
    let digests: Vec<&str> = p
        .event_data
        .iter()
        .flat_map(|d| d.resources.iter().filter_map(|r| r.digest.as_deref()))
        .collect();
    let key = format!("harbor:{}:{}:{}", p.kind, digests.join(","), p.occur_at);
    Ok(classify(key, &p.kind, p.event_data.as_ref()))
}

/// A CloudEvents delivery; deduplicated on its `id`.
pub fn parse_cloudevent(body: &[u8]) -> Result<ClassifiedEvent, String> {
    let e: CloudEvent = serde_json::from_slice(body).map_err(|e| format!("not a CloudEvent: {e}"))?;
    if e.specversion != "1.0" {
        return Err(format!("unsupported CloudEvents specversion {:?}", e.specversion));
    }
    Ok(classify(
        format!("cloudevents:{}:{}", e.source, e.id),
        &e.kind,
        e.data.as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn nginx() -> Intent {
        Intent::Image {
            registry: "harbor.example.com".into(),
            repository: "library/nginx".parse().unwrap(),
            reference: "1.25.3".parse().unwrap(),
            digest: None,
        }
    }

    #[test]
    fn push_in_both_formats_names_the_same_artifact() {
        let d = parse_default(&fixture("harbor_push_artifact.json")).unwrap();
        assert_eq!((d.kind, d.action), ("artifact", "push"));
        assert_eq!(d.intents, vec![nginx()]);
        assert_eq!(
            d.dedupe_key,
            "harbor:PUSH_ARTIFACT:sha256:a484819eb60211f5299034ac80f6a681b06f89e65866ce91f356ed7c72af059c:1709287200"
        );
        let c = parse_cloudevent(&fixture("harbor_push_artifact_cloudevents.json")).unwrap();
        assert_eq!(c.intents, vec![nginx()]);
        assert_eq!(
            c.dedupe_key,
            "cloudevents:/projects/1/webhook/policies/3:0b7c6a2e-4f0f-4d0e-9a55-3c1f2f8d6e11"
        );
    }

    #[test]
    fn other_event_types_need_no_work() {
        for name in [
            "harbor_pull_artifact.json",
            "harbor_delete_artifact.json",
            "harbor_scanning_completed.json",
        ] {
            let e = parse_default(&fixture(name)).unwrap();
            assert!(e.intents.is_empty() && e.ignored.is_some(), "{name}");
        }
        let e = parse_cloudevent(&fixture("harbor_pull_artifact_cloudevents.json")).unwrap();
        assert_eq!(e.action, "pull");
        assert!(e.intents.is_empty());
    }

    #[test]
    fn resource_urls_by_tag_digest_and_port() {
        let r = parse_resource_url("harbor.example.com:8443/proj/sub/app@sha256:a484819eb60211f5299034ac80f6a681b06f89e65866ce91f356ed7c72af059c").unwrap();
        assert_eq!(r.host, "harbor.example.com:8443");
        assert_eq!(r.repository.as_str(), "proj/sub/app");
        assert!(matches!(r.reference, Reference::Digest(_)));
        let r = parse_resource_url("127.0.0.1:5000/demo/app:v1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "demo/app")
        );
        for bad in [
            "nginx",
            "harbor/",
            "https://h/a:b",
            "h/a/b",
            "h/A:b",
            "h/a:b/c",
            "h/a@sha256:12",
        ] {
            assert!(parse_resource_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(parse_default(b"{\"type\":\"PUSH_ARTIFACT\"").is_err());
        assert!(parse_default(b"{\"occur_at\":1}").is_err());
        assert!(parse_cloudevent(br#"{"specversion":"0.3","id":"a","source":"s","type":"t"}"#).is_err());
        let full = fixture("harbor_push_artifact_cloudevents.json");
        assert!(parse_cloudevent(&full[..full.len() - 1]).is_err());
    }

    #[test]
    fn captured_headers_match_the_content_types() {
        let headers = String::from_utf8(fixture("harbor_push_artifact.headers.txt")).unwrap();
        let types: Vec<&str> = headers
            .lines()
            .filter_map(|l| l.strip_prefix("Content-Type: "))
            .collect();
        assert_eq!(types, [DEFAULT_CONTENT_TYPE, CLOUDEVENTS_CONTENT_TYPE]);
        assert!(headers.contains("Authorization: Bearer wh-7f3c9a1e2b"));
    }
}
