//! Short-lived signed tickets: an edge's word that a caller proved read access to a task.
//!
//! Token format: `v1.<task hex>.<expiry unix seconds>.<base64url Ed25519 signature>`. The signing
//! key is derived from the cluster secret, so every edge issues tickets any other edge accepts;
//! agents hold only the public key (from an edge's `/api/v1/ticket-key`), so they can check a
//! ticket but never mint one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::digest::Digest;
use crate::seal::ClusterSecret;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub task: Digest,
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("ticket is malformed")]
    Malformed,
    #[error("ticket signature is invalid")]
    BadSignature,
    #[error("ticket expired")]
    Expired,
    #[error("ticket was issued for another task")]
    WrongTask,
    #[error("ticket public key is malformed")]
    BadKey,
}

/// Issues tickets (edges only: needs the cluster secret).
pub struct TicketSigner {
    key: Ed25519KeyPair,
}

impl TicketSigner {
    pub fn new(secret: &ClusterSecret) -> Self {
        let seed = secret.derive(b"ticket-ed25519", b"");
        // Any 32-byte seed is a valid Ed25519 private key.
        let key = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap_or_else(|_| unreachable!());
        TicketSigner { key }
    }

    pub fn issue(&self, task: &Digest, expires_at: u64) -> String {
        let body = format!("v1.{}.{}", task.hex(), expires_at);
        let signature = self.key.sign(body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    pub fn verifier(&self) -> TicketVerifier {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.key.public_key().as_ref());
        TicketVerifier { public }
    }
}

/// Checks tickets (edges and agents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketVerifier {
    public: [u8; 32],
}

impl TicketVerifier {
    pub fn from_base64(public_key: &str) -> Result<Self, TicketError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(public_key.trim_end_matches('='))
            .map_err(|_| TicketError::BadKey)?;
        let public: [u8; 32] = bytes.try_into().map_err(|_| TicketError::BadKey)?;
        Ok(TicketVerifier { public })
    }

    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public)
    }

    /// Checks signature, expiry (against `now`, unix seconds) and that it names `task`.
    pub fn verify(&self, token: &str, task: &Digest, now: u64) -> Result<Ticket, TicketError> {
        let (body, signature) = token.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TicketError::Malformed)?;
        UnparsedPublicKey::new(&signature::ED25519, &self.public)
            .verify(body.as_bytes(), &signature)
            .map_err(|_| TicketError::BadSignature)?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(hex), Some(expiry), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Malformed);
        };
        let ticket_task: Digest = format!("sha256:{hex}")
            .parse()
            .map_err(|_| TicketError::Malformed)?;
        let expires_at: u64 = expiry.parse().map_err(|_| TicketError::Malformed)?;
        if ticket_task != *task {
            return Err(TicketError::WrongTask);
        }
        if now >= expires_at {
            return Err(TicketError::Expired);
        }
        Ok(Ticket {
            task: ticket_task,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> TicketSigner {
        TicketSigner::new(&ClusterSecret::new(&[byte; 32]).unwrap())
    }

    #[test]
    fn issued_tickets_verify_until_expiry() {
        let task = Digest::of(b"t");
        let token = signer(1).issue(&task, 1000);
        let verifier = signer(1).verifier();
        assert_eq!(verifier.verify(&token, &task, 999).unwrap().expires_at, 1000);
        assert_eq!(verifier.verify(&token, &task, 1000), Err(TicketError::Expired));
        assert_eq!(
            verifier.verify(&token, &Digest::of(b"u"), 10),
            Err(TicketError::WrongTask)
        );
        assert_eq!(
            signer(2).verifier().verify(&token, &task, 10),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn every_edge_of_a_cluster_derives_the_same_key() {
        assert_eq!(signer(1).verifier(), signer(1).verifier());
        let shared = TicketVerifier::from_base64(&signer(1).verifier().to_base64()).unwrap();
        assert!(shared
            .verify(&signer(1).issue(&Digest::of(b"t"), 10), &Digest::of(b"t"), 1)
            .is_ok());
        assert!(TicketVerifier::from_base64("short").is_err());
    }

    #[test]
    fn forged_or_garbled_tickets_fail() {
        let task = Digest::of(b"t");
        let token = signer(1).issue(&task, 1000);
        let verifier = signer(1).verifier();
        let forged = token.replace(".1000.", ".9999.");
        assert_eq!(
            verifier.verify(&forged, &task, 10),
            Err(TicketError::BadSignature)
        );
        for bad in ["", "v1", "a.b.c.d.e", "v1.x.1.!!"] {
            assert!(verifier.verify(bad, &task, 10).is_err(), "{bad}");
        }
    }
}
