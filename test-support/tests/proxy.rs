//! FaultProxy behaviour against a small in-process upstream, plus one real-registry check.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::Router;
use damselfly_test_support::image::{build_image, ImageSpec};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions, PushOptions};
use tokio::task::JoinHandle;

const BLOB_LEN: usize = 1 << 20;

fn blob_content() -> Vec<u8> {
    (0..BLOB_LEN).map(|i| (i * 7 % 253) as u8).collect()
}

/// Minimal upstream: echoes request headers, serves a 1 MiB "blob", counts uploaded bytes and
/// challenges for auth, i.e. the registry behaviours the proxy must pass through.
async fn start_upstream() -> Result<(String, JoinHandle<()>)> {
    let app =
        Router::new()
            .route(
                "/echo",
                get(|headers: HeaderMap| async move {
                    let values = |name| -> Vec<String> {
                        headers
                            .get_all(name)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?").to_owned())
                            .collect()
                    };
                    axum::Json(serde_json::json!({
                        "accept": values(header::ACCEPT),
                        "authorization": values(header::AUTHORIZATION),
                        "host": values(header::HOST),
                    }))
                }),
            )
            .route(
                "/v2/repo/blobs/{digest}",
                get(|Path(digest): Path<String>| async move {
                    ([("docker-content-digest", digest)], blob_content())
                }),
            )
            .route(
                "/v2/repo/blobs/uploads/x",
                put(|body: Bytes| async move { (StatusCode::CREATED, body.len().to_string()) }),
            )
            .route(
                "/v2/",
                get(|| async {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(
                            header::WWW_AUTHENTICATE,
                            HeaderValue::from_static("Basic realm=\"test\""),
                        )],
                    )
                        .into_response()
                }),
            );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// The minimal upstream with a proxy in front, and a client to call the proxy.
struct Proxied {
    proxy: FaultProxy,
    client: reqwest::Client,
    _upstream: JoinHandle<()>,
}

impl Proxied {
    async fn start() -> Result<Proxied> {
        let (upstream, task) = start_upstream().await?;
        Ok(Proxied {
            proxy: FaultProxy::start(&upstream).await?,
            client: loopback_client()?,
            _upstream: task,
        })
    }

    /// The upstream's 1 MiB blob, through the proxy.
    fn blob_url(&self) -> String {
        format!("{}/v2/repo/blobs/sha256:abc", self.proxy.url())
    }
}

#[tokio::test]
async fn forwards_repeated_headers_and_challenges() -> Result<()> {
    let proxied = Proxied::start().await?;
    let (proxy, client) = (&proxied.proxy, &proxied.client);

    let mut headers = HeaderMap::new();
    headers.append(
        header::ACCEPT,
        HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
    );
    headers.append(
        header::ACCEPT,
        HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
    );
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dTpw"));
    let echoed: serde_json::Value = client
        .get(format!("{}/echo", proxy.url()))
        .headers(headers)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        echoed["accept"],
        serde_json::json!([
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json"
        ])
    );
    assert_eq!(echoed["authorization"], serde_json::json!(["Basic dTpw"]));
    assert_eq!(
        echoed["host"],
        serde_json::json!([proxy.addr()]),
        "Host is forwarded unchanged"
    );

    let challenge = client.get(format!("{}/v2/", proxy.url())).send().await?;
    assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.headers()[header::WWW_AUTHENTICATE],
        "Basic realm=\"test\""
    );

    let uploaded = client
        .put(format!("{}/v2/repo/blobs/uploads/x?digest=sha256:1", proxy.url()))
        .body(vec![1u8; 300_000])
        .send()
        .await?;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    assert_eq!(
        uploaded.text().await?,
        "300000",
        "request bodies are forwarded whole"
    );
    assert_eq!(proxy.blob_gets(), 0, "uploads are not blob GETs");
    Ok(())
}

#[tokio::test]
async fn counts_blob_bytes_and_logs_requests() -> Result<()> {
    let proxied = Proxied::start().await?;
    let (proxy, client, url) = (&proxied.proxy, &proxied.client, proxied.blob_url());

    let head = client.head(&url).send().await?;
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH],
        BLOB_LEN.to_string().as_str()
    );
    assert_eq!(head.headers()["docker-content-digest"], "sha256:abc");
    let body = client
        .get(format!("{url}?ns=example"))
        .send()
        .await?
        .bytes()
        .await?;
    assert_eq!(body.as_ref(), blob_content().as_slice());

    assert_eq!(proxy.blob_gets(), 1);
    assert_eq!(proxy.blob_bytes(), BLOB_LEN as u64);
    let log = proxy.requests();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].method.as_str(), log[0].bytes), ("HEAD", 0));
    assert_eq!((log[1].method.as_str(), log[1].status), ("GET", 200));
    assert_eq!(log[1].query.as_deref(), Some("ns=example"));
    assert!(log[1].completed && log[1].bytes == BLOB_LEN as u64);

    proxy.reset_counters();
    assert_eq!(
        (proxy.blob_gets(), proxy.blob_bytes(), proxy.requests().len()),
        (0, 0, 0)
    );
    Ok(())
}

