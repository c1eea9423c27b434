//! A registry's `WWW-Authenticate` challenge (what the edge and the preheater read to fetch a
//! token, and pass through to clients), the token URL built from it, and the token endpoint's
//! answer.
//!
//! Properties: no panic; the scheme is lowercase and non-empty; a challenge printed back
//! (quoted, escaped) parses as the same challenge; a token URL carries the challenge's service
//! and scope; a token is reused for at least a second and never longer than it lives.

#![no_main]

use std::time::Duration;

use damselfly_core::{Challenge, TokenAnswer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = serde_json::from_slice::<TokenAnswer>(data) {
        let expires_in = serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v["expires_in"].as_u64());
        if let Some((_, lifetime)) = answer.into_token() {
            assert!(lifetime >= Duration::from_secs(1));
            if let Some(expires_in) = expires_in.filter(|s| *s >= 1) {
                assert!(lifetime <= Duration::from_secs(expires_in));
            }
        }
    }
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Some(challenge) = Challenge::parse(header) else {
        return;
    };
    assert!(!challenge.scheme.is_empty());
    assert_eq!(challenge.scheme, challenge.scheme.to_ascii_lowercase());
    let printed = print(&challenge);
    assert_eq!(
        Challenge::parse(&printed).as_ref(),
        Some(&challenge),
        "{printed:?}"
    );
    if let Ok(url) = challenge.token_url(None) {
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        for key in ["service", "scope"] {
            if let Some(value) = challenge.params.get(key) {
                assert!(
                    pairs.iter().any(|(k, v)| k == key && v == value),
                    "{key} not in {url}"
                );
            }
        }
    }
});

/// `scheme key="value",…` with `"` and `\` escaped: how a registry would send it.
fn print(challenge: &Challenge) -> String {
    let mut params: Vec<_> = challenge.params.iter().collect();
    params.sort();
    let params: Vec<String> = params
        .into_iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{} {}", challenge.scheme, params.join(","))
}
