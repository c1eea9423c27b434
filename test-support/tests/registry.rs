//! Registry lifecycle and configuration options against the real Distribution binary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use damselfly_test_support::image::{build_image, ImageSpec};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::poll::{poll_until, Probe};
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions, PushOptions};

fn creds() -> (String, String) {
    ("alice".to_owned(), "wonderland".to_owned())
}

#[tokio::test]
async fn htpasswd_registry_requires_credentials() -> Result<()> {
    let registry = Registry::start(RegistryOptions {
        htpasswd: Some(creds()),
        ..RegistryOptions::default()
    })
    .await?;
    let client = loopback_client()?;
    let anonymous = client.get(format!("{}/v2/", registry.url())).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers()[header::WWW_AUTHENTICATE]
        .to_str()?
        .contains("damselfly-test"));
    let (user, password) = creds();
    let authed = client
        .get(format!("{}/v2/", registry.url()))
        .basic_auth(&user, Some(&password))
        .send()
        .await?;
    assert_eq!(authed.status(), StatusCode::OK);

    let dir = tempfile::tempdir()?;
    let image = build_image(&ImageSpec::new("auth", vec![4096]), &dir.path().join("oci"), "v1")?;
    let dest = format!("{}/private/img:v1", registry.addr());
    let denied = skopeo::push(&image, &dest, &PushOptions::default()).await;
    ensure!(denied.is_err(), "anonymous push must be rejected");
    let with_creds = PushOptions {
        creds: Some(creds()),
        ..PushOptions::default()
    };
    assert_eq!(skopeo::push(&image, &dest, &with_creds).await?, image.top_digest);

    let pull = PullOptions {
        all: false,
        creds: Some(creds()),
    };
    let pulled = skopeo::pull_direct(&registry.addr(), &dest, &dir.path().join("pulled"), &pull).await?;
    assert_eq!(pulled.manifest_digest, image.top_digest);
    Ok(())
}

#[tokio::test]
async fn stop_and_start_again_keep_address_and_content() -> Result<()> {
    let mut registry = Registry::start(RegistryOptions::default()).await?;
    let addr = registry.addr();
    let image = registry
        .push_image(ImageSpec::new("restart", vec![2048]), "restart/img:v1")
        .await?;
    let reference = format!("{addr}/restart/img:v1");

    registry.stop()?;
    assert!(!registry.is_running());
    let client = loopback_client()?;
    ensure!(
        client
            .get(format!("{}/v2/", registry.url()))
            .send()
            .await
            .is_err(),
        "origin should be down"
    );

    registry.start_again().await?;
    assert_eq!(registry.addr(), addr);
    let raw = skopeo::inspect_raw(&format!("docker://{reference}")).await?;
    assert_eq!(damselfly_test_support::image::digest_of(&raw), image.top_digest);
    Ok(())
}

#[tokio::test]
async fn shared_data_dir_and_loopback_alias() -> Result<()> {
    let storage = tempfile::tempdir()?;
    let first = Registry::start(RegistryOptions {
        data_dir: Some(storage.path().to_owned()),
        ..RegistryOptions::default()
    })
    .await?;
    let image = first
        .push_image(ImageSpec::new("shared", vec![1024]), "shared/img:v1")
        .await?;

    let second = Registry::start(RegistryOptions {
        bind_ip: "127.0.0.2".to_owned(),
        data_dir: Some(storage.path().to_owned()),
        ..RegistryOptions::default()
    })
    .await?;
    assert!(second.addr().starts_with("127.0.0.2:"));
    let raw = skopeo::inspect_raw(&format!("docker://{}/shared/img:v1", second.addr())).await?;
    assert_eq!(damselfly_test_support::image::digest_of(&raw), image.top_digest);
    Ok(())
}

#[tokio::test]
async fn push_notifications_arrive_with_authorization() -> Result<()> {
    type Seen = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let app = Router::new().route(
        "/events",
        post(move |headers: HeaderMap, body: axum::body::Bytes| async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let envelope = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((auth, envelope));
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let registry = Registry::start(RegistryOptions {
        notifications: Some((url, Some("Bearer test-token".to_owned()))),
        ..RegistryOptions::default()
    })
    .await?;
    let image = registry
        .push_image(ImageSpec::new("notify", vec![1024]), "notify/img:v1")
        .await?;

    let top = image.top_digest.clone();
    poll_until("manifest push notification", Duration::from_secs(20), || {
        let events = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let top = top.clone();
        async move {
            let hit = events.iter().any(|(auth, envelope)| {
                auth.as_deref() == Some("Bearer test-token")
                    && envelope["events"].as_array().is_some_and(|events| {
                        events
                            .iter()
                            .any(|e| e["action"] == "push" && e["target"]["digest"] == top.as_str())
                    })
            });
            Ok(if hit {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{} deliveries", events.len()))
            })
        }
    })
    .await?;
    server.abort();
    Ok(())
}
