//! The Harbor API objects `register` manages (`/api/v2.0`), with the fields it sets. Harbor
//! answers with more fields (ids, creators, timestamps); unknown ones are ignored on read.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Harbor writes `null` for some empty strings and maps.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub project_id: i64,
    pub name: String,
}

/// `projects/{project}/webhook/policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
    pub enabled: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub event_types: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub targets: Vec<WebhookTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
    #[serde(default, deserialize_with = "nullable")]
    pub auth_header: String,
    #[serde(default)]
    pub skip_cert_verify: bool,
    /// `Default` or `CloudEvents`; absent before Harbor 2.8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_format: Option<String>,
}

/// `p2p/preheat/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,
    pub vendor: String,
    pub endpoint: String,
    pub auth_mode: String,
    #[serde(default, deserialize_with = "nullable")]
    pub auth_info: BTreeMap<String, String>,
    pub enabled: bool,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub insecure: bool,
}

/// `projects/{project}/preheat/policies`. `filters` and `trigger` are JSON documents carried as
/// strings, as Harbor's API defines them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreheatPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,
    pub project_id: i64,
    pub provider_id: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub filters: String,
    #[serde(default, deserialize_with = "nullable")]
    pub trigger: String,
    pub enabled: bool,
    /// Harbor 2.12: `single_peer` or `all_peers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Harbor ≥ 2.13: `{"scope": …, "cluster_ids": […]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_attrs: Option<serde_json::Value>,
}
