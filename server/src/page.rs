//! The daemons' status pages, one look for all: server-rendered HTML with inline CSS (and the
//! SVG a page draws itself), no scripts and no external assets, so a page works offline and
//! behind any proxy; each refreshes itself every 10 s.

use std::fmt::Write as _;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2733;background:#f6f8fa}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:24px 0 8px}.muted{color:#6a737d}\
.warn{background:#fff1f0;border:1px solid #f5a8a2;padding:6px 10px;margin:6px 0;border-radius:4px}\
table{border-collapse:collapse;background:#fff}td,th{padding:4px 10px;border:1px solid #dde2e7;text-align:left}\
th{background:#eef1f4}.num{text-align:right;font-variant-numeric:tabular-nums}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:10px 14px;min-width:150px}\
.card b{display:block;font-size:18px}";

/// Text made safe inside HTML elements and quoted attributes.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1.5 GiB`, `320 KiB`, `12 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A whole page: `title`, a `subtitle` line (HTML), the `warnings` (text), then `body` (HTML).
pub fn document(title: &str, subtitle: &str, warnings: &[String], body: &str) -> String {
    let title = escape(title);
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1><div class=\"muted\">{subtitle}</div>"
    );
    for warning in warnings {
        let _ = write!(html, "<div class=\"warn\">⚠ {}</div>", escape(warning));
    }
    html.push_str(body);
    html.push_str("</body></html>");
    html
}

/// Figures side by side: (label, value, note under it); all HTML.
pub fn cards(html: &mut String, cards: &[(&str, String, String)]) {
    html.push_str("<div class=\"cards\">");
    for (label, value, note) in cards {
        let _ = write!(html, "<div class=\"card\">{label}<b>{value}</b>{note}</div>");
    }
    html.push_str("</div>");
}

/// A section: its title, then a table of `rows` under `headers`, or `empty` when there are none.
/// Cells are HTML already (escaped by the caller where they carry text from outside).
pub fn section(html: &mut String, title: &str, empty: &str, headers: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(html, "<h2>{title}</h2>");
    if rows.is_empty() {
        let _ = write!(html, "<div class=\"muted\">{empty}</div>");
        return;
    }
    html.push_str("<table><tr>");
    for header in headers {
        let _ = write!(html, "<th>{header}</th>");
    }
    html.push_str("</tr>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

/// The secret a caller presented for a page: a bearer token, or HTTP Basic's password (any
/// user name), which is how a browser can be made to ask for it. Empty when none.
pub fn presented_secret(headers: &HeaderMap) -> String {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(bearer) = presented.strip_prefix("Bearer ") {
        return bearer.to_string();
    }
    presented
        .strip_prefix("Basic ")
        .and_then(|basic| {
            base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, password)| password.to_string()))
        .unwrap_or_default()
}

/// 401 asking a browser for the `what` token as the password of `realm`.
pub fn ask_for_secret(realm: &str, what: &str) -> Response {
    let challenge = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        format!("the {what} is required (as the password)\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(50 * 1024 * 1024 * 1024), "50.0 GiB");
    }

    #[test]
    fn a_secret_comes_as_a_bearer_token_or_a_basic_password() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            presented_secret(&headers)
        };
        assert_eq!(with("Bearer t0k"), "t0k");
        // "ops:t0k:x" — the password is everything after the first colon.
        assert_eq!(with("Basic b3BzOnQwazp4"), "t0k:x");
        assert_eq!(with("Basic !!"), "");
        assert_eq!(presented_secret(&HeaderMap::new()), "");
    }

    #[test]
    fn text_from_outside_is_escaped() {
        assert_eq!(escape("<script>\"&"), "&lt;script&gt;&quot;&amp;");
        let html = document("a<b", "", &["x&y".into()], "");
        assert!(
            html.contains("<h1>a&lt;b</h1>") && html.contains("x&amp;y"),
            "{html}"
        );
    }
}
