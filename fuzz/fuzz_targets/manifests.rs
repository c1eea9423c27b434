//! Manifests and indexes as they come from a registry: the media type the edge reads from the
//! body or `Content-Type`, and what the preheater's resolver reads of a manifest (its config and
//! layers, or the platform manifests of an index).
//!
//! Properties: no panic; the media type found in a body is the body's `mediaType`; a
//! `Content-Type` essence is trimmed, non-empty and parameter-free; each blob is listed once, by
//! a valid digest, and never more blobs than the manifest names.

#![no_main]

use std::collections::HashSet;

use damselfly_core::Digest;
use damselfly_registry::{content_type, media_type_in_body};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let doc = serde_json::from_slice::<Value>(data).ok();
    if let Some(media_type) = media_type_in_body(data) {
        if let Some(doc) = &doc {
            assert_eq!(doc["mediaType"].as_str(), Some(media_type.as_str()));
        }
    }
    if let Ok((blobs, children)) = damselfly_preheater::resolve::read_manifest(data) {
        let mut seen = HashSet::new();
        for blob in &blobs {
            let digest: Digest = blob
                .digest
                .as_deref()
                .expect("a blob has a digest")
                .parse()
                .expect("a listed digest is valid");
            assert!(seen.insert(digest), "{digest} listed twice");
        }
        // serde_json skips the fields the resolver ignores without checking their UTF-8, so a
        // document it reads is not always a JSON value.
        if let Some(doc) = &doc {
            let named = doc["config"].is_object() as usize + doc["layers"].as_array().map_or(0, Vec::len);
            assert!(blobs.len() <= named, "{} blobs of {named}", blobs.len());
            assert!(children.len() <= doc["manifests"].as_array().map_or(0, Vec::len));
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, value);
        if let Some(essence) = content_type(&headers) {
            assert!(!essence.is_empty() && !essence.contains(';'), "{essence:?}");
            assert_eq!(essence.trim(), essence);
        }
    }
});
