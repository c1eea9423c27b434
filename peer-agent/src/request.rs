//! What a caller asked the agent for, kept to ask the edges again (table refresh, edge failover)
//! and to reach the origin when the P2P path fails.

use damselfly_core::api::TaskQuery;
use damselfly_core::{Digest, PieceHash, PIECE_FORMAT};
use http::HeaderValue;

#[derive(Clone)]
pub(crate) struct BlobRequest {
    /// The task: a blob's digest, or a file's task id.
    pub(crate) digest: Digest,
    pub(crate) origin: TaskOrigin,
    pub(crate) authorization: Option<HeaderValue>,
}

#[derive(Clone)]
pub(crate) enum TaskOrigin {
    /// A registry blob in `repo` of the registry `ns` (the default upstream when `None`).
    Registry { repo: String, ns: Option<String> },
    /// A plain file (URL normalised), with the sha256 it must have when the caller knows it.
    File { url: String, expected: Option<Digest> },
}

impl BlobRequest {
    /// The edge's task query. `known`: the piece hashes already held, when refreshing a table
    /// (the edge then sends only the later ones, and reports a failed transfer instead of
    /// starting it again).
    pub(crate) fn task_query(&self, known: Option<usize>) -> TaskQuery {
        let mut query = match &self.origin {
            TaskOrigin::Registry { repo, ns } => TaskQuery {
                repo: Some(repo.clone()),
                ns: ns.clone(),
                ..TaskQuery::default()
            },
            TaskOrigin::File { url, expected } => TaskQuery {
                url: Some(url.clone()),
                digest: expected.map(|d| d.to_string()),
                ..TaskQuery::default()
            },
        };
        query.follow = known.is_some();
        query.known = known;
        // A quarter of SHA-256's CPU per byte received; an edge without it lists SHA-256.
        query.hash = Some(PieceHash::Blake3);
        // Compressed pieces are read (and decompressed once, on the way to the runtime).
        query.format = Some(PIECE_FORMAT);
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_follows_and_says_how_many_hashes_it_holds() {
        let request = BlobRequest {
            digest: Digest::of(b"blob"),
            origin: TaskOrigin::Registry {
                repo: "library/app".into(),
                ns: Some("docker.io".into()),
            },
            authorization: None,
        };
        let first = request.task_query(None);
        assert_eq!(
            (
                first.repo.as_deref(),
                first.ns.as_deref(),
                first.follow,
                first.known
            ),
            (Some("library/app"), Some("docker.io"), false, None)
        );
        let refresh = request.task_query(Some(3));
        assert_eq!((refresh.follow, refresh.known), (true, Some(3)));
        let file = BlobRequest {
            origin: TaskOrigin::File {
                url: "https://files.example/m.bin".into(),
                expected: Some(Digest::of(b"m")),
            },
            ..request
        };
        let query = file.task_query(None);
        assert_eq!(query.url.as_deref(), Some("https://files.example/m.bin"));
        assert_eq!(query.digest, Some(Digest::of(b"m").to_string()));
        assert_eq!(query.repo, None);
    }
}
