//! The edge's status page (`GET /`): server-rendered HTML with inline CSS and SVG, no scripts
//! and no external assets (it works offline, behind any proxy), refreshing itself every 10 s.
//! The same report as JSON is `GET /api/v1/status`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use axum::Json;

use damselfly_server::page::{self, bytes, escape, section};

use crate::state::AppState;
use crate::status::{self, Sample, StatusReport};

pub(crate) async fn json(State(state): State<Arc<AppState>>) -> Json<StatusReport> {
    Json(status::report(&state).await)
}

pub(crate) async fn page(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(render(&status::report(&state).await))
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or("–".into(), |r| format!("{:.0} %", r * 100.0))
}

fn render(report: &StatusReport) -> String {
    let mut body = String::with_capacity(8 * 1024);
    render_cache(&mut body, report);
    render_traffic(&mut body, report);
    render_ingests(&mut body, report);
    render_racks(&mut body, report);
    let subtitle = format!(
        "version {} · up {} s · refreshes every 10 s · <a href=\"/api/v1/status\">JSON</a> · \
         <a href=\"/metrics\">metrics</a>",
        escape(&report.version),
        report.uptime_secs
    );
    let title = format!("Damselfly edge · {}", report.region);
    page::document(&title, &subtitle, &report.warnings, &body)
}

fn render_cache(html: &mut String, report: &StatusReport) {
    let c = &report.cache;
    html.push_str("<h2>Cache</h2>");
    let hits = |kind| percent(report.hit_ratio.get(kind).copied().flatten());
    page::cards(
        html,
        &[
            (
                "used",
                bytes(c.used_bytes),
                format!("of {}", bytes(c.quota_bytes)),
            ),
            ("blobs", c.blobs.to_string(), format!("{} pinned", c.pinned_blobs)),
            (
                "manifests · tags",
                format!("{} · {}", c.manifests, c.tags),
                "&nbsp;".into(),
            ),
            (
                "hit ratio",
                hits("blob"),
                format!("manifests {}", hits("manifest")),
            ),
        ],
    );
    // Use against the quota, with the watermarks where eviction starts and stops.
    let width = 600.0;
    let x = |v: u64| {
        if c.quota_bytes == 0 {
            0.0
        } else {
            (v as f64 / c.quota_bytes as f64).min(1.0) * width
        }
    };
    let _ = write!(
        html,
        "<svg width=\"{width}\" height=\"26\" role=\"img\" aria-label=\"cache use\" style=\"margin-top:8px\">\
         <rect width=\"{width}\" height=\"18\" fill=\"#e4e8ec\"/>\
         <rect width=\"{used:.1}\" height=\"18\" fill=\"#2f81f7\"/>\
         <line x1=\"{low:.1}\" x2=\"{low:.1}\" y1=\"0\" y2=\"24\" stroke=\"#8a6d00\"/>\
         <line x1=\"{high:.1}\" x2=\"{high:.1}\" y1=\"0\" y2=\"24\" stroke=\"#cf222e\"/></svg>\
         <div class=\"muted\">eviction from {high_b} (red) down to {low_b} (amber)</div>",
        used = x(c.used_bytes),
        low = x(c.low_watermark_bytes),
        high = x(c.high_watermark_bytes),
        high_b = bytes(c.high_watermark_bytes),
        low_b = bytes(c.low_watermark_bytes),
    );
}

fn render_traffic(html: &mut String, report: &StatusReport) {
    let served_total: u64 = report.bytes.served.values().sum();
    let _ = write!(
        html,
        "<h2>Traffic since start</h2><table><tr><th>from the origin</th><th>to runtimes (blobs)</th>\
         <th>to agents (pieces)</th><th>manifests</th><th>origin bytes per byte served</th></tr>\
         <tr><td class=\"num\" id=\"bytes-upstream\">{up}</td><td class=\"num\">{blob}</td>\
         <td class=\"num\">{piece}</td><td class=\"num\">{manifest}</td><td class=\"num\">{share}</td></tr></table>",
        up = bytes(report.bytes.upstream),
        blob = bytes(report.bytes.served.get("blob").copied().unwrap_or(0)),
        piece = bytes(report.bytes.served.get("piece").copied().unwrap_or(0)),
        manifest = bytes(report.bytes.served.get("manifest").copied().unwrap_or(0)),
        share = if served_total == 0 {
            "–".to_string()
        } else {
            format!("{:.2}", report.bytes.upstream as f64 / served_total as f64)
        },
    );
    html.push_str("<h2>Bytes per second, last hour</h2>");
    html.push_str(&plot(&report.history));
}

