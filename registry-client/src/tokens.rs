//! Bearer tokens this client obtained for itself, by scope, until they expire.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::HeaderValue;

/// Scopes name repositories (`repository:<name>:pull`) and the names come from whoever sends
/// requests, so without a bound made-up names would grow the cache without end. 1024 covers
/// every repository a daemon reads within a token's lifetime (minutes) many times over, and at
/// a few KiB per JWT stays within a few MiB. Past it a token is dropped: the cost is one token
/// request when that scope comes back, never a failed request.
pub(crate) const CAPACITY: usize = 1024;

/// The longest a token is reused, whatever the token endpoint claims. Registries hand out
/// minutes to hours; a claim of centuries (or 2^63 seconds, which would overflow `Instant`)
/// buys nothing but a revoked token kept in use.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

pub(crate) struct TokenCache {
    capacity: usize,
    tokens: HashMap<String, Token>,
}

struct Token {
    /// `Bearer <token>`, ready to send.
    authorization: HeaderValue,
    expires: Instant,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            tokens: HashMap::new(),
        }
    }

    /// The token for `scope`, while it has not expired at `now`.
    pub(crate) fn get(&self, scope: &str, now: Instant) -> Option<HeaderValue> {
        self.tokens
            .get(scope)
            .filter(|t| t.expires > now)
            .map(|t| t.authorization.clone())
    }

    /// Keeps `authorization` for `scope` for `lifetime` (at most [`MAX_LIFETIME`]) from `now`.
    /// When full, expired tokens go first, then the one expiring soonest.
    pub(crate) fn insert(
        &mut self,
        scope: &str,
        authorization: HeaderValue,
        lifetime: Duration,
        now: Instant,
    ) {
        let Some(expires) = now.checked_add(lifetime.min(MAX_LIFETIME)) else {
            return;
        };
        if !self.tokens.contains_key(scope) && self.tokens.len() >= self.capacity {
            self.tokens.retain(|_, t| t.expires > now);
            if self.tokens.len() >= self.capacity {
                let soonest = self
                    .tokens
                    .iter()
                    .min_by_key(|(_, t)| t.expires)
                    .map(|(scope, _)| scope.clone());
                if let Some(soonest) = soonest {
                    self.tokens.remove(&soonest);
                }
            }
        }
        self.tokens.insert(
            scope.to_string(),
            Token {
                authorization,
                expires,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use damselfly_core::TokenAnswer;

    use super::*;

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    /// A cache of `capacity` holding `(scope, token, lifetime in seconds)`, all inserted at the
    /// instant it answers too.
    fn cache_holding(capacity: usize, tokens: &[(&str, &str, u64)]) -> (TokenCache, Instant) {
        let mut cache = TokenCache::new(capacity);
        let now = Instant::now();
        for (scope, token, secs) in tokens {
            cache.insert(scope, bearer(token), Duration::from_secs(*secs), now);
        }
        (cache, now)
    }

    #[test]
    fn tokens_are_reused_until_they_expire() {
        let (cache, now) = cache_holding(CAPACITY, &[("repository:a:pull", "t", 60)]);
        assert_eq!(cache.get("repository:a:pull", now), Some(bearer("t")));
        assert_eq!(
            cache.get("repository:a:pull", now + Duration::from_secs(59)),
            Some(bearer("t"))
        );
        assert_eq!(
            cache.get("repository:a:pull", now + Duration::from_secs(60)),
            None
        );
        assert_eq!(cache.get("repository:b:pull", now), None);
    }

    #[test]
    fn a_new_token_replaces_the_old_one_for_its_scope() {
        let (cache, now) = cache_holding(2, &[("s", "old", 60), ("s", "new", 60)]);
        assert_eq!(cache.get("s", now), Some(bearer("new")));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_then_the_soonest_to_expire() {
        let (mut cache, now) =
            cache_holding(3, &[("expired", "e", 1), ("short", "s", 100), ("long", "l", 300)]);
        let later = now + Duration::from_secs(10);
        cache.insert("new", bearer("n"), Duration::from_secs(300), later);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("short", later), Some(bearer("s")));
        cache.insert("newer", bearer("n2"), Duration::from_secs(300), later);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("short", later), None, "the soonest to expire goes");
        for scope in ["long", "new", "newer"] {
            assert!(cache.get(scope, later).is_some(), "{scope} stays");
        }
    }

    #[test]
    fn made_up_scopes_never_grow_the_cache_past_its_bound() {
        let mut cache = TokenCache::new(CAPACITY);
        let now = Instant::now();
        for i in 0..3 * CAPACITY {
            cache.insert(
                &format!("repository:x{i}:pull"),
                bearer("t"),
                Duration::from_secs(60),
                now,
            );
        }
        assert_eq!(cache.len(), CAPACITY);
    }

    #[test]
    fn a_lifetime_of_2_pow_63_seconds_is_capped_not_overflowed() {
        let answer: TokenAnswer =
            serde_json::from_str(r#"{"token":"t","expires_in":9223372036854775808}"#).unwrap();
        let (_, lifetime) = answer.into_token().unwrap();
        let mut cache = TokenCache::new(CAPACITY);
        let now = Instant::now();
        cache.insert("s", bearer("t"), lifetime, now);
        cache.insert("max", bearer("t"), Duration::MAX, now);
        assert_eq!(
            cache.get("s", now + MAX_LIFETIME - Duration::from_secs(1)),
            Some(bearer("t"))
        );
        assert_eq!(cache.get("s", now + MAX_LIFETIME), None);
        assert_eq!(cache.get("max", now + MAX_LIFETIME), None);
    }
}
