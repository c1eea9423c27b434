//! The edge's status page (`GET /`): server-rendered HTML with inline CSS and SVG, no scripts
//! and no external assets (it works offline, behind any proxy), refreshing itself every 10 s.
//! The same report as JSON is `GET /api/v1/status`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use axum::Json;

use crate::state::AppState;
use crate::status::{self, Sample, StatusReport};

pub(crate) async fn json(State(state): State<Arc<AppState>>) -> Json<StatusReport> {
    Json(status::report(&state).await)
}

pub(crate) async fn page(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(render(&status::report(&state).await))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2733;background:#f6f8fa}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:24px 0 8px}.muted{color:#6a737d}\
.warn{background:#fff1f0;border:1px solid #f5a8a2;padding:6px 10px;margin:6px 0;border-radius:4px}\
table{border-collapse:collapse;background:#fff}td,th{padding:4px 10px;border:1px solid #dde2e7;text-align:left}\
th{background:#eef1f4}.num{text-align:right;font-variant-numeric:tabular-nums}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:10px 14px;min-width:150px}\
.card b{display:block;font-size:18px}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1.5 GiB`, `320 KiB`, `12 B`.
pub(crate) fn bytes(n: u64) -> String {
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

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or("–".into(), |r| format!("{:.0} %", r * 100.0))
}

fn render(report: &StatusReport) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>Damselfly edge · {region}</title>\
         <style>{STYLE}</style></head><body>\
         <h1>Damselfly edge · {region}</h1>\
         <div class=\"muted\">version {version} · up {uptime} s · refreshes every 10 s · \
         <a href=\"/api/v1/status\">JSON</a> · <a href=\"/metrics\">metrics</a></div>",
        region = escape(&report.region),
        version = escape(&report.version),
        uptime = report.uptime_secs,
    );
    for warning in &report.warnings {
        let _ = write!(html, "<div class=\"warn\">⚠ {}</div>", escape(warning));
    }
    render_cache(&mut html, report);
    render_traffic(&mut html, report);
    render_ingests(&mut html, report);
    render_racks(&mut html, report);
    html.push_str("</body></html>");
    html
}

fn render_cache(html: &mut String, report: &StatusReport) {
    let c = &report.cache;
    let _ = write!(
        html,
        "<h2>Cache</h2><div class=\"cards\">\
         <div class=\"card\">used<b id=\"cache-used\">{used}</b>of {quota}</div>\
         <div class=\"card\">blobs<b>{blobs}</b>{pinned} pinned</div>\
         <div class=\"card\">manifests · tags<b>{manifests} · {tags}</b>&nbsp;</div>\
         <div class=\"card\">hit ratio<b>{blob_hits}</b>manifests {manifest_hits}</div></div>",
        used = bytes(c.used_bytes),
        quota = bytes(c.quota_bytes),
        blobs = c.blobs,
        pinned = c.pinned_blobs,
        manifests = c.manifests,
        tags = c.tags,
        blob_hits = percent(report.hit_ratio.get("blob").copied().flatten()),
        manifest_hits = percent(report.hit_ratio.get("manifest").copied().flatten()),
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

/// A section: its title, then a table of `rows` under `headers`, or `empty` when there are none.
/// Cells are HTML already (escaped by the caller where they carry text from outside).
fn section(html: &mut String, title: &str, empty: &str, headers: &[&str], rows: Vec<Vec<String>>) {
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
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(50 * 1024 * 1024 * 1024), "50.0 GiB");
    }

    #[test]
    fn text_from_the_network_is_escaped() {
        assert_eq!(escape("<script>\"&"), "&lt;script&gt;&quot;&amp;");
    }

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
