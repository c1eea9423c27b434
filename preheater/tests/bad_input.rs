//! Bad input gets a clear, documented answer and loses nothing; nothing panics. The preheater
//! runs in-process here (`serve` on a listener bound to port 0).

mod common;

use std::time::Duration;

use common::*;
use damselfly_preheater::config::{Config, EdgeConfig, JobsConfig, RegistryConfig, WarmConfig};
use damselfly_preheater::AppState;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::registry::Registry;
use serde_json::json;

struct InProcess {
    url: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(registry: &Registry, edge_url: &str) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        // In process, no listener: the transport does not matter here.
        insecure: true,
        webhook_token: Some(WEBHOOK_TOKEN.into()),
        harbor_auth: Some(HARBOR_AUTH.into()),
        edge_token: Some(EDGE_TOKEN.into()),
        edges: vec![EdgeConfig {
            region: "eu".into(),
            url: edge_url.into(),
        }],
        registries: vec![RegistryConfig {
            host: registry.addr(),
            url: registry.url(),
            username: None,
            password: None,
            password_file: None,
            insecure_skip_verify: false,
            edge_registry: None,
            edge_default_upstream: true,
            forward_credentials: false,
        }],
        warm: WarmConfig {
            backoff_initial_ms: 50,
            backoff_max_ms: 100,
            ..WarmConfig::default()
        },
        jobs: JobsConfig {
            resolve_attempts: 2,
            ..JobsConfig::default()
        },
        ..Config::default()
    };
    let state = AppState::new(config).await.expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(damselfly_preheater::serve(listener, state, async {
        let _ = rx.await;
    }));
    InProcess {
        url,
        _shutdown: tx,
        _dir: dir,
    }
}

