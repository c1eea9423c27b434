//! The agent's status page on its ops listener (`GET /`, JSON at `GET /api/v1/status`), in the
//! look every daemon's page shares (`damselfly_server::page`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use axum::Json;
use damselfly_server::page::{self, bytes, escape, section};

use crate::state::AgentState;
use crate::status::{self, AgentStatus};

pub(crate) async fn json(State(state): State<Arc<AgentState>>) -> Json<AgentStatus> {
    Json(status::report(&state))
}

pub(crate) async fn page(State(state): State<Arc<AgentState>>) -> Html<String> {
    Html(render(&status::report(&state)))
}

fn render(s: &AgentStatus) -> String {
    let mut body = String::new();
    let from = |source: &str| bytes(s.downloaded.get(source).copied().unwrap_or(0));
    page::cards(
        &mut body,
        &[
            (
                "held",
                bytes(s.store.bytes),
                format!("of {} · {} tasks", bytes(s.store.quota_bytes), s.store.tasks),
            ),
            (
                "from peers",
                from("peer"),
                format!("edge {} · origin {}", from("edge"), from("origin")),
            ),
            (
                "uploaded",
                bytes(s.uploaded_bytes),
                format!("{} of {} slots busy", s.uploads_active, s.upload_slots),
            ),
        ],
    );
    let rows = s
        .downloads
        .iter()
        .map(|d| {
            vec![
                format!("<code>{}</code>", escape(&d.digest)),
                bytes(d.size),
                format!(
                    "<progress max=\"{all}\" value=\"{held}\"></progress> {held} / {all}",
                    all = d.pieces,
                    held = d.pieces_held
                ),
            ]
        })
        .collect();
    let headers = ["blob", "size", "pieces held"];
    section(&mut body, "Downloads in progress", "none", &headers, rows);
    let edges = s.edges.iter().map(|e| vec![escape(e)]).collect();
    section(&mut body, "Edges", "none configured", &["URL"], edges);
    let subtitle = format!(
        "{} · version {} · up {} s · <a href=\"/api/v1/status\">JSON</a> · <a href=\"/metrics\">metrics</a>",
        escape(&s.location),
        escape(&s.version),
        s.uptime_secs
    );
    page::document(
        &format!("Damselfly agent · {}", s.host_id),
        &subtitle,
        &s.warnings,
        &body,
    )
}
