//! Tasks and pieces: `GET /api/v1/tasks/<task>`, `GET /pieces/<task>/<index>`,
//! `GET /api/v1/ticket-key`.
//!
//! A task is a registry blob (named by its digest; `?repo=` and optionally `?ns=` say where it
//! lives, and the caller's credentials are checked there) or a plain file (named by its task id;
//! `?url=` and optionally `?digest=`). The answer carries the piece table so far, the task key and
//! a ticket that opens the task's pieces and scheduler calls for a while.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::piece::{PieceHash, PieceTable};
use crate::seal::TaskKey;

/// `/api/v1/tasks/<task>`.
pub fn task_path(task: &Digest) -> String {
    format!("/api/v1/tasks/{task}")
}

/// `/pieces/<task>/<index>`: one sealed piece, from an edge or from an agent's upload server.
pub fn piece_path(task: &Digest, index: u64) -> String {
    format!("/pieces/{task}/{index}")
}

/// Answers the key tickets are checked with ([`TicketKeyAnswer`]).
pub const TICKET_KEY_PATH: &str = "/api/v1/ticket-key";

/// The query of a task request (and of a piece request made with credentials instead of a
/// ticket: then only `repo` and `ns` matter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// A registry blob's repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The registry, as containerd names it; absent means the edge's default upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    /// A plain file's URL (instead of `repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The sha256 a plain file must have, when the caller knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Set by a caller refreshing a table it already has: a failed transfer is reported (an
    /// error answer with `X-Damselfly-Transfer-Failed`), not restarted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow: bool,
    /// Piece hashes the caller already holds (a refresh): only the later ones are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<usize>,
    /// The piece hash the caller prefers. An edge lists it when it has it for the whole blob,
    /// else SHA-256 (the table says which, and `known` then counts for nothing); edges from
    /// before the choice ignore the parameter and list SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<PieceHash>,
    /// The newest sealed piece format the caller reads (`encoding.rs`); absent means 1. An
    /// edge holding a blob with compressed pieces answers a caller that reads only format 1
    /// with an error (it has no other copy to offer), and lists such pieces to no one else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
}

/// What an edge answers for a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskAnswer {
    /// The hashes from `pieces_from` on (all of them unless the caller said it knows some).
    #[serde(flatten)]
    pub table: PieceTable,
    /// Index of the first hash in `table.pieces`. Left out when 0 and read as 0 when absent, so
    /// agents and edges from before it was added still understand each other.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pieces_from: usize,
    /// True once the blob's digest is verified and every piece is listed.
    pub complete: bool,
    /// The task's AES-256-GCM key, base64 (standard alphabet, padded).
    #[serde(with = "task_key_base64")]
    pub task_key: TaskKey,
    pub ticket: String,
    /// When the ticket expires (unix seconds).
    pub ticket_expires_at: u64,
}

/// `GET /api/v1/ticket-key`: the public key agents check tickets with (they cannot mint them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketKeyAnswer {
    /// Always [`TICKET_KEY_ALGORITHM`].
    pub algorithm: String,
    /// Base64 of the raw public key (`TicketVerifier::to_base64`).
    pub public_key: String,
}

pub const TICKET_KEY_ALGORITHM: &str = "ed25519";

impl TicketKeyAnswer {
    pub fn ed25519(public_key: String) -> Self {
        TicketKeyAnswer {
            algorithm: TICKET_KEY_ALGORITHM.to_string(),
            public_key,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskKeyError {
    #[error("task key is not base64")]
    NotBase64,
    #[error("task key has {0} bytes, not 32")]
    WrongLength(usize),
}

pub fn encode_task_key(key: &TaskKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

pub fn decode_task_key(text: &str) -> Result<TaskKey, TaskKeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| TaskKeyError::NotBase64)?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| TaskKeyError::WrongLength(b.len()))?;
    Ok(TaskKey::from_bytes(bytes))
}

mod task_key_base64 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::seal::TaskKey;

