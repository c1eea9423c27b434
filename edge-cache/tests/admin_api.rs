//! The admin API and `edge-cache admin`: only the admin token opens it; a purged blob is
//! fetched again on its next pull; a pinned blob survives eviction under quota pressure; a
//! purged repository's tags are asked of the upstream again.

mod common;

use common::{edge_binary, fetch, layers, sha256, Origin, MIB};
use damselfly_test_support::edge::Edge;
use damselfly_test_support::net::{assert_asks_for_password, loopback_client};
use damselfly_test_support::process::{private_file, stdout_of};

const TOKEN: &str = "admin-token-0123456789";

async fn edge_with_admin(origin: &Origin, quota: &str) -> Edge {
    let mut options = origin.edge_options();
    options.top_toml = format!("admin_token = \"{TOKEN}\"\n");
    options.quota = quota.into();
    origin.edge_with(options).await
}

async fn admin(
    client: &reqwest::Client,
    edge: &Edge,
    method: reqwest::Method,
    path: &str,
) -> reqwest::Response {
    client
        .request(method, format!("{}/api/v1/admin/{path}", edge.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

/// `DELETE /api/v1/admin/blobs/<digest>`: the status of the purge.
async fn purge_blob(client: &reqwest::Client, edge: &Edge, digest: &str) -> reqwest::StatusCode {
    admin(client, edge, reqwest::Method::DELETE, &format!("blobs/{digest}"))
        .await
        .status()
}

async fn listed(client: &reqwest::Client, edge: &Edge) -> Vec<serde_json::Value> {
    admin(client, edge, reqwest::Method::GET, "blobs")
        .await
        .json()
        .await
        .unwrap()
}

fn has(blobs: &[serde_json::Value], digest: &str) -> Option<bool> {
    blobs
        .iter()
        .find(|b| b["digest"] == digest)
        .map(|b| b["pinned"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_token_opens_the_admin_api() {
    let origin = Origin::start().await;
    let client = loopback_client().unwrap();
    let off = origin.edge().await;
    let answer = client
        .get(format!("{}/api/v1/admin/blobs", off.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403, "no admin_token configured: the API is off");

    let edge = edge_with_admin(&origin, "1GiB").await;
    let url = format!("{}/api/v1/admin/blobs", edge.url());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let wrong = client
        .get(&url)
        .bearer_auth("admin-token-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let purge = client
        .delete(format!("{url}/sha256:{}", "ab".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 401, "nothing is purged without the token");
    assert_eq!(
        client.get(&url).bearer_auth(TOKEN).send().await.unwrap().status(),
        200
    );

    // With an admin token, the status page (which names repositories and blobs) asks for it
    // as a password; without one (the first edge, a lab) it is open.
    assert_asks_for_password(client.get(format!("{}/", edge.url()))).await;
    let status = client
        .get(format!("{}/api/v1/status", edge.url()))
        .basic_auth("ops", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let open = client.get(format!("{}/", off.url())).send().await.unwrap();
    assert_eq!(open.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_blobs_are_fetched_again_and_pinned_ones_outlive_eviction() {
    let origin = Origin::start().await;
    // Three 8 MiB layers cannot all stay under a 24 MiB quota (eviction from 90 %).
    let edge = edge_with_admin(&origin, "24MiB").await;
    let image = origin
        .push(
            layers(&[8 * MIB, 8 * MIB + 1, 8 * MIB + 2], "admin"),
            "demo/admin:v1",
        )
        .await;
    let mut big: Vec<_> = image.blobs.iter().filter(|b| b.size >= 8 * MIB).collect();
    big.sort_by_key(|b| b.size);
    let (a, b, c) = (big[0], big[1], big[2]);
    let client = loopback_client().unwrap();
    let url = |digest: &str| format!("{}/v2/demo/admin/blobs/{digest}", edge.url());
    // Pulls `a` whole and right; the upstream's blob GETs since the counters were reset.
    let pull_a = || async {
        let body = fetch(&client, &url(&a.digest)).await.unwrap();
        assert_eq!(sha256(&body), a.digest);
        origin.proxy.blob_gets()
    };

    fetch(&client, &url(&a.digest)).await.unwrap();
    let pin = admin(
        &client,
        &edge,
        reqwest::Method::PUT,
        &format!("pins/{}", a.digest),
    )
    .await;
    assert_eq!(pin.status(), 204);
    fetch(&client, &url(&b.digest)).await.unwrap();
    fetch(&client, &url(&c.digest)).await.unwrap();
    // a is the least recently read, but pinned: b goes instead.
    let blobs = listed(&client, &edge).await;
    assert_eq!(has(&blobs, &a.digest), Some(true), "{blobs:?}");
    assert_eq!(has(&blobs, &b.digest), None, "{blobs:?}");
    assert_eq!(has(&blobs, &c.digest), Some(false), "{blobs:?}");
    origin.proxy.reset_counters();
    assert_eq!(pull_a().await, 0, "the pinned blob was served from the cache");

    // Purged (pinned or not), it is gone from disk and fetched again, whole and right.
    assert_eq!(purge_blob(&client, &edge, &a.digest).await, 204);
    let hex = a.digest.trim_start_matches("sha256:");
    assert!(!edge
        .data_dir()
        .join("blobs")
        .join(format!("{hex}.sealed"))
        .exists());
    assert_eq!(has(&listed(&client, &edge).await, &a.digest), None);
    assert_eq!(pull_a().await, 1, "the purged blob came from the upstream");
    assert_eq!(
        purge_blob(&client, &edge, &b.digest).await,
        404,
        "b was evicted already"
    );

    // The command line sees the same, with the token from a private file.
    let dir = tempfile::tempdir().unwrap();
    let token_file = private_file(dir.path(), "admin.token", &format!("{TOKEN}\n"));
    let text = stdout_of(
        std::process::Command::new(edge_binary())
            .args(["admin", "--edge", &edge.url(), "--token-file"])
            .arg(&token_file)
            .arg("blobs"),
    );
    assert!(text.contains(&a.digest) && text.contains(&c.digest), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_repository_is_asked_of_the_upstream_again() {
    let origin = Origin::start().await;
    let edge = edge_with_admin(&origin, "1GiB").await;
    let image = origin.push(layers(&[MIB], "admin-tags"), "demo/tags:v1").await;
    let client = loopback_client().unwrap();
    let manifest = || async {
        client
            .get(format!("{}/v2/demo/tags/manifests/v1", edge.url()))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(manifest().await, image.top_digest);
    let tags: Vec<serde_json::Value> = admin(&client, &edge, reqwest::Method::GET, "tags")
        .await
        .json()
        .await
        .unwrap();
    // Keyed by the upstream's name as the edge knows it (here the default upstream's host).
    let listed = tags
        .iter()
        .find(|t| t["tag"].as_str().is_some_and(|k| k.ends_with("/demo/tags:v1")))
        .unwrap_or_else(|| panic!("{tags:?}"));
    assert_eq!(listed["digest"], image.top_digest.as_str());
    let key = listed["tag"].as_str().unwrap();
    let repository = format!("repositories/{}", key.trim_end_matches(":v1"));
    let purged: serde_json::Value = admin(&client, &edge, reqwest::Method::DELETE, &repository)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(purged["purged"], 1);
    origin.proxy.reset_counters();
    assert_eq!(manifest().await, image.top_digest);
    let asked = origin.upstream_requests_for("/v2/demo/tags/manifests/v1");
    assert_eq!(asked, 1, "the purged tag went to the upstream");
}
