//! Loopback networking helpers.
//!
//! Tests run in parallel and on shared CI hosts, so nothing here uses a fixed port: the kernel
//! picks a free one when binding port 0. The tiny window between releasing that socket and the
//! daemon binding it is accepted; daemons started by this crate retry on a fresh port when they
//! lose that race.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result};
use http::StatusCode;

use crate::poll::{poll_until, Probe};

/// Returns a currently free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(free_addr_on("127.0.0.1")?.port())
}

/// Returns a currently free `ip:port` on the given local address.
///
/// On Linux the whole 127.0.0.0/8 block is routed to loopback without configuration, so
/// addresses such as 127.0.0.2 give tests distinct "hosts" (for example two registries that must
/// not share a `host:port` key) without touching the network setup.
pub fn free_addr_on(ip: &str) -> Result<SocketAddr> {
    let ip: IpAddr = ip.parse().with_context(|| format!("invalid IP address {ip:?}"))?;
    let listener = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    listener.local_addr().context("reading bound address")
}

/// `N` distinct free `ip:port`s on the given local address: each socket is held until all are
/// chosen, so the kernel cannot hand out one port twice.
pub fn free_addrs_on<const N: usize>(ip: &str) -> Result<[String; N]> {
    let ip: IpAddr = ip.parse().with_context(|| format!("invalid IP address {ip:?}"))?;
    let listeners = (0..N)
        .map(|_| TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0")))
        .collect::<Result<Vec<_>>>()?;
    let addrs = listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("reading bound address")?.to_string()))
        .collect::<Result<Vec<_>>>()?;
    Ok(addrs.try_into().expect("N listeners, N addresses"))
}

/// An HTTP client suited to talking to loopback test servers.
///
/// Environment proxies are ignored (a CI proxy must never see loopback traffic), redirects are
/// not followed (tests want to observe them) and no compression is negotiated (byte counts must
/// match what is on the wire).
pub fn loopback_client() -> Result<reqwest::Client> {
    verbatim_client_builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("building HTTP client")
}

/// [`loopback_client`], trusting the CA certificates in `ca` (a test's cluster CA).
pub fn client_trusting(ca: &std::path::Path) -> Result<reqwest::Client> {
    let config = damselfly_server::tls::TlsConfig {
        ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    };
    damselfly_server::tls::client_builder(&config, false)
        .map_err(|e| anyhow::anyhow!(e))?
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("building HTTP client")
}

/// The settings of [`loopback_client`], for clients that add their own (the fault proxy's).
pub(crate) fn verbatim_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd()
}

/// Polls `url` every 20 ms until it answers with a status below 500.
///
/// Any such answer proves the server parses HTTP; callers that need a specific status (say, 401
/// from an authenticating registry) use [`wait_http_ready_with`].
pub async fn wait_http_ready(url: &str, timeout: Duration) -> Result<()> {
    wait_http_ready_with(url, timeout, |status| status.as_u16() < 500).await
}

/// Polls `url` until `accept(status)` holds for a response. Connection errors and rejected
/// statuses are retried; the last one is quoted if `timeout` elapses.
pub async fn wait_http_ready_with(
    url: &str,
    timeout: Duration,
    accept: impl Fn(StatusCode) -> bool,
) -> Result<()> {
    let client = loopback_client()?;
    poll_until(url, timeout, || {
        let request = client.get(url).timeout(Duration::from_secs(1)).send();
        let accept = &accept;
        async move {
            Ok(match request.await {
                Ok(response) if accept(response.status()) => Probe::Ready(()),
                Ok(response) => Probe::NotYet(format!("status {}", response.status())),
                Err(err) => Probe::NotYet(format!("{err}")),
            })
        }
    })
    .await
}

/// Raises this process's open-files limit to `wanted` when it is lower (up to the hard limit),
/// for tests and benchmarks that hold thousands of connections.
pub fn raise_open_files(wanted: usize) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| (c as usize) < wanted) {
        limit.current = limit.maximum.map(|m| m.min(wanted as u64 * 2));
        setrlimit(Resource::Nofile, limit)
            .map_err(|e| anyhow::anyhow!("raising the open-files limit: {e}"))?;
    }
    Ok(())
}

/// Accepts connections on `listener` for ever, each served by the future `handle` makes of it,
/// on a task of a set this loop owns: aborting the task running the loop tears down the open
/// (keep-alive) connections too, instead of leaving them serving after their server is gone.
/// `server` names it in the log.
pub async fn serve_connections<F, Fut>(listener: tokio::net::TcpListener, server: &str, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(handle(stream));
                }
                Err(err) => {
                    // Typically EMFILE under load; back off briefly rather than spin.
                    tracing::warn!("{server} accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Sends `request` and reads the answer as text, whatever its status; panics (naming the URL)
/// if it cannot. For tests.
pub async fn text(request: reqwest::RequestBuilder) -> String {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let url = response.url().clone();
    response.text().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// [`text`], read as JSON.
pub async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    let body = text(request).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Sends `request`, which carries no credentials, to a page behind a password and asserts
/// that it is refused the way a browser then asks for one: 401 with a `Basic` challenge. For
/// tests.
pub async fn assert_asks_for_password(request: reqwest::RequestBuilder) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    assert_eq!(response.status(), 401, "{}", response.url());
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic "),
        "{}",
        response.url()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() -> Result<()> {
        let port = free_port()?;
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port))?;
        let alias = free_addr_on("127.0.0.2")?;
        assert_eq!(alias.ip().to_string(), "127.0.0.2");
        TcpListener::bind(alias)?;
        assert!(free_addr_on("not-an-ip").is_err());
        Ok(())
    }

    #[test]
    fn free_addresses_chosen_together_are_distinct_and_bindable() -> Result<()> {
        for _ in 0..50 {
            let addrs: [String; 3] = free_addrs_on("127.0.0.3")?;
            assert!(addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2]);
            let _held: Vec<TcpListener> = addrs
                .iter()
                .map(TcpListener::bind)
                .collect::<std::io::Result<_>>()?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn wait_times_out_on_closed_port() -> Result<()> {
        let url = format!("http://127.0.0.1:{}/", free_port()?);
        let err = wait_http_ready(&url, Duration::from_millis(100))
            .await
            .expect_err("nothing listens");
        assert!(err.to_string().contains("timed out"), "{err}");
        Ok(())
    }
}
