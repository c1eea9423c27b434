//! The edge's status page (`GET /`): server-rendered HTML with inline CSS and SVG, no scripts
//! and no external assets (it works offline, behind any proxy), refreshing itself every 10 s.
//! The same report as JSON is `GET /api/v1/status`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use damselfly_server::page::{self, bytes, escape, section};

use crate::state::AppState;
use crate::status::{self, Sample, StatusReport};

/// The page names repositories and blobs: with an `admin_token`, only its holders see it (a
/// browser is asked for it as a password); without one, the edge is a lab and it is open.
fn allowed(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.admin_token.as_ref().is_none_or(|token| {
        damselfly_core::constant_time_eq(page::presented_secret(headers).as_bytes(), token.as_bytes())
    })
}

pub(crate) async fn json(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !allowed(&state, &headers) {
        return page::ask_for_secret("Damselfly edge", "admin token");
    }
    Json(status::report(&state).await).into_response()
}

pub(crate) async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !allowed(&state, &headers) {
        return page::ask_for_secret("Damselfly edge", "admin token");
    }
    Html(render(&status::report(&state).await)).into_response()
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
    render_preheats(&mut body, report);
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
    let h = &report.history;
    let of = |pick: fn(&Sample) -> u64| h.iter().map(pick).collect::<Vec<u64>>();
    html.push_str("<h2>Bytes per second, last hour</h2>");
    let edge = [
        Series {
            label: "from the origin",
            colour: RED,
            values: of(|s| s.upstream_bytes),
        },
        Series {
            label: "served",
            colour: BLUE,
            values: of(|s| s.served_bytes),
        },
    ];
    html.push_str(&plot("traffic-plot", h, &edge));
    let a = &report.agents_downloaded;
    let _ = write!(
        html,
        "<h2>What the agents fetched, by source</h2><div class=\"muted\">as they report it: peers \
         {}, this region's edges {}, the origin {} since they started</div>",
        bytes(a.peer),
        bytes(a.edge),
        bytes(a.origin)
    );
    let agents = [
        Series {
            label: "peers",
            colour: GREEN,
            values: of(|s| s.agents.peer),
        },
        Series {
            label: "edges",
            colour: BLUE,
            values: of(|s| s.agents.edge),
        },
        Series {
            label: "origin",
            colour: RED,
            values: of(|s| s.agents.origin),
        },
    ];
    html.push_str(&plot("sources-plot", h, &agents));
}

/// A series to plot: its legend, its colour, and a counter's value at each sample.
struct Series {
    label: &'static str,
    colour: &'static str,
    values: Vec<u64>,
}

/// The counters' rates between consecutive samples, one step line per series: each interval is
/// drawn flat at its mean, so even the first one shows.
fn plot(id: &str, history: &[Sample], series: &[Series]) -> String {
    let (width, height) = (600.0, 140.0);
    if history.len() < 2 {
        return "<div class=\"muted\">collecting samples…</div>".into();
    }
    let times: Vec<f64> = history.iter().map(|s| s.at_ms as f64).collect();
    let rates = |values: &[u64]| -> Vec<f64> {
        values
            .windows(2)
            .zip(times.windows(2))
            .map(|(v, t)| v[1].saturating_sub(v[0]) as f64 / ((t[1] - t[0]) / 1000.0).max(0.001))
            .collect()
    };
    let all: Vec<Vec<f64>> = series.iter().map(|s| rates(&s.values)).collect();
    let top = all.iter().flatten().copied().fold(1.0_f64, f64::max);
    let (first, span) = (times[0], (times[times.len() - 1] - times[0]).max(1.0));
    let mut svg = format!(
        "<svg id=\"{id}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"bytes per second\" \
         style=\"background:#fff;border:1px solid #dde2e7\">"
    );
    let mut legend = String::from("<div class=\"muted\">");
    for (s, rates) in series.iter().zip(&all) {
        let points: Vec<String> = rates
            .iter()
            .zip(times.windows(2))
            .flat_map(|(rate, t)| {
                let y = height - rate / top * (height - 10.0);
                [t[0], t[1]].map(|at| format!("{:.1},{y:.1}", (at - first) / span * width))
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            s.colour,
            points.join(" ")
        );
        let _ = write!(legend, "<span style=\"color:{}\">■</span> {} ", s.colour, s.label);
    }
    let _ = write!(
        svg,
        "<text x=\"6\" y=\"{}\" font-size=\"11\" fill=\"#6a737d\">peak {}/s</text></svg>{legend}</div>",
        height - 6.0,
        bytes(top as u64)
    );
    svg
}

const RED: &str = "#cf222e";
const BLUE: &str = "#2f81f7";
const GREEN: &str = "#1a7f37";

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

fn render_preheats(html: &mut String, report: &StatusReport) {
    let now = report.history.last().map_or(0, |s| s.at_ms);
    let rows = report
        .preheats
        .iter()
        .map(|p| {
            let ago = now.saturating_sub(p.last_at_ms) / 1000;
            vec![
                escape(&p.repository),
                p.blobs.to_string(),
                p.manifests.to_string(),
                format!("{ago} s ago"),
            ]
        })
        .collect();
    let headers = ["repository", "blobs warmed", "manifests warmed", "last warm"];
    section(html, "Recent preheats", "none since start", &headers, rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_draws_each_rate() {
        let samples: Vec<Sample> = [0, 10_000, 20_000]
            .iter()
            .map(|&at| Sample {
                at_ms: at,
                upstream_bytes: 0,
                served_bytes: 0,
                agents: Default::default(),
            })
            .collect();
        let series = |values: Vec<u64>| Series {
            label: "x",
            colour: RED,
            values,
        };
        let svg = plot(
            "p",
            &samples,
            &[series(vec![0, 10_240, 20_480]), series(vec![0, 20_480, 61_440])],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("peak 4.0 KiB/s"), "{svg}");
        assert!(plot("p", &samples[..1], &[]).contains("collecting"));
    }
}
