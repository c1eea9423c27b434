//! A private repository: other agents hold its pieces, yet a caller without credentials gets
//! 401 through any agent, and pieces need a valid ticket for that very task.

mod common;

use base64::Engine;
use common::{Region, MIB};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::registry::RegistryOptions;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_checked_through_every_agent() {
    let creds = ("bob".to_string(), "builder".to_string());
    let options = RegistryOptions {
        htpasswd: Some(creds.clone()),
        ..RegistryOptions::default()
    };
    let region = Region::start(options, &["eu/z1/r1", "eu/z1/r1", "eu/z1/r2"]).await;
    let image = region
        .push(ImageSpec::new("private", vec![3 * MIB]), "secret/app:v1")
        .await;
    // Agent 0 pulls with credentials: its pieces are now on its disk and announced.
    let digest = region
        .pull_via(0, "secret/app:v1", Some(creds.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", region.logs()));
    assert_eq!(digest, image.top_digest);
    let layer = image.largest_blob();
    let config = image.blobs.iter().min_by_key(|b| b.size).unwrap();
    let client = loopback_client().unwrap();

    // No credentials: 401 with the registry's challenge, through any agent.
    for agent in &region.agents {
        for path in [
            format!("/v2/secret/app/blobs/{}", layer.digest),
            "/v2/secret/app/manifests/v1".to_string(),
        ] {
            let r = client.get(format!("{}{path}", agent.url())).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} via {}", agent.url());
            assert!(r.headers().contains_key("www-authenticate"));
            assert!(r.bytes().await.unwrap().len() < 1024);
        }
    }
    // A skopeo pull without credentials fails too.
    assert!(region.pull_via(1, "secret/app:v1", None).await.is_err());

    // Pieces on agent 0's upload port: no ticket, a forged one, one for another task: refused.
    let piece_url = format!("{}/pieces/{}/0", region.agents[0].upload_url(), layer.digest);
    let piece_with = |ticket: Option<String>| {
        let mut request = client.get(&piece_url);
        if let Some(ticket) = ticket {
            request = request.header("x-damselfly-ticket", ticket);
        }
        async move { request.send().await.unwrap().status() }
    };
    // The edge issues a ticket for a task to whoever may read the blob.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:builder")
    );
    let ticket_for = |digest: &str| {
        let request = client
            .get(format!(
                "{}/api/v1/tasks/{digest}?repo=secret/app",
                region.edge.url()
            ))
            .header("authorization", &basic)
            .send();
        async move {
            let task: serde_json::Value = request.await.unwrap().json().await.unwrap();
            task["ticket"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(piece_with(None).await, StatusCode::UNAUTHORIZED);
    let forged = format!("v1.{}.9999999999.AAAA", &layer.digest["sha256:".len()..]);
    assert_eq!(piece_with(Some(forged)).await, StatusCode::UNAUTHORIZED);
    let other_ticket = ticket_for(&config.digest).await;
    assert_eq!(
        piece_with(Some(other_ticket)).await,
        StatusCode::UNAUTHORIZED,
        "a ticket opens only its own task"
    );
    // The right ticket works: the control that shows the refusals above mean something.
    let ticket = ticket_for(&layer.digest).await;
    assert_eq!(piece_with(Some(ticket)).await, StatusCode::OK);
}
