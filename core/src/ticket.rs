//! Short-lived signed tickets: an edge's word that a caller proved read access to a task.
//!
//! Token format: `v1.<task hex>.<expiry unix seconds>.<base64url Ed25519 signature>`, or
//! `v2.<task hex>.<expiry>.<base64url holder>.<signature>` for a ticket issued to an identity (an
//! agent's client certificate): edges then accept it only from that identity, so a ticket
//! sniffed off the plain peer-to-peer path buys nothing from an edge. The signing key is derived
//! from the cluster secret, so every edge issues tickets any other edge accepts; agents hold only
//! the public key (from an edge's `/api/v1/ticket-key`), so they can check a ticket but never
//! mint one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::digest::Digest;
use crate::seal::ClusterSecret;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub task: Digest,
    pub expires_at: u64,
    /// The identity the ticket was issued to, if any.
    pub holder: Option<String>,
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
    #[error("ticket was issued to another identity")]
    WrongHolder,
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
        self.sign(format!("v1.{}.{}", task.hex(), expires_at))
    }

    /// A ticket that edges accept only from `holder`.
    pub fn issue_to(&self, task: &Digest, expires_at: u64, holder: &str) -> String {
        let holder = URL_SAFE_NO_PAD.encode(holder.as_bytes());
        self.sign(format!("v2.{}.{}.{holder}", task.hex(), expires_at))
    }

    fn sign(&self, body: String) -> String {
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
        let (version, Some(hex), Some(expiry)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TicketError::Malformed);
        };
        let holder = match (version, parts.next(), parts.next()) {
            (Some("v1"), None, None) => None,
            (Some("v2"), Some(holder), None) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(holder)
                    .map_err(|_| TicketError::Malformed)?;
                Some(String::from_utf8(bytes).map_err(|_| TicketError::Malformed)?)
            }
            _ => return Err(TicketError::Malformed),
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
            holder,
        })
    }
}

impl Ticket {
    /// Checks that `caller` (the identity of whoever presents the ticket, if known) may use it:
    /// a ticket issued to an identity is that identity's alone.
    pub fn check_holder(&self, caller: Option<&str>) -> Result<(), TicketError> {
        match &self.holder {
            Some(holder) if caller != Some(holder.as_str()) => Err(TicketError::WrongHolder),
            _ => Ok(()),
        }
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
    fn a_ticket_issued_to_an_identity_is_that_identitys_alone() {
        let task = Digest::of(b"t");
        let token = signer(1).issue_to(&task, 1000, "agent-a");
        let ticket = signer(1).verifier().verify(&token, &task, 10).unwrap();
        assert_eq!(ticket.holder.as_deref(), Some("agent-a"));
        assert_eq!(ticket.check_holder(Some("agent-a")), Ok(()));
        assert_eq!(
            ticket.check_holder(Some("agent-b")),
            Err(TicketError::WrongHolder)
        );
        assert_eq!(ticket.check_holder(None), Err(TicketError::WrongHolder));
        // The holder is signed: naming another one breaks the signature.
        let (body, signature) = token.rsplit_once('.').unwrap();
        let (prefix, _) = body.rsplit_once('.').unwrap();
        let other = format!("{prefix}.{}.{signature}", URL_SAFE_NO_PAD.encode("agent-b"));
        assert_eq!(
            signer(1).verifier().verify(&other, &task, 10),
            Err(TicketError::BadSignature)
        );
        let anyone = signer(1)
            .verifier()
            .verify(&signer(1).issue(&task, 1000), &task, 10)
            .unwrap();
        assert_eq!(anyone.check_holder(None), Ok(()));
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
