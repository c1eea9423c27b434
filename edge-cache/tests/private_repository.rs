//! A private repository (registry with htpasswd): without credentials the edge refuses
//! manifests, blobs, piece tables and pieces; with them pulls work, tickets open pieces, and
//! the sealed pieces match the piece table and are standard AES-256-GCM.

mod common;

use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use common::{edge_binary, layers, sha256, MIB};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions};
use reqwest::StatusCode;

const USER: &str = "alice";
const PASSWORD: &str = "wonderland";

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_content_needs_credentials_at_every_endpoint() {
    let registry = Registry::start(RegistryOptions {
        htpasswd: Some((USER.into(), PASSWORD.into())),
        ..RegistryOptions::default()
    })
    .await
    .unwrap();
    let image = registry
        .push_image(layers(&[3 * MIB], "private"), "secret/app:v1")
        .await
        .unwrap();
    let creds = Some((USER.to_string(), PASSWORD.to_string()));
    let edge = Edge::start(edge_binary(), EdgeOptions::new(registry.url()))
        .await
        .unwrap();
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let e = edge.url();

    // A credentialed pull first, so the edge holds every piece the anonymous calls ask for.
    let out = tempfile::tempdir().unwrap();
    let reference = format!("{}/secret/app:v1", registry.addr());
    let pulled = skopeo::pull_via_mirror(
        &registry.addr(),
        &edge.addr(),
        &reference,
        &out.path().join("img"),
        &PullOptions {
            creds: creds.clone(),
            ..PullOptions::default()
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err:#}\n{}", edge.log_tail()));
    assert_eq!(pulled.manifest_digest, image.top_digest);
    edge.assert_counted(
        "damselfly_edge_served_bytes_total",
        &["kind=\"blob\""],
        "the pull did not go through the edge",
    )
    .await;

    // Anonymous: refused everywhere, with the upstream's challenge where a client can answer it.
    let anonymous = [
        format!("{e}/v2/secret/app/manifests/v1"),
        format!("{e}/v2/secret/app/manifests/{}", image.top_digest),
        format!("{e}/v2/secret/app/blobs/{}", layer.digest),
        format!("{e}/api/v1/tasks/{}?repo=secret/app", layer.digest),
        format!("{e}/pieces/{}/0?repo=secret/app", layer.digest),
        format!("{e}/pieces/{}/0", layer.digest),
    ];
    for url in &anonymous {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let r = client.request(method.clone(), url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {url}");
            assert!(r.headers().contains_key("www-authenticate"), "{method} {url}");
            if method == reqwest::Method::GET {
                let body = r.bytes().await.unwrap();
                assert!(body.len() < 1024, "{url} leaked {} bytes", body.len());
            }
        }
    }
    // Wrong password: refused too.
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:nope")
    );
    let r = client
        .get(&anonymous[2])
        .header("authorization", wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // With credentials: the piece table, key and ticket.
    let task: serde_json::Value = client
        .get(format!("{e}/api/v1/tasks/{}?repo=secret/app", layer.digest))
        .header("authorization", basic())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["complete"], true);
    assert_eq!(task["size"].as_u64(), Some(layer.size));
    let pieces = task["pieces"].as_array().unwrap();
    let piece_length = task["piece_length"].as_u64().unwrap();
    assert_eq!(pieces.len() as u64, layer.size.div_ceil(piece_length));
    let key = base64::engine::general_purpose::STANDARD
        .decode(task["task_key"].as_str().unwrap())
        .unwrap();
    let ticket = task["ticket"].as_str().unwrap();

    // Every piece, fetched with the ticket, opens with the reference AES-GCM implementation and
    // matches the table; together they are the layer.
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
    let mut blob = Vec::new();
    for (index, expected) in pieces.iter().enumerate() {
        let sealed = client
            .get(format!("{e}/pieces/{}/{index}", layer.digest))
            .header("x-damselfly-ticket", ticket)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(b"dfly");
        nonce[4..].copy_from_slice(&(index as u64).to_be_bytes());
        assert_eq!(&sha256(&sealed)["sha256:".len()..], expected.as_str().unwrap());
        let plain = cipher
            .decrypt(&aes_gcm::Nonce::from(nonce), sealed.as_ref())
            .unwrap();
        blob.extend_from_slice(&plain);
    }
    assert_eq!(sha256(&blob), layer.digest);

    // A ticket opens only its own task, and a forged one nothing.
    let config = image.blobs.iter().min_by_key(|b| b.size).unwrap();
    let forged = format!("{}A", ticket);
    for (digest, ticket) in [(&config.digest, ticket), (&layer.digest, forged.as_str())] {
        let r = client
            .get(format!("{e}/pieces/{digest}/0"))
            .header("x-damselfly-ticket", ticket)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{digest} with {ticket}");
    }

    // skopeo without credentials fails through the mirror and at the origin alike.
    let denied = skopeo::pull_via_mirror(
        &registry.addr(),
        &edge.addr(),
        &reference,
        &out.path().join("x"),
        &PullOptions::default(),
    )
    .await;
    assert!(denied.is_err());
}
