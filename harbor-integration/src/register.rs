//! `register`: make a Harbor project send its pushes to the preheater and drive it as its P2P
//! provider — the project's webhook policy, the P2P provider instance (vendor `dragonfly`) and
//! the project's preheat policy.
//!
//! Idempotent: each object is looked up by name first; it is created when missing, updated
//! (`PUT`) when a field `register` manages differs, and left alone otherwise. With `dry_run`,
//! reads still happen (to know what would change) and writes are printed instead of sent.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::harbor::model::{Instance, PreheatPolicy, Project, WebhookPolicy, WebhookTarget};
use crate::harbor::{HarborClient, HarborError};
use crate::Scope;

/// The project webhook: pushes → `<preheater>/webhooks/harbor`.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub name: String,
    /// The exact `Authorization` value Harbor sends (the preheater's `harbor_auth`).
    pub auth_header: Option<String>,
    pub event_types: Vec<String>,
    /// `CloudEvents` or `Default`.
    pub payload_format: String,
    pub skip_cert_verify: bool,
}

/// The P2P provider instance Harbor's preheat policies call.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    /// `NONE`, `OAUTH` or `BASIC`, with `auth_info` to match.
    pub auth_mode: String,
    pub auth_info: BTreeMap<String, String>,
    pub insecure: bool,
}

/// The project preheat policy.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub name: String,
    pub repositories: String,
    pub tags: String,
    /// `event_based`, `manual` or `scheduled`.
    pub trigger: String,
    pub cron: String,
    pub scope: Option<Scope>,
    pub cluster_ids: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub project: String,
    /// The preheater as Harbor reaches it (`http://preheater.internal:5070`).
    pub preheater: String,
    pub webhook: Option<WebhookSpec>,
    /// The provider instance and the policy that uses it.
    pub preheat: Option<(ProviderSpec, PolicySpec)>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `webhook policy`, `p2p provider instance`, `preheat policy`.
    pub kind: &'static str,
    pub name: String,
    pub change: Change,
}

/// Lines printed for the operator: what changed, and in dry-run mode the requests.
pub type Output = Vec<String>;

pub async fn register(
    client: &HarborClient,
    r: &Registration,
) -> Result<(Vec<Outcome>, Output), HarborError> {
    let mut harbor = Session {
        client,
        dry_run: r.dry_run,
        out: Output::new(),
    };
    let mut outcomes = Vec::new();
    let preheater = r.preheater.trim_end_matches('/').to_string();
    let project_path = format!("projects/{}", segment(&r.project));
    let project: Project = client.get(&project_path).await?;
    if let Some(spec) = &r.webhook {
        outcomes.push(webhook(&mut harbor, &r.project, &project, &preheater, spec).await?);
    }
    if let Some((provider_spec, policy_spec)) = &r.preheat {
        let (outcome, provider_id) = provider(&mut harbor, &preheater, provider_spec).await?;
        outcomes.push(outcome);
        outcomes.push(
            policy(
                &mut harbor,
                &r.project,
                &project,
                provider_id,
                &provider_spec.name,
                policy_spec,
            )
            .await?,
        );
    }
    let mut out = harbor.out;
    for o in &outcomes {
        let verb = match (o.change, r.dry_run) {
            (Change::Created, true) => "would be created",
            (Change::Updated, true) => "would be updated",
            (Change::Created, false) => "created",
            (Change::Updated, false) => "updated",
            (Change::Unchanged, _) => "unchanged",
        };
        out.push(format!("{} {:?}: {verb}", o.kind, o.name));
    }
    Ok((outcomes, out))
}

/// A path segment, percent-encoded (project and object names are user input).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// One run against Harbor: reads always go out; writes are sent, or in a dry run printed
/// (secrets masked) instead.
struct Session<'a> {
    client: &'a HarborClient,
    dry_run: bool,
    out: Output,
}

impl Session<'_> {
    async fn create<T: Serialize>(&mut self, path: &str, body: &T) -> Result<(), HarborError> {
        if self.dry_run {
            return self.show("POST", path, body);
        }
        self.client.post(path, body).await
    }

    /// Replaces the entry `name` (or id) of the collection at `path`.
    async fn update<T: Serialize>(&mut self, path: &str, name: &str, body: &T) -> Result<(), HarborError> {
        let path = format!("{path}/{}", segment(name));
        if self.dry_run {
            return self.show("PUT", &path, body);
        }
        self.client.put(&path, body).await
    }

    fn show<T: Serialize>(&mut self, method: &str, path: &str, body: &T) -> Result<(), HarborError> {
        let mut shown = serde_json::to_value(body).unwrap_or(Value::Null);
        mask_secrets(&mut shown);
        self.out.push(format!("{method} {}", self.client.url(path)?));
        self.out
            .push(serde_json::to_string_pretty(&shown).unwrap_or_default());
        Ok(())
    }
}

