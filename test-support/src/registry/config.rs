//! Rendering of the CNCF Distribution `config.yml`.
//!
//! The file is produced with plain string formatting rather than a YAML library: the shape is
//! fixed and small, and every user-supplied value goes through [`quote`], which emits a JSON
//! string literal (a valid YAML double-quoted scalar) so no value can break the structure.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Shared secret for upload-state HMACs. A fixed value keeps resumable uploads valid across a
/// restart of the same registry, which origin down/up tests rely on.
const HTTP_SECRET: &str = "damselfly-test-registry-secret";

/// Realm announced in `WWW-Authenticate` by an htpasswd-protected registry.
pub const AUTH_REALM: &str = "damselfly-test";

/// Where registry notifications are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationTarget {
    /// Endpoint receiving POSTed event envelopes.
    pub url: String,
    /// Value of the `Authorization` header sent with each delivery, if any.
    pub authorization: Option<String>,
}

/// Everything that varies between generated configs.
#[derive(Debug)]
pub struct ConfigInputs<'a> {
    /// Listen address.
    pub addr: SocketAddr,
    /// Filesystem storage root.
    pub data_dir: &'a Path,
    /// htpasswd file enabling basic auth, if any.
    pub htpasswd: Option<&'a Path>,
    /// Notification endpoint, if any.
    pub notifications: Option<&'a NotificationTarget>,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<(&'a Path, &'a Path)>,
}

/// Renders `config.yml`.
///
/// Notes on the choices: blob-descriptor caching is in memory (no Redis dependency); upload
/// purging is off so its background goroutine never races a test; the storage-driver health
/// check is off because it would report the registry unhealthy while a test deliberately breaks
/// storage; pulls are excluded from notifications because only pushes drive cache invalidation.
pub fn render(inputs: &ConfigInputs<'_>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
         \x20 cache:\n    blobdescriptor: inmemory\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: {secret}\n",
        root = quote(&inputs.data_dir.to_string_lossy()),
        addr = quote(&inputs.addr.to_string()),
        secret = quote(HTTP_SECRET),
    );
    if let Some((cert, key)) = inputs.tls {
        let _ = write!(
            out,
            "\x20 tls:\n    certificate: {cert}\n    key: {key}\n",
            cert = quote(&cert.to_string_lossy()),
            key = quote(&key.to_string_lossy()),
        );
    }
    out.push_str("health:\n  storagedriver:\n    enabled: false\n");
    if let Some(path) = inputs.htpasswd {
        let _ = write!(
            out,
            "auth:\n  htpasswd:\n    realm: {realm}\n    path: {path}\n",
            realm = quote(AUTH_REALM),
            path = quote(&path.to_string_lossy()),
        );
    }
    if let Some(target) = inputs.notifications {
        let _ = write!(
            out,
            "notifications:\n  events:\n    includereferences: true\n  endpoints:\n\
             \x20   - name: damselfly\n      url: {url}\n",
            url = quote(&target.url),
        );
        if let Some(value) = &target.authorization {
            // Distribution requires header values to be lists.
            let _ = writeln!(out, "      headers:\n        Authorization: [{}]", quote(value));
        }
        out.push_str(
            "      timeout: 1s\n      threshold: 3\n      backoff: 1s\n      ignore:\n        actions: [pull]\n",
        );
    }
    out
}

/// Quotes `value` as a YAML double-quoted scalar.
fn quote(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        htpasswd: Option<&'a Path>,
        notifications: Option<&'a NotificationTarget>,
    ) -> ConfigInputs<'a> {
        ConfigInputs {
            addr: "127.0.0.1:5000".parse().expect("literal address"),
            data_dir: Path::new("/tmp/reg/data"),
            htpasswd,
            notifications,
            tls: None,
        }
    }

    #[test]
    fn plain_config_has_no_auth_or_notifications() {
        let text = render(&inputs(None, None));
        assert!(text.contains("rootdirectory: \"/tmp/reg/data\""));
        assert!(text.contains("addr: \"127.0.0.1:5000\""));
        assert!(text.contains("\n  cache:\n    blobdescriptor: inmemory\n"));
        assert!(!text.contains("auth:") && !text.contains("notifications:"));
    }

    #[test]
    fn notifications_headers_are_lists_and_optional() {
        let with = NotificationTarget {
            url: "http://127.0.0.1:9/events".into(),
            authorization: Some("Bearer \"x\"".into()),
        };
        let text = render(&inputs(Some(Path::new("/h")), Some(&with)));
        assert!(text.contains("realm: \"damselfly-test\"\n    path: \"/h\"\n"));
        assert!(text.contains("Authorization: [\"Bearer \\\"x\\\"\"]"), "{text}");
        assert!(text.contains("actions: [pull]"));

        let without = NotificationTarget {
            authorization: None,
            ..with
        };
        assert!(!render(&inputs(None, Some(&without))).contains("headers:"));
    }
}
