//! Ticket checks for every scheduler call and piece request, with the signature verified once
//! per ticket: an agent presents the same ticket several times a second for minutes, and an
//! Ed25519 verification was a tenth of an edge's work under scheduler load (`bench control`).

use std::time::Duration;

use damselfly_core::{Digest, Ticket, TicketError, TicketVerifier};

/// Tickets remembered at most; a ticket not seen for this long is verified again.
const REMEMBERED: u64 = 100_000;
const IDLE: Duration = Duration::from_secs(60);

pub struct TicketChecker {
    verifier: TicketVerifier,
    /// Tokens whose signature verified, with what they say. Keyed by the whole token, signature
    /// included, so a token that differs in any byte is verified afresh.
    verified: moka::sync::Cache<String, Ticket>,
}

impl TicketChecker {
    pub fn new(verifier: TicketVerifier) -> TicketChecker {
        TicketChecker {
            verifier,
            verified: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_idle(IDLE)
                .build(),
        }
    }

    pub fn verifier(&self) -> &TicketVerifier {
        &self.verifier
    }

    /// The same answer as [`TicketVerifier::verify`]: the task and the expiry are checked on
    /// every call, the signature once.
    pub fn check(&self, token: &str, task: &Digest, now: u64) -> Result<Ticket, TicketError> {
        if let Some(ticket) = self.verified.get(token) {
            return match ticket {
                t if t.task != *task => Err(TicketError::WrongTask),
                t if now >= t.expires_at => Err(TicketError::Expired),
                t => Ok(t),
            };
        }
        let ticket = self.verifier.verify(token, task, now)?;
        self.verified.insert(token.to_string(), ticket.clone());
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use damselfly_core::{ClusterSecret, TicketSigner};

    #[test]
    fn a_remembered_ticket_still_answers_for_its_task_and_its_time_only() {
        let signer = TicketSigner::new(&ClusterSecret::new(&[3; 32]).unwrap());
        let checker = TicketChecker::new(signer.verifier());
        let (task, other) = (Digest::of(b"task"), Digest::of(b"other"));
        let token = signer.issue(&task, 1000);
        assert_eq!(checker.check(&token, &task, 10).unwrap().task, task);
        // Remembered now: the same checks as a fresh verification.
        assert_eq!(checker.check(&token, &task, 999).unwrap().expires_at, 1000);
        assert_eq!(checker.check(&token, &other, 10), Err(TicketError::WrongTask));
        assert_eq!(checker.check(&token, &task, 1000), Err(TicketError::Expired));
        // A forged signature is never taken for the remembered one.
        let (body, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{body}.{}", "A".repeat(86));
        assert_eq!(checker.check(&forged, &task, 10), Err(TicketError::BadSignature));
        let other_signer = TicketSigner::new(&ClusterSecret::new(&[4; 32]).unwrap());
        assert_eq!(
            checker.check(&other_signer.issue(&task, 1000), &task, 10),
            Err(TicketError::BadSignature)
        );
    }
}