/// Sends a `len`-byte body by hand (the server may answer and close before it is all sent, which
/// a regular client reports as a write error) and returns the start of the answer.
async fn raw_post_status(authority: &str, path: &str, auth: &str, len: usize, chunked: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {len}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {DISTRIBUTION_EVENTS}\r\nAuthorization: {auth}\r\n{framing}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let block = vec![b' '; 64 * 1024];
        for _ in 0..len / block.len() {
            if chunked {
                write
                    .write_all(format!("{:x}\r\n", block.len()).as_bytes())
                    .await?;
                write.write_all(&block).await?;
                write.write_all(b"\r\n").await?;
            } else {
                write.write_all(&block).await?;
            }
        }
        if chunked {
            write.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
        let n = tokio::time::timeout_at(deadline, read.read(&mut buf))
            .await
            .expect("answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_a_clear_answer() {
    init_logging();
    let (registry, image) = registry_with(ImageSpec::new("preheat-bad", vec![MIB / 2]), "demo/app:v1").await;
    let edge = start_edge(&registry.url()).await;
    let p = start(&registry, &edge.url()).await;
    let hook = format!("{}/webhooks/distribution", p.url);
    let harbor = format!("{}/webhooks/harbor", p.url);
    let auth = format!("Bearer {WEBHOOK_TOKEN}");
    let event = tagged_push_envelope(
        "e-1",
        &registry.addr(),
        "demo/app",
        "v1",
        &image.top_digest,
        &image.top_media_type,
    );

    // Authorization: missing, wrong, or for the other webhook.
    for a in [None, Some("Bearer nope"), Some(HARBOR_AUTH)] {
        assert_eq!(
            post(&hook, DISTRIBUTION_EVENTS, a, event.clone()).await.0,
            401,
            "{a:?}"
        );
    }
    // Content types: wrong → 415; v1, v2 (distribution 3.x) and plain JSON are accepted.
    let (status, body) = post(&hook, "text/plain", Some(&auth), event.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE"))
    );
    assert_eq!(
        post(&harbor, DISTRIBUTION_EVENTS, Some(HARBOR_AUTH), "{}")
            .await
            .0,
        415
    );
    // Truncated JSON, an envelope without events, an event without id → 400.
    for bad in [
        &event[..event.len() / 2],
        br#"{"evts":[]}"#,
        br#"{"events":[{"action":"push","target":{}}]}"#,
    ] {
        let (status, body) = post(&hook, DISTRIBUTION_EVENTS, Some(&auth), bad.to_vec()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("BAD_REQUEST")),
            "{body}"
        );
    }
    assert_eq!(
        post(&harbor, "application/json", Some(HARBOR_AUTH), "{\"type\":")
            .await
            .0,
        400
    );
    // 10 MiB, announced or streamed → 413, answered without waiting for the whole body.
    let authority = hook
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for chunked in [false, true] {
        let head = raw_post_status(
            &authority,
            "/webhooks/distribution",
            &auth,
            10 * 1024 * 1024,
            chunked,
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 413"), "chunked={chunked}: {head}");
        assert!(head.contains("PAYLOAD_TOO_LARGE"), "{head}");
    }
    // Well-formed events that need no work: 202, counted as ignored (4xx would be retried forever).
    let unknown_action =
        br#"{"events":[{"id":"u-1","action":"replicate","target":{"repository":"demo/app"}}]}"#;
    let (status, body) = post(
        &hook,
        "application/vnd.docker.distribution.events.v2+json",
        Some(&auth),
        unknown_action.to_vec(),
    )
    .await;
    assert_eq!((status, body["ignored"].as_u64()), (202, Some(1)));
    let elsewhere = tagged_push_envelope(
        "e-2",
        "unknown.example:5000",
        "demo/app",
        "v1",
        &image.top_digest,
        &image.top_media_type,
    );
    let (status, body) = post(&hook, "application/json", Some(&auth), elsewhere).await;
    assert_eq!(
        (status, body["ignored"].as_u64()),
        (202, Some(1)),
        "unconfigured registries are ignored"
    );
    let quota = br#"{"type":"QUOTA_EXCEED","occur_at":1,"operator":"admin","event_data":{}}"#;
    let (status, body) = post(&harbor, "application/json", Some(HARBOR_AUTH), quota.to_vec()).await;
    assert_eq!((status, body["ignored"].as_u64()), (202, Some(1)));

    // Job API.
    let jobs = format!("{}/api/v1/jobs", p.url);
    for bad in [
        json!({"image": "nginx"}),
        json!({"image": format!("{}/demo/app:v1", registry.addr()), "regions": ["mars"]}),
        json!({"image": "unknown.example:5000/demo/app:v1"}),
        json!({"image": format!("{}/demo/app:v1", registry.addr()), "platforms": ["linux"]}),
        json!({"image": format!("{}/demo/app:v1", registry.addr()), "colour": "blue"}),
    ] {
        let (status, body) = post(&jobs, "application/json", None, bad.to_string()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let missing = loopback_client()
        .unwrap()
        .get(format!("{jobs}/0123abcd"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // An unresolvable manifest fails its job with a clear error; a good job next to it succeeds.
    let (status, nope) = post(
        &jobs,
        "application/json",
        None,
        json!({"image": format!("{}/demo/app:nope", registry.addr())}).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    let (_, accepted) = post(&hook, DISTRIBUTION_EVENTS, Some(&auth), event).await;
    let within = Duration::from_secs(30);
    let nope = wait_job_at(&p.url, nope["id"].as_str().unwrap(), within)
        .await
        .unwrap();
    assert_eq!(nope["state"], "failed");
    let error = nope["error"].as_str().unwrap();
    assert!(
        error.contains("404") && error.contains("demo/app:nope"),
        "{error}"
    );
    let good = wait_job_at(&p.url, accepted["jobs"][0].as_str().unwrap(), within)
        .await
        .unwrap();
    assert_eq!(good["state"], "succeeded", "{good:#?}");

    let health = loopback_client()
        .unwrap()
        .get(format!("{}/healthz", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
