//! Short-lived signed tickets: the edge's word that a caller proved read access to a task.
//!
//! Token format: `v1.<task hex>.<expiry unix seconds>.<base64url HMAC-SHA256>`, the MAC keyed by
//! a key derived from the cluster secret, so any edge (and no agent) can issue and check them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

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
}

#[derive(Clone)]
pub struct TicketSigner {
    key: hmac::Key,
}

impl TicketSigner {
    pub fn new(secret: &ClusterSecret) -> Self {
        TicketSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret.derive(b"ticket", b"")),
        }
    }

    pub fn issue(&self, task: &Digest, expires_at: u64) -> String {
        let body = format!("v1.{}.{}", task.hex(), expires_at);
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks signature, expiry (against `now`, unix seconds) and that it names `task`.
    pub fn verify(&self, token: &str, task: &Digest, now: u64) -> Result<Ticket, TicketError> {
        let (body, mac) = token.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TicketError::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &mac).map_err(|_| TicketError::BadSignature)?;
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
        assert_eq!(signer(1).verify(&token, &task, 999).unwrap().expires_at, 1000);
        assert_eq!(signer(1).verify(&token, &task, 1000), Err(TicketError::Expired));
        assert_eq!(
            signer(1).verify(&token, &Digest::of(b"u"), 10),
            Err(TicketError::WrongTask)
        );
        assert_eq!(
            signer(2).verify(&token, &task, 10),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn forged_or_garbled_tickets_fail() {
        let task = Digest::of(b"t");
        let token = signer(1).issue(&task, 1000);
        let forged = token.replace(".1000.", ".9999.");
        assert_eq!(
            signer(1).verify(&forged, &task, 10),
            Err(TicketError::BadSignature)
        );
        for bad in ["", "v1", "a.b.c.d.e", "v1.x.1.!!"] {
            assert!(signer(1).verify(bad, &task, 10).is_err(), "{bad}");
        }
    }
}
