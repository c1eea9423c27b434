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
