//! The edges' ticket key, which the upload server checks other agents' tickets with: fetched
//! at start, fetched on demand when missing, and fetched again once when a ticket's signature
//! fails (the cluster's key may have been rotated).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use damselfly_core::{Digest, TicketError, TicketVerifier};

use super::edge::EdgeClient;
use crate::error::{AgentError, AgentResult};

/// Start-up fetches: this many tries, a second apart (the edges may start after the agent).
const PREFETCH_TRIES: u32 = 30;

pub(crate) struct TicketKeys {
    edges: Arc<EdgeClient>,
    key: RwLock<Option<TicketVerifier>>,
}

impl TicketKeys {
    pub(crate) fn new(edges: Arc<EdgeClient>) -> Self {
        TicketKeys {
            edges,
            key: RwLock::new(None),
        }
    }

    /// Fetches the key in the background, so the first upload need not wait for it.
    pub(crate) fn prefetch(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            for _ in 0..PREFETCH_TRIES {
                if this.fetch().await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Checks that `ticket` is an edge's, for `task`, and not expired.
    pub(crate) async fn verify(&self, ticket: &str, task: &Digest) -> AgentResult<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for attempt in 0..2 {
            let verifier = match self.held() {
                Some(v) => v,
                None => self.fetch().await?,
            };
            match verifier.verify(ticket, task, now) {
                Ok(_) => return Ok(()),
                // The cluster's key may have been rotated: fetch it again once.
                Err(TicketError::BadSignature) if attempt == 0 => self.forget(),
                Err(e) => return Err(AgentError::Unauthorized(e.to_string())),
            }
        }
        Err(AgentError::Unauthorized("ticket signature is invalid".into()))
    }

    fn held(&self) -> Option<TicketVerifier> {
        self.key.read().ok().and_then(|k| k.clone())
    }

    fn forget(&self) {
        if let Ok(mut k) = self.key.write() {
            *k = None;
        }
    }

    async fn fetch(&self) -> AgentResult<TicketVerifier> {
        let fetched = self.edges.ticket_key().await?;
        if let Ok(mut k) = self.key.write() {
            *k = Some(fetched.clone());
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use damselfly_core::{ClusterSecret, TicketSigner};

    fn signer(seed: u8) -> TicketSigner {
        TicketSigner::new(&ClusterSecret::new(&[seed; 32]).unwrap())
    }

    /// Keys without an edge to fetch from: only what is held counts.
    fn holding(key: Option<TicketVerifier>) -> TicketKeys {
        let http = reqwest::Client::new();
        let keys = TicketKeys::new(Arc::new(EdgeClient::new(&[], http.clone(), http)));
        *keys.key.write().unwrap() = key;
        keys
    }

    #[tokio::test]
    async fn tickets_verify_against_the_held_key() {
        let task = Digest::of(b"task");
        let keys = holding(Some(signer(1).verifier()));
        let far = u64::MAX / 2;
        assert!(keys.verify(&signer(1).issue(&task, far), &task).await.is_ok());
        let expired = keys.verify(&signer(1).issue(&task, 1), &task).await;
        assert!(matches!(expired, Err(AgentError::Unauthorized(_))), "{expired:?}");
        let other_task = keys
            .verify(&signer(1).issue(&Digest::of(b"other"), far), &task)
            .await;
        assert!(
            matches!(other_task, Err(AgentError::Unauthorized(_))),
            "{other_task:?}"
        );
    }

    #[tokio::test]
    async fn a_bad_signature_drops_the_key_and_asks_the_edges_again() {
        let task = Digest::of(b"task");
        let keys = holding(Some(signer(1).verifier()));
        let rotated = keys.verify(&signer(2).issue(&task, u64::MAX / 2), &task).await;
        // No edge answers here: the old key is gone and the caller hears that none is known.
        assert!(matches!(rotated, Err(AgentError::Unavailable(_))), "{rotated:?}");
        assert!(keys.held().is_none());
        let none = holding(None).verify("v1.x.1.y", &task).await;
        assert!(matches!(none, Err(AgentError::Unavailable(_))), "{none:?}");
    }
}
