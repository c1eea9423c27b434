//! The read side of the OCI distribution API as the edge and the agent's mirror route it:
//! `/v2/<name>/manifests/<reference>` and `/v2/<name>/blobs/<digest>`.

/// Sent on every registry answer; clients check it on `/v2/`.
pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// What the path after `/v2/` names. The parts are as written: callers parse the name, reference
/// or digest with their own errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryTarget<'a> {
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
}

impl<'a> RegistryTarget<'a> {
    /// Splits at the last `/manifests/` or `/blobs/`: names may themselves contain those words
    /// as components (`a/blobs/b` is a valid repository), the reference never contains a slash.
    /// `None` for anything else (tags lists, catalog, uploads).
    pub fn parse(path: &'a str) -> Option<Self> {
        let (head, last) = path.rsplit_once('/')?;
        let (name, kind) = head.rsplit_once('/')?;
        match kind {
            "manifests" => Some(RegistryTarget::Manifest {
                name,
                reference: last,
            }),
            "blobs" => Some(RegistryTarget::Blob { name, digest: last }),
            _ => None,
        }
    }

    /// The repository name, unparsed.
    pub fn name(&self) -> &'a str {
        match self {
            RegistryTarget::Manifest { name, .. } | RegistryTarget::Blob { name, .. } => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_last_kind() {
        assert_eq!(
            RegistryTarget::parse("library/nginx/manifests/1.25"),
            Some(RegistryTarget::Manifest {
                name: "library/nginx",
                reference: "1.25"
            })
        );
        let blob = RegistryTarget::parse("a/blobs/b/blobs/sha256:x");
        assert_eq!(
            blob,
            Some(RegistryTarget::Blob {
                name: "a/blobs/b",
                digest: "sha256:x"
            })
        );
        assert_eq!(blob.map(|t| t.name()), Some("a/blobs/b"));
        assert_eq!(RegistryTarget::parse("a/tags/list"), None);
        assert_eq!(RegistryTarget::parse("manifests/x"), None);
        assert_eq!(RegistryTarget::parse("library"), None);
    }
}
