//! From an image reference to everything an edge needs to serve it: index → platforms →
//! manifests → config + layers, plus the tag mapping.

use std::collections::HashSet;

use damselfly_core::{Digest, Reference, RepositoryName};
use damselfly_registry::Manifest;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::job::{Item, ItemKind};
use crate::platform::{Platform, PlatformFilter};
use crate::registry::Registry;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const IMAGE_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// What an image reference resolved to.
#[derive(Debug, Clone)]
pub(crate) struct Resolution {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    /// Blobs first, then platform manifests by digest, then the top manifest (by tag when the
    /// reference was a tag).
    pub(crate) items: Vec<Item>,
}

fn parse_doc(m: &Manifest) -> Result<ManifestDoc> {
    // serde reads a struct from an array too, field by position: a manifest is an object.
    if m.bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::RegistryRefused(format!(
            "manifest {} is not a JSON object",
            m.digest
        )));
    }
    serde_json::from_slice(&m.bytes)
        .map_err(|e| Error::RegistryRefused(format!("manifest {} is not valid JSON: {e}", m.digest)))
}

fn digest_of(d: &Descriptor) -> Result<Digest> {
    d.digest
        .parse()
        .map_err(|e| Error::RegistryRefused(format!("manifest lists a bad digest: {e}")))
}

/// Adds an image manifest's config and layers to `blobs` (once each).
fn add_blobs(doc: &ManifestDoc, blobs: &mut Vec<Item>, seen: &mut HashSet<Digest>) -> Result<()> {
    for d in doc.config.iter().chain(doc.layers.iter()) {
        let digest = digest_of(d)?;
        if seen.insert(digest) {
            blobs.push(
                Item::new(ItemKind::Blob, Some(digest.to_string()), None)
                    .with_size(d.size)
                    .with_media_type(d.media_type.clone()),
            );
        }
    }
    Ok(())
}

/// What the resolver reads of one manifest or index body, without a registry: the blobs an
/// image manifest names (config first, each digest once) and the platform manifests an index
/// names that every platform filter admits. The same parsing [`resolve`] does, for the fuzz
/// targets in `fuzz/`.
#[doc(hidden)]
pub fn read_manifest(body: &[u8]) -> Result<(Vec<Item>, Vec<Digest>)> {
    let manifest = Manifest {
        bytes: bytes::Bytes::copy_from_slice(body),
        media_type: String::new(),
        digest: Digest::of(body),
    };
    let doc = parse_doc(&manifest)?;
    let (mut blobs, mut seen) = (Vec::new(), HashSet::new());
    add_blobs(&doc, &mut blobs, &mut seen)?;
    let everything = PlatformFilter::default();
    let children = doc
        .manifests
        .iter()
        .filter(|d| everything.admits(d.platform.as_ref()))
        .map(digest_of)
        .collect::<Result<_>>()?;
    Ok((blobs, children))
}

pub(crate) async fn resolve(
    client: &Registry,
    repository: &RepositoryName,
    reference: &Reference,
    pinned: Option<Digest>,
    filter: &PlatformFilter,
    presented: Option<&str>,
) -> Result<Resolution> {
    // A pinned push is read by digest: the tag may not be readable yet, or may already have moved.
    let top = match pinned {
        Some(digest) => {
            client
                .manifest(repository, &Reference::Digest(digest), presented)
                .await?
        }
        None => client.manifest(repository, reference, presented).await?,
    };
    let doc = parse_doc(&top)?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut seen = HashSet::new();
    if INDEX_TYPES.contains(&top.media_type.as_str()) {
        let chosen: Vec<&Descriptor> = doc
            .manifests
            .iter()
            .filter(|d| filter.admits(d.platform.as_ref()))
            .filter(|d| d.media_type.as_deref().is_none_or(|t| IMAGE_TYPES.contains(&t)))
            .collect();
        if chosen.is_empty() {
            return Err(Error::RegistryRefused(format!(
                "no platform of index {repository}@{} matches the filter {:?}",
                top.digest,
                filter.names()
            )));
        }
        for d in chosen {
            let digest = digest_of(d)?;
            let child = client
                .manifest(repository, &Reference::Digest(digest), presented)
                .await?;
            if !IMAGE_TYPES.contains(&child.media_type.as_str()) {
                return Err(Error::RegistryRefused(format!(
                    "index child {digest} is a {}, not an image manifest",
                    child.media_type
                )));
            }
            add_blobs(&parse_doc(&child)?, &mut blobs, &mut seen)?;
            children.push(
                Item::new(ItemKind::Manifest, Some(digest.to_string()), None)
                    .with_size(Some(child.bytes.len() as u64))
                    .with_media_type(Some(child.media_type)),
            );
        }
    } else if IMAGE_TYPES.contains(&top.media_type.as_str()) {
        add_blobs(&doc, &mut blobs, &mut seen)?;
    } else {
        return Err(Error::RegistryRefused(format!(
            "{repository}:{reference} is a {}, which cannot be warmed",
            top.media_type
        )));
    }
    let tag = match reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    let top_item = Item::new(ItemKind::Manifest, Some(top.digest.to_string()), tag)
        .with_size(Some(top.bytes.len() as u64))
        .with_media_type(Some(top.media_type.clone()));
    let mut items = blobs;
    items.extend(children);
    items.push(top_item);
    Ok(Resolution {
        digest: top.digest,
        media_type: top.media_type,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_listed_once_in_order() {
        let doc: ManifestDoc = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":5},
               "layers":[{"mediaType":"l","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":7},
                         {"mediaType":"l","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":7}]}"#,
        )
        .unwrap();
        let (mut blobs, mut seen) = (Vec::new(), HashSet::new());
        add_blobs(&doc, &mut blobs, &mut seen).unwrap();
        add_blobs(&doc, &mut blobs, &mut seen).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0].size, Some(5));
        assert_eq!(blobs[1].media_type.as_deref(), Some("l"));
    }

    #[test]
    fn a_manifest_is_an_object_not_an_array_of_its_fields() {
        let config =
            r#"{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111"}"#;
        let (blobs, children) = read_manifest(format!(r#" {{"config":{config}}}"#).as_bytes()).unwrap();
        assert_eq!((blobs.len(), children.len()), (1, 0));
        // As in `media_type_in_body`, where fuzzing found it: `[manifests, config, layers]` was
        // read as a manifest.
        assert!(read_manifest(format!("[[],{config},[]]").as_bytes()).is_err());
    }
}
