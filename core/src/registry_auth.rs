//! Registry authentication, the pure part: `WWW-Authenticate` challenges (RFC 7235) as
//! registries send them, the token endpoint they point to, and its answer. `damselfly-registry`
//! does the HTTP for the edge and the preheater.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `bearer` or `basic`.
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// Parses `Bearer realm="https://auth/token",service="registry",scope="repository:a:pull,push"`.
    /// Quoted values may hold commas; keys are lowercased.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        // The scheme is a token: it ends at the first whitespace of any kind (a tab or a line
        // break kept in it would make a scheme no registry sends, `bearer\t` is no `bearer`).
        let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = HashMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = chars
                    .by_ref()
                    .take_while(|c| *c != ',')
                    .collect::<String>()
                    .trim()
                    .to_string();
            }
            params.insert(key.trim().to_ascii_lowercase(), value);
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

impl Challenge {
    /// The token endpoint for a Bearer challenge: `realm?service=…&scope=…`, with `scope` or
    /// else the challenge's own.
    pub fn token_url(&self, scope: Option<&str>) -> Result<url::Url, String> {
        let realm = self.params.get("realm").ok_or("bearer challenge without realm")?;
        let mut url = url::Url::parse(realm).map_err(|e| format!("bad token realm {realm:?}: {e}"))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = self.params.get("service") {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope.or(self.params.get("scope").map(String::as_str)) {
                query.append_pair("scope", scope);
            }
        }
        Ok(url)
    }
}

/// A token endpoint's answer (Docker's `token` or OAuth2's `access_token`).
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl TokenAnswer {
    /// The token and how long to reuse it: renewed a little early; the spec's default lifetime
    /// is 60 s.
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token)?;
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).saturating_sub(5).max(1));
        Some((token, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_commas_in_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        assert_eq!(c.params["service"], "registry.example");
        assert!(Challenge::parse("").is_none());
    }

    #[test]
    fn the_scheme_ends_at_any_whitespace() {
        let tab = Challenge::parse("Bearer\trealm=\"https://auth.example/token\"").unwrap();
        assert_eq!(tab.scheme, "bearer");
        assert_eq!(tab.params["realm"], "https://auth.example/token");
        // Found by fuzzing: the scheme kept the line break, and printing it back lost it.
        let broken = Challenge::parse("{\n  =x").unwrap();
        assert_eq!((broken.scheme.as_str(), broken.params.len()), ("{", 0));
    }

    #[test]
    fn parses_basic() {
        let c = Challenge::parse(r#"Basic realm="damselfly-test""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "damselfly-test");
    }

    #[test]
    fn token_urls_carry_service_and_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:x:pull""#,
        )
        .unwrap();
        let own = c.token_url(None).unwrap();
        assert_eq!(
            own.as_str(),
            "https://auth.example/token?service=reg&scope=repository%3Ax%3Apull"
        );
        let asked = c.token_url(Some("repository:a/b:pull")).unwrap();
        assert_eq!(asked.query(), Some("service=reg&scope=repository%3Aa%2Fb%3Apull"));
        assert!(Challenge::parse("Bearer service=\"reg\"")
            .unwrap()
            .token_url(None)
            .is_err());
    }

    #[test]
    fn token_answers_in_both_spellings_renew_early() {
        let docker: TokenAnswer = serde_json::from_str(r#"{"token":"t","expires_in":300}"#).unwrap();
        assert_eq!(docker.into_token(), Some(("t".into(), Duration::from_secs(295))));
        let oauth: TokenAnswer = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(oauth.into_token(), Some(("a".into(), Duration::from_secs(55))));
        let none: TokenAnswer = serde_json::from_str("{}").unwrap();
        assert_eq!(none.into_token(), None);
    }
}
