//! The error body of the OCI distribution API, `{"errors":[{"code","message","detail"}]}`,
//! which registries, edges and Harbor's API all answer with.

use serde::Deserialize;

/// A one-line account of an error body: `CODE: message (detail)` for each error, joined by
/// `; `; a body in any other form is shown as text (its first 300 bytes).
pub fn error_summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| match &e.detail {
                serde_json::Value::Null => format!("{}: {}", e.code, e.message),
                d => format!("{}: {} ({d})", e.code, e.message),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}
