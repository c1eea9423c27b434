//! Who may drive the provider API.
//!
//! Harbor's instance `auth_mode`:
//! - `OAUTH`: `Authorization: Bearer <auth_info.token>` — compared against the configured tokens.
//! - `BASIC`: Harbor calls `SetBasicAuth(k, v)` with the *first key* of `auth_info` and its value.
//!   `{"<user>": "<password>"}` (what `harbor-integration register` stores) therefore sends
//!   `user:password`, which is what is accepted here. The UI's `{"username","password"}` form makes
//!   Harbor send a pair picked by Go's random map order, so prefer `OAUTH` when set up by hand.
//! - `NONE`: nothing is sent; accepted only when no token and no Basic pair is configured.
//!
//! Every configured secret is compared in constant time, and all of them are compared each time.

use axum::http::HeaderMap;
use base64::Engine;
use damselfly_core::constant_time_eq;

#[derive(Debug, Clone, Default)]
pub struct ProviderAuth {
    tokens: Vec<String>,
    /// `user:password`.
    basic: Vec<String>,
}

impl ProviderAuth {
    pub fn new(tokens: Vec<String>, basic: Vec<String>) -> Self {
        ProviderAuth { tokens, basic }
    }

    /// No credential configured: Harbor's `NONE` mode.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && self.basic.is_empty()
    }

    pub fn admits(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(value) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, credential) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            any_equal(&self.tokens, credential.as_bytes())
        } else if scheme.eq_ignore_ascii_case("basic") {
            match base64::engine::general_purpose::STANDARD.decode(credential) {
                Ok(pair) => any_equal(&self.basic, &pair),
                Err(_) => false,
            }
        } else {
            false
        }
    }
}

/// Compares against every entry, without stopping at the first match.
fn any_equal(secrets: &[String], presented: &[u8]) -> bool {
    secrets.iter().fold(false, |found, s| {
        constant_time_eq(s.as_bytes(), presented) | found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_as_harbor_sends_them() {
        let auth = ProviderAuth::new(
            vec!["t0k3n".into(), "second".into()],
            vec!["harbor:s3cret".into()],
        );
        assert!(auth.admits(&with("Bearer t0k3n")));
        assert!(auth.admits(&with("Bearer second")));
        assert!(!auth.admits(&with("Bearer t0k3")));
        assert!(!auth.admits(&with("Bearer ")));
        // Go's SetBasicAuth("harbor", "s3cret").
        assert!(auth.admits(&with("Basic aGFyYm9yOnMzY3JldA==")));
        assert!(!auth.admits(&with("Basic aGFyYm9yOndyb25n")));
        assert!(!auth.admits(&with("Basic !!!")));
        assert!(!auth.admits(&with("t0k3n")));
        assert!(!auth.admits(&HeaderMap::new()));
    }

    #[test]
    fn no_credentials_configured_is_harbors_none_mode() {
        let open = ProviderAuth::default();
        assert!(open.is_open());
        assert!(open.admits(&HeaderMap::new()));
        let only_basic = ProviderAuth::new(vec![], vec!["u:p".into()]);
        assert!(!only_basic.admits(&with("Bearer u:p")));
    }
}
