//! Prometheus/OpenMetrics text pages, scraped from a daemon's `/metrics`.

use std::collections::HashMap;

use anyhow::Result;

use crate::net::loopback_client;

/// A scraped Prometheus/OpenMetrics text page.
#[derive(Debug, Clone, Default)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    /// The sum of every series of `name` whose labels contain all of `labels` (`key="value"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (series_name, series_labels) = series.split_once('{').unwrap_or((series.as_str(), ""));
                series_name == name && labels.iter().all(|l| series_labels.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    pub fn get(&self, name: &str) -> f64 {
        self.sum(name, &[])
    }

    /// Whether any series of `name` was exported.
    pub fn has(&self, name: &str) -> bool {
        self.0
            .keys()
            .any(|series| series.split_once('{').map_or(series.as_str(), |(n, _)| n) == name)
    }
}

/// The metric names starting with `prefix` that the Grafana dashboard in the chart queries, so
/// that tests can check each is exported by a daemon that has done some work.
pub fn dashboard_metrics(prefix: &str) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/helm/damselfly/dashboards/damselfly.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("");
            for (at, _) in expr.match_indices(prefix) {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

pub async fn scrape(url: &str) -> Result<Metrics> {
    scrape_with(&loopback_client()?, url).await
}

/// [`scrape`] with a given client (one trusting a test CA, for an https daemon).
pub async fn scrape_with(client: &reqwest::Client, url: &str) -> Result<Metrics> {
    let text = client.get(url).send().await?.error_for_status()?.text().await?;
    let mut series = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<f64>() {
                series.insert(name.to_string(), v);
            }
        }
    }
    Ok(Metrics(series))
}
