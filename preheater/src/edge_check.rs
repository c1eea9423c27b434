//! At start, every edge is asked whether it knows each configured registry by the name warm
//! requests will give it. A mismatch (the preheater says `registry.example.com`, the edge's
//! upstream is `http://10.0.0.5:5000`, so the edge knows it as `10.0.0.5:5000`) would otherwise
//! show only inside failed jobs, after every push: the preheater refuses to start instead.

use std::time::Duration;

use crate::config::Config;
use crate::edge::EdgeClient;

/// How often an edge that did not answer at start is asked again.
const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// `Err` names every registry an edge answered it does not know. Edges that cannot be reached
/// now (started later, restarting) are checked again in the background until they answer, and a
/// mismatch found then is logged as an error.
pub async fn registries_at_edges(config: &Config) -> Result<(), String> {
    if config.registries.is_empty() && !config.edges.is_empty() {
        tracing::warn!(
            "no [[registries]]: every registry notification is ignored; list each registry that \
             sends events (host as the events name it, url where the preheater reaches it)"
        );
    }
    let timeout = Duration::from_secs(config.warm.request_timeout_secs.min(10));
    let mut unknown = Vec::new();
    for edge in &config.edges {
        let client = EdgeClient::new(&edge.region, &edge.url, None, timeout, &config.tls)
            .map_err(|e| e.to_string())?;
        match unknown_at(&client, config).await {
            Ok(names) => unknown.extend(names.into_iter().map(|n| mismatch(&client, &n))),
            Err(e) => {
                tracing::warn!(region = %edge.region, error = %e,
                    "cannot ask the edge which registries it knows now; asking again until it answers");
                tokio::spawn(recheck(client, config.clone()));
            }
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unknown.join("; "))
    }
}

/// The edge names of configured registries this edge answered it has no upstream for.
async fn unknown_at(client: &EdgeClient, config: &Config) -> crate::error::Result<Vec<String>> {
    let mut unknown = Vec::new();
    for registry in &config.registries {
        let name = registry.edge_name();
        if !client.knows_registry(name).await? {
            unknown.push(match name {
                Some(n) => n.to_string(),
                None => format!("(the default upstream, for {})", registry.host),
            });
        }
    }
    Ok(unknown)
}

fn mismatch(client: &EdgeClient, name: &str) -> String {
    format!(
        "edge {region} ({url}) has no upstream named {name}, so warming images from it would fail; \
         add `[[upstreams]] registry = \"{name}\"` to that edge, or set `edge_registry` (the name \
         the edge knows it by) or `edge_default_upstream = true` on this registry here",
        region = client.region(),
        url = client.url_text(),
    )
}

async fn recheck(client: EdgeClient, config: Config) {
    loop {
        tokio::time::sleep(RECHECK_EVERY).await;
        match unknown_at(&client, &config).await {
            Ok(names) => {
                for name in names {
                    tracing::error!("{}", mismatch(&client, &name));
                }
                return;
            }
            Err(e) => tracing::debug!(region = client.region(), error = %e, "edge still unreachable"),
        }
    }
}