/// The mean rate between two samples: (start ms, end ms, from the origin, served), per second.
type Rate = (f64, f64, f64, f64);

/// Rates between consecutive samples, as two step lines (origin → edge, edge → clients): each
/// interval is drawn flat at its mean, so even the first one shows.
fn plot(history: &[Sample]) -> String {
    let (width, height) = (600.0, 140.0);
    if history.len() < 2 {
        return "<div class=\"muted\">collecting samples…</div>".into();
    }
    let rates: Vec<Rate> = history
        .windows(2)
        .map(|w| {
            let secs = (w[1].at_ms.saturating_sub(w[0].at_ms) as f64 / 1000.0).max(0.001);
            (
                w[0].at_ms as f64,
                w[1].at_ms as f64,
                w[1].upstream_bytes.saturating_sub(w[0].upstream_bytes) as f64 / secs,
                w[1].served_bytes.saturating_sub(w[0].served_bytes) as f64 / secs,
            )
        })
        .collect();
    let (first, last) = (history[0].at_ms as f64, history[history.len() - 1].at_ms as f64);
    let span = (last - first).max(1.0);
    let top = rates.iter().map(|r| r.2.max(r.3)).fold(1.0_f64, f64::max);
    let line = |pick: fn(&Rate) -> f64| {
        rates
            .iter()
            .flat_map(|r| {
                let y = height - pick(r) / top * (height - 10.0);
                [r.0, r.1].map(|at| format!("{:.1},{y:.1}", (at - first) / span * width))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "<svg id=\"traffic-plot\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"bytes per second\" \
         style=\"background:#fff;border:1px solid #dde2e7\">\
         <polyline fill=\"none\" stroke=\"#cf222e\" stroke-width=\"2\" points=\"{up}\"/>\
         <polyline fill=\"none\" stroke=\"#2f81f7\" stroke-width=\"2\" points=\"{served}\"/>\
         <text x=\"6\" y=\"{label_y}\" font-size=\"11\" fill=\"#6a737d\">peak {peak}/s</text></svg>\
         <div class=\"muted\"><span style=\"color:#cf222e\">■</span> from the origin \
         <span style=\"color:#2f81f7\">■</span> served</div>",
        up = line(|r| r.2),
        served = line(|r| r.3),
        peak = bytes(top as u64),
        label_y = height - 6.0,
    )
}

fn render_ingests(html: &mut String, report: &StatusReport) {
    let rows = report
        .ingests
        .iter()
        .map(|ingest| {
            let done = match ingest.pieces {
                Some(n) if n > 0 => format!(
                    "<progress max=\"{n}\" value=\"{sealed}\"></progress> {sealed} / {n}",
                    sealed = ingest.pieces_sealed
                ),
                _ => "waiting for the upstream".into(),
            };
            let size = ingest.size.map_or("?".into(), bytes);
            vec![format!("<code>{}</code>", escape(&ingest.digest)), size, done]
        })
        .collect();
    let headers = ["blob", "size", "pieces sealed"];
    section(html, "Transfers from the origin", "none running", &headers, rows);
}

fn render_racks(html: &mut String, report: &StatusReport) {
    let rows = report
        .racks
        .iter()
        .map(|rack| {
            let uploads = format!("{} / {}", rack.uploads_active, rack.upload_slots);
            vec![escape(&rack.location), rack.hosts.to_string(), uploads]
        })
        .collect();
    let headers = ["location", "hosts", "uploads (active / slots)"];
    let empty = "no agent announced itself lately";
    section(html, "Peers by location", empty, &headers, rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_draws_both_rates() {
        let samples =
            [(0, 0, 0), (10_000, 10_240, 20_480), (20_000, 20_480, 61_440)].map(|(at, up, served)| Sample {
                at_ms: at,
                upstream_bytes: up,
                served_bytes: served,
            });
        let svg = plot(&samples);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("peak 4.0 KiB/s"), "{svg}");
        assert!(plot(&samples[..1]).contains("collecting"));
    }
}
