//! The messages between agents, edges and the preheater (`damselfly_core::api`), as each side
//! reads them: task answers, task and parent queries (JSON and the URL query the edge reads),
//! peer announcements and records, parent lists, warm requests and answers, the ticket key
//! answer; and the names inside them: the `/v2/` path, locations, digests, references.
//!
//! Properties: no panic; whatever reads also writes back to text that reads as the same value;
//! a `/v2/` path splits into a name and a last segment that rebuild it; names print as read.

#![no_main]

use damselfly_core::api::{
    ParentsAnswer, ParentsQuery, PeerAnnouncement, PeerRecord, RegistryTarget, TaskAnswer, TaskQuery,
    TicketKeyAnswer, WarmAnswer, WarmRequest,
};
use damselfly_core::{Digest, Location, Reference, RepositoryName};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    round_trip::<TaskQuery>(data);
    round_trip::<ParentsQuery>(data);
    round_trip::<PeerAnnouncement>(data);
    round_trip::<PeerRecord>(data);
    round_trip::<ParentsAnswer>(data);
    round_trip::<WarmRequest>(data);
    round_trip::<WarmAnswer>(data);
    round_trip::<TicketKeyAnswer>(data);
    if let Ok(answer) = serde_json::from_slice::<TaskAnswer>(data) {
        let text = serde_json::to_string(&answer).expect("serialises");
        let again: TaskAnswer = serde_json::from_str(&text).expect("reads back");
        assert_eq!(again.table, answer.table);
        assert_eq!(again.task_key.as_bytes(), answer.task_key.as_bytes());
        assert_eq!(
            (
                again.pieces_from,
                again.complete,
                &again.ticket,
                again.ticket_expires_at
            ),
            (
                answer.pieces_from,
                answer.complete,
                &answer.ticket,
                answer.ticket_expires_at
            )
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    url_round_trip::<TaskQuery>(text);
    url_round_trip::<ParentsQuery>(text);
    if let Some(target) = RegistryTarget::parse(text) {
        let (kind, last) = match target {
            RegistryTarget::Manifest { reference, .. } => ("manifests", reference),
            RegistryTarget::Blob { digest, .. } => ("blobs", digest),
        };
        assert!(!last.contains('/'));
        assert_eq!(format!("{}/{kind}/{last}", target.name()), text);
    }
    if let Ok(location) = text.parse::<Location>() {
        assert_eq!(location.to_string(), text);
    }
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string(), text);
    }
    if let Ok(name) = text.parse::<RepositoryName>() {
        assert_eq!(name.as_str(), text);
    }
    if let Ok(reference) = text.parse::<Reference>() {
        assert_eq!(reference.to_string(), text);
    }
});

/// Reads `T` from JSON; if it reads, what it writes reads as the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let text = serde_json::to_string(&value).expect("serialises");
    let again: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} does not read back: {e}"));
    assert_eq!(again, value);
}

/// Reads `T` from a URL query as the edge does; if it reads, its query reads as the same value.
fn url_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(text: &str) {
    let Ok(value) = serde_urlencoded::from_str::<T>(text) else {
        return;
    };
    let printed = serde_urlencoded::to_string(&value).expect("serialises");
    let again: T =
        serde_urlencoded::from_str(&printed).unwrap_or_else(|e| panic!("{printed} does not read back: {e}"));
    assert_eq!(again, value);
}
