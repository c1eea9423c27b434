//! Tickets as agents present them to edges (and edges' answers to agents), the ticket key an
//! agent fetches from an edge, and task keys in task answers.
//!
//! The verifier checks against a fixed cluster secret; the seeds hold tickets it issued, so
//! mutations explore every field behind a valid signature too.
//!
//! Properties: no panic; a ticket that verifies names the task asked for, has not expired, is
//! usable by its own holder, and is exactly what the signer issues for those fields (no second
//! spelling of a signed ticket); keys read back print as what was read.

#![no_main]

use std::sync::OnceLock;

use damselfly_core::api::task::{decode_task_key, encode_task_key};
use damselfly_core::{ClusterSecret, Digest, TicketSigner, TicketVerifier};
use libfuzzer_sys::fuzz_target;

/// What the seeds in `corpus/tickets/` were issued with (docs/fuzzing.md).
const SECRET: [u8; 32] = [7; 32];
const NOW: u64 = 1_700_000_000;

static SIGNER: OnceLock<TicketSigner> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let signer = SIGNER.get_or_init(|| TicketSigner::new(&ClusterSecret::new(&SECRET).expect("32 bytes")));
    let verifier = signer.verifier();
    let task = Digest::of(b"task");
    if let Ok(ticket) = verifier.verify(text, &task, NOW) {
        assert_eq!(ticket.task, task);
        assert!(NOW < ticket.expires_at);
        assert_eq!(ticket.check_holder(ticket.holder.as_deref()), Ok(()));
        let issued = match &ticket.holder {
            Some(holder) => signer.issue_to(&task, ticket.expires_at, holder),
            None => signer.issue(&task, ticket.expires_at),
        };
        assert_eq!(issued, text);
    }
    if let Ok(key) = TicketVerifier::from_base64(text) {
        assert_eq!(TicketVerifier::from_base64(&key.to_base64()), Ok(key.clone()));
    }
    if let Ok(key) = decode_task_key(text) {
        assert_eq!(encode_task_key(&key), text);
    }
});