fn mask_secrets(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "auth_header" && v.as_str().is_some_and(|s| !s.is_empty()) {
                    *v = Value::String("<redacted>".into());
                } else if k == "auth_info" {
                    if let Value::Object(info) = v {
                        for secret in info.values_mut() {
                            *secret = Value::String("<redacted>".into());
                        }
                    }
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

async fn webhook(
    harbor: &mut Session<'_>,
    project_name: &str,
    project: &Project,
    preheater: &str,
    spec: &WebhookSpec,
) -> Result<Outcome, HarborError> {
    let path = format!("projects/{}/webhook/policies", segment(project_name));
    let desired = WebhookPolicy {
        id: None,
        name: spec.name.clone(),
        description: "Damselfly: warm the edges on push".into(),
        project_id: Some(project.project_id),
        enabled: true,
        event_types: spec.event_types.clone(),
        targets: vec![WebhookTarget {
            kind: "http".into(),
            address: format!("{preheater}/webhooks/harbor"),
            auth_header: spec.auth_header.clone().unwrap_or_default(),
            skip_cert_verify: spec.skip_cert_verify,
            payload_format: Some(spec.payload_format.clone()),
        }],
    };
    let existing: Vec<WebhookPolicy> = harbor.client.list(&path).await?;
    let outcome = |change| Outcome {
        kind: "webhook policy",
        name: spec.name.clone(),
        change,
    };
    let Some(current) = existing.into_iter().find(|p| p.name == spec.name) else {
        harbor.create(&path, &desired).await?;
        return Ok(outcome(Change::Created));
    };
    if webhook_matches(&current, &desired) {
        return Ok(outcome(Change::Unchanged));
    }
    let id = current
        .id
        .ok_or_else(|| HarborError::Invalid(format!("webhook policy {:?} has no id", spec.name)))?;
    let update = WebhookPolicy {
        id: Some(id),
        ..desired
    };
    harbor.update(&path, &id.to_string(), &update).await?;
    Ok(outcome(Change::Updated))
}

/// Event types compare as sets; a Harbor older than 2.8 reports no payload format.
fn webhook_matches(current: &WebhookPolicy, desired: &WebhookPolicy) -> bool {
    let mut a = current.event_types.clone();
    let mut b = desired.event_types.clone();
    a.sort();
    b.sort();
    let targets = current.targets.len() == desired.targets.len()
        && current.targets.iter().zip(&desired.targets).all(|(c, d)| {
            c.kind == d.kind
                && c.address == d.address
                && c.auth_header == d.auth_header
                && c.skip_cert_verify == d.skip_cert_verify
                && (c.payload_format.is_none() || c.payload_format == d.payload_format)
        });
    current.enabled == desired.enabled && a == b && targets && current.description == desired.description
}

async fn provider(
    harbor: &mut Session<'_>,
    preheater: &str,
    spec: &ProviderSpec,
) -> Result<(Outcome, Option<i64>), HarborError> {
    let path = "p2p/preheat/instances";
    let desired = Instance {
        id: None,
        name: spec.name.clone(),
        description: "Damselfly preheater (Dragonfly-compatible provider API)".into(),
        vendor: "dragonfly".into(),
        endpoint: preheater.to_string(),
        auth_mode: spec.auth_mode.clone(),
        auth_info: spec.auth_info.clone(),
        enabled: true,
        default: false,
        insecure: spec.insecure,
    };
    let outcome = |change| Outcome {
        kind: "p2p provider instance",
        name: spec.name.clone(),
        change,
    };
    let find = |list: Vec<Instance>| list.into_iter().find(|i| i.name == spec.name);
    let Some(current) = find(harbor.client.list(path).await?) else {
        harbor.create(path, &desired).await?;
        // The policy needs the new instance's id; Harbor answers 201 without a body.
        let id = if harbor.dry_run {
            None
        } else {
            find(harbor.client.list(path).await?).and_then(|i| i.id)
        };
        return Ok((outcome(Change::Created), id));
    };
    if instance_matches(&current, &desired) {
        return Ok((outcome(Change::Unchanged), current.id));
    }
    let update = Instance {
        id: current.id,
        ..desired
    };
    harbor.update(path, &spec.name, &update).await?;
    Ok((outcome(Change::Updated), current.id))
}

/// A secret Harbor shows masked (all `*`) cannot be compared; it counts as unchanged.
fn instance_matches(current: &Instance, desired: &Instance) -> bool {
    let secrets_match = current.auth_info.len() == desired.auth_info.len()
        && desired
            .auth_info
            .iter()
            .all(|(k, v)| match current.auth_info.get(k) {
                Some(shown) if !shown.is_empty() && shown.chars().all(|c| c == '*') => true,
                Some(shown) => shown == v,
                None => false,
            });
    current.vendor == desired.vendor
        && current.endpoint.trim_end_matches('/') == desired.endpoint
        && current.auth_mode == desired.auth_mode
        && secrets_match
        && current.enabled == desired.enabled
        && current.insecure == desired.insecure
        && current.description == desired.description
}

async fn policy(
    harbor: &mut Session<'_>,
    project_name: &str,
    project: &Project,
    provider_id: Option<i64>,
    provider_name: &str,
    spec: &PolicySpec,
) -> Result<Outcome, HarborError> {
    let path = format!("projects/{}/preheat/policies", segment(project_name));
    let filters = json!([
        {"type": "repository", "value": spec.repositories},
        {"type": "tag", "value": spec.tags},
    ]);
    let trigger = json!({"type": spec.trigger, "trigger_setting": {"cron": spec.cron}});
    let (scope, extra_attrs) = match spec.scope {
        Some(scope) => {
            // 2.12 reads `scope` with its own two words; ≥ 2.13 reads `extra_attrs`.
            let legacy = if scope.every_region() {
                "all_peers"
            } else {
                "single_peer"
            };
            let mut attrs = json!({"scope": scope.as_str()});
            if !spec.cluster_ids.is_empty() {
                attrs["cluster_ids"] = json!(spec.cluster_ids);
            }
            (Some(legacy.to_string()), Some(attrs))
        }
        None if !spec.cluster_ids.is_empty() => (None, Some(json!({"cluster_ids": spec.cluster_ids}))),
        None => (None, None),
    };
    let desired = PreheatPolicy {
        id: None,
        name: spec.name.clone(),
        description: format!("Damselfly: preheat through {provider_name}"),
        project_id: project.project_id,
        // Unknown only in a dry run that would create the instance first.
        provider_id: provider_id.unwrap_or(0),
        filters: filters.to_string(),
        trigger: trigger.to_string(),
        enabled: true,
        scope,
        extra_attrs,
    };
    let outcome = |change| Outcome {
        kind: "preheat policy",
        name: spec.name.clone(),
        change,
    };
    let existing: Vec<PreheatPolicy> = harbor.client.list(&path).await?;
    let Some(current) = existing.into_iter().find(|p| p.name == spec.name) else {
        harbor.create(&path, &desired).await?;
        return Ok(outcome(Change::Created));
    };
    if policy_matches(&current, &desired) {
        return Ok(outcome(Change::Unchanged));
    }
    let update = PreheatPolicy {
        id: current.id,
        ..desired
    };
    harbor.update(&path, &spec.name, &update).await?;
    Ok(outcome(Change::Updated))
}

/// `filters` and `trigger` compare as JSON (Harbor may re-encode them); `scope` and
/// `extra_attrs` only where this Harbor reports them (older versions do not store them).
fn policy_matches(current: &PreheatPolicy, desired: &PreheatPolicy) -> bool {
    let json_eq = |a: &str, b: &str| {
        serde_json::from_str::<Value>(a)
            .ok()
            .is_some_and(|a| serde_json::from_str::<Value>(b).ok() == Some(a))
    };
    fn optional_eq<T: PartialEq>(current: &Option<T>, desired: &Option<T>) -> bool {
        current.is_none() || current == desired
    }
    current.project_id == desired.project_id
        && current.provider_id == desired.provider_id
        && json_eq(&current.filters, &desired.filters)
        && json_eq(&current.trigger, &desired.trigger)
        && current.enabled == desired.enabled
        && current.description == desired.description
        && optional_eq(&current.scope, &desired.scope)
        && optional_eq(&current.extra_attrs, &desired.extra_attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_and_secrets_masked() {
        assert_eq!(segment("library"), "library");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        let mut v =
            json!({"auth_info": {"token": "t"}, "targets": [{"auth_header": "Bearer x"}], "name": "n"});
        mask_secrets(&mut v);
        assert_eq!(v["auth_info"]["token"], "<redacted>");
        assert_eq!(v["targets"][0]["auth_header"], "<redacted>");
        assert_eq!(v["name"], "n");
    }
}
