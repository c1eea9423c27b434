//! Plain files distributed like blobs: a file's task is named by its normalised URL.
//!
//! Two hosts that fetch the same file must land in the same task whatever spelling of the URL
//! they were given, so the URL is normalised first (WHATWG parsing: scheme and host lowercased,
//! default port and fragment dropped, dot segments resolved, percent-encoding made canonical).
//! The query is kept as written: its order can matter to the server. The task id is the sha256
//! of a prefixed form, so it can never equal a blob digest a registry would name.

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