    pub fn serialize<S: Serializer>(key: &TaskKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode_task_key(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TaskKey, D::Error> {
        super::decode_task_key(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::PieceLayout;
    use crate::seal::ClusterSecret;

    fn answer(pieces_from: usize) -> TaskAnswer {
        let digest = Digest::of(b"blob");
        TaskAnswer {
            table: PieceTable {
                digest,
                layout: PieceLayout::for_size(1 << 20),
                hash: PieceHash::Sha256,
                pieces: vec![[7; 32], [8; 32]],
                zstd: Vec::new(),
            },
            pieces_from,
            complete: false,
            task_key: ClusterSecret::new(&[1; 32]).unwrap().task_key(&digest),
            ticket: "v1.t.1000.sig".into(),
            ticket_expires_at: 1000,
        }
    }

    fn round_trip(a: &TaskAnswer) -> TaskAnswer {
        serde_json::from_str(&serde_json::to_string(a).unwrap()).unwrap()
    }

    #[test]
    fn task_answers_round_trip() {
        for from in [0, 3] {
            let sent = answer(from);
            let read = round_trip(&sent);
            assert_eq!(read.table, sent.table);
            assert_eq!(read.pieces_from, from);
            assert_eq!(read.task_key.as_bytes(), sent.task_key.as_bytes());
            assert_eq!(
                (read.complete, read.ticket, read.ticket_expires_at),
                (false, sent.ticket, 1000)
            );
        }
        let whole = serde_json::to_value(answer(0)).unwrap();
        assert!(whole.get("pieces_from").is_none(), "{whole}");
        assert_eq!(whole["size"], 1 << 20, "the table's fields sit at the top level");
    }

    #[test]
    fn an_answer_from_an_edge_without_pieces_from_is_a_whole_table() {
        let key = encode_task_key(&answer(0).task_key);
        let old = format!(
            r#"{{"digest":"{}","size":1048576,"piece_length":262144,"pieces":["{}"],
                "complete":true,"task_key":"{key}","ticket":"t","ticket_expires_at":5}}"#,
            Digest::of(b"blob"),
            hex::encode([9u8; 32]),
        );
        let read: TaskAnswer = serde_json::from_str(&old).unwrap();
        assert_eq!((read.pieces_from, read.table.pieces.len()), (0, 1));
        assert!(read.complete);
    }

    #[test]
    fn task_keys_must_be_32_bytes_of_base64() {
        let key = answer(0).task_key;
        let text = encode_task_key(&key);
        assert_eq!(decode_task_key(&text).unwrap().as_bytes(), key.as_bytes());
        assert_eq!(decode_task_key("!!").unwrap_err(), TaskKeyError::NotBase64);
        assert_eq!(decode_task_key("AAAA").unwrap_err(), TaskKeyError::WrongLength(3));
        let mut bad = serde_json::to_value(answer(0)).unwrap();
        bad["task_key"] = "AAAA".into();
        assert!(serde_json::from_value::<TaskAnswer>(bad).is_err());
    }

    #[test]
    fn task_queries_name_only_what_is_set() {
        let query = TaskQuery {
            repo: Some("library/app".into()),
            known: Some(4),
            follow: true,
            ..TaskQuery::default()
        };
        let json = serde_json::to_value(&query).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"repo": "library/app", "follow": true, "known": 4})
        );
        assert_eq!(serde_json::from_value::<TaskQuery>(json).unwrap(), query);
        let first = serde_json::to_value(TaskQuery::default()).unwrap();
        assert_eq!(first, serde_json::json!({}), "a first request sends no follow");
    }

    #[test]
    fn paths() {
        let d = Digest::of(b"blob");
        assert_eq!(task_path(&d), format!("/api/v1/tasks/{d}"));
        assert_eq!(piece_path(&d, 7), format!("/pieces/{d}/7"));
    }
}
