//! Plain files distributed like blobs: a file's task is named by its normalised URL.
//!
//! Two hosts that fetch the same file must land in the same task whatever spelling of the URL
//! they were given, so the URL is normalised first (WHATWG parsing: scheme and host lowercased,
//! default port and fragment dropped, dot segments resolved, percent-encoding made canonical).
//! The query is kept as written: its order can matter to the server.
//!
//! Two ids name a file:
//! - [`file_task_id`] names what a client asks for (the URL): the path of its task request.
//! - [`file_version_id`] names one version of the content (the URL with its validators, `ETag`,
//!   `Last-Modified`, length, and the digest the caller expects): the task that is fetched,
//!   keyed, sealed and shared. A file that changes becomes a new task, so a key and its nonces
//!   never seal two different plaintexts. It is SHA-512/256, not SHA-256, of what names it: no
//!   content a registry can hold has it as its SHA-256, so a file task can never be taken for a
//!   blob (or a pushed blob squat a file's task).

use crate::Digest;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileUrlError {
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("only http and https URLs can be fetched, not {0:?}")]
    Scheme(String),
    #[error("URLs with credentials in them are not accepted (they would be shared with every host)")]
    Credentials,
}

/// The canonical spelling of a file URL.
pub fn normalise_url(raw: &str) -> Result<String, FileUrlError> {
    let mut url = url::Url::parse(raw.trim()).map_err(|e| FileUrlError::Invalid(format!("{raw}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FileUrlError::Scheme(url.scheme().to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FileUrlError::Credentials);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(FileUrlError::Invalid(format!("{raw}: no host")));
    }
    url.set_fragment(None);
    Ok(url.to_string())
}

/// The task id of a file: the same for every spelling of its URL.
pub fn file_task_id(raw_url: &str) -> Result<Digest, FileUrlError> {
    let url = normalise_url(raw_url)?;
    Ok(Digest::of(format!("damselfly-file:{url}").as_bytes()))
}

/// The task of one version of a file: its normalised URL, the validators its server gave
/// (`ETag`, `Last-Modified`, `Content-Length`, as text, in that order; empty when absent), and
/// the sha256 the caller expects, if any.
pub fn file_version_id(normalised_url: &str, validators: [&str; 3], expected: Option<&Digest>) -> Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA512_256);
    context.update(b"damselfly-file-version/v1");
    let expected = expected.map(|d| d.to_string()).unwrap_or_default();
    for part in [
        normalised_url,
        validators[0],
        validators[1],
        validators[2],
        &expected,
    ] {
        // Length-prefixed: no two lists of parts run together into the same bytes.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(context.finish().as_ref());
    Digest::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_url_share_a_task() {
        let a = file_task_id("HTTP://Files.Example.COM:80/a/./b/../model.bin#part").unwrap();
        let b = file_task_id("http://files.example.com/a/model.bin").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            normalise_url("https://x.example:443/%7efile").unwrap(),
            "https://x.example/%7efile"
        );
    }

    #[test]
    fn different_files_and_queries_differ() {
        let a = file_task_id("http://h/f?v=1").unwrap();
        assert_ne!(a, file_task_id("http://h/f?v=2").unwrap());
        assert_ne!(a, file_task_id("https://h/f?v=1").unwrap());
        // Never the digest of the URL's own bytes (that could be a real blob).
        assert_ne!(a, Digest::of(b"http://h/f?v=1"));
    }

    #[test]
    fn a_new_version_or_an_expected_digest_is_a_new_task() {
        let url = "http://h/model.bin";
        let v1 = file_version_id(url, ["\"a\"", "Tue, 01 Dec 2026 10:00:00 GMT", "42"], None);
        assert_eq!(
            v1,
            file_version_id(url, ["\"a\"", "Tue, 01 Dec 2026 10:00:00 GMT", "42"], None)
        );
        assert_ne!(
            v1,
            file_version_id(url, ["\"b\"", "Tue, 01 Dec 2026 10:00:00 GMT", "42"], None)
        );
        assert_ne!(
            v1,
            file_version_id(url, ["\"a\"", "Tue, 01 Dec 2026 10:00:00 GMT", "43"], None)
        );
        let expected = Digest::of(b"content");
        assert_ne!(
            v1,
            file_version_id(
                url,
                ["\"a\"", "Tue, 01 Dec 2026 10:00:00 GMT", "42"],
                Some(&expected)
            )
        );
        // Parts cannot be shifted into each other.
        assert_ne!(
            file_version_id("http://h/a", ["b", "", ""], None),
            file_version_id("http://h/ab", ["", "", ""], None)
        );
    }

    #[test]
    fn refuses_what_cannot_be_shared_safely() {
        assert_eq!(
            normalise_url("ftp://h/f"),
            Err(FileUrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            normalise_url("http://user:pw@h/f"),
            Err(FileUrlError::Credentials)
        );
        assert!(matches!(
            normalise_url("not a url"),
            Err(FileUrlError::Invalid(_))
        ));
    }
}