#[tokio::test]
async fn cut_corrupt_and_fail_are_one_shot() -> Result<()> {
    let proxied = Proxied::start().await?;
    let (proxy, client, url) = (&proxied.proxy, &proxied.client, proxied.blob_url());
    let expected = blob_content();

    proxy.cut_blob_after(100_000);
    let response = client.get(&url).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = 0usize;
    let mut stream = response.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(chunk) => received += chunk.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "a cut body must end in an error, not a clean EOF");
    assert_eq!(received, 100_000);
    assert_eq!(proxy.blob_bytes(), 100_000);
    assert!(!proxy.requests()[0].completed);

    proxy.corrupt_blob_at(123_456);
    let corrupted = client.get(&url).send().await?.bytes().await?;
    assert_eq!(corrupted.len(), expected.len());
    let diffs: Vec<usize> = (0..expected.len())
        .filter(|&i| corrupted[i] != expected[i])
        .collect();
    assert_eq!(diffs, vec![123_456]);
    assert_eq!(corrupted[123_456], expected[123_456] ^ 0xff);

    proxy.fail_blobs(2, StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..2 {
        let failed = client.get(&url).send().await?;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(failed.bytes().await?.is_empty());
    }
    let healthy = client.get(&url).send().await?.bytes().await?;
    assert_eq!(
        healthy.as_ref(),
        expected.as_slice(),
        "faults must not outlive their shot"
    );
    assert_eq!(proxy.blob_gets(), 5);
    Ok(())
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_port() -> Result<()> {
    let Proxied {
        proxy,
        client,
        _upstream,
    } = Proxied::start().await?;
    let url = format!("{}/echo", proxy.url());
    client.get(&url).send().await?.error_for_status()?;
    drop(proxy);
    // Abort is asynchronous; give the runtime a moment to tear the listener down.
    let gone = damselfly_test_support::poll::poll_until("proxy shutdown", Duration::from_secs(5), || async {
        Ok(match loopback_client()?.get(&url).send().await {
            Err(_) => damselfly_test_support::poll::Probe::Ready(()),
            Ok(r) => damselfly_test_support::poll::Probe::NotYet(format!("still answering {}", r.status())),
        })
    })
    .await;
    gone.context("proxy kept serving after drop")
}

#[tokio::test]
async fn real_registry_through_the_proxy() -> Result<()> {
    let registry = Registry::start(RegistryOptions::default()).await?;
    let proxy = FaultProxy::start(&registry.addr()).await?;
    let work = tempfile::tempdir()?;
    let image = build_image(
        &ImageSpec::new("proxy-real", vec![200_000, 300_000]),
        &work.path().join("oci"),
        "v1",
    )?;

    // Push through the proxy: upload Location headers must lead back through it.
    let pushed = skopeo::push(
        &image,
        &format!("{}/proxied/img:v1", proxy.addr()),
        &PushOptions::default(),
    )
    .await?;
    assert_eq!(pushed, image.top_digest);
    ensure!(
        proxy
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" || r.method == "PUT"),
        "push went elsewhere"
    );

    proxy.reset_counters();
    let image_ref = format!("{}/proxied/img:v1", proxy.addr());
    let pulled = skopeo::pull_direct(
        &proxy.addr(),
        &image_ref,
        &work.path().join("pull"),
        &PullOptions::default(),
    )
    .await?;
    assert_eq!(pulled.manifest_digest, image.top_digest);
    assert_eq!(
        proxy.blob_bytes(),
        image.total_blob_bytes,
        "each layer and the config fetched once"
    );
    assert_eq!(proxy.blob_gets(), image.blobs.len() as u64);

    proxy.corrupt_blob_at(1000);
    let err = skopeo::pull_direct(
        &proxy.addr(),
        &image_ref,
        &work.path().join("bad"),
        &PullOptions::default(),
    )
    .await
    .expect_err("a corrupted blob must fail digest verification");
    assert!(
        format!("{err:#}").to_lowercase().contains("digest did not match"),
        "{err:#}"
    );
    Ok(())
}
