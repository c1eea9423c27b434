//! The edge's outbound trust (a registry or Redis behind a private CA) and its secrets (kept
//! out of `--check-config`, process lists and loose files).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{edge_binary, fetch, get_json, layers, MIB};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::pki::Pki;
use damselfly_test_support::redis::Redis;
use damselfly_test_support::registry::{Registry, RegistryOptions};

/// A registry served over TLS with a certificate of `pki`, holding `demo/tls:v1` (pushed to a
/// plain twin on the same storage first: skopeo would need the CA too).
async fn registry_behind_a_private_ca(pki: &Pki, storage: &Path) -> (Registry, String) {
    let plain = Registry::start(RegistryOptions {
        data_dir: Some(storage.to_path_buf()),
        ..RegistryOptions::default()
    })
    .await
    .unwrap();
    let image = plain
        .push_image(layers(&[MIB], "private-ca"), "demo/tls:v1")
        .await
        .unwrap();
    let tls = Registry::start(RegistryOptions {
        data_dir: Some(storage.to_path_buf()),
        tls: Some(pki.issue("registry", &["127.0.0.1"]).unwrap()),
        trust: Some(pki.ca()),
        ..RegistryOptions::default()
    })
    .await
    .unwrap();
    (tls, image.largest_blob().digest.clone())
}

#[tokio::test]
async fn a_registry_behind_a_private_ca_needs_the_ca_file_and_says_so_without_it() {
    let pki = Pki::new().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let (registry, blob) = registry_behind_a_private_ca(&pki, storage.path()).await;
    let client = loopback_client().unwrap();

    let untrusting = Edge::start(
        edge_binary(),
        EdgeOptions::for_registry(&registry.addr(), &registry.url()),
    )
    .await
    .unwrap();
    let url = format!("{}/v2/demo/tls/blobs/{blob}", untrusting.url());
    let err = fetch(&client, &url).await.unwrap_err();
    assert!(err.contains("502"), "{err}");
    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        body.to_lowercase().contains("certificate"),
        "the answer says why: {body}"
    );

    let mut options = EdgeOptions::for_registry(&registry.addr(), &registry.url());
    options
        .extra_toml
        .push_str(&format!("[tls]\nca_file = \"{}\"\n", pki.ca().display()));
    let trusting = Edge::start(edge_binary(), options).await.unwrap();
    let bytes = fetch(&client, &format!("{}/v2/demo/tls/blobs/{blob}", trusting.url()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", trusting.log_tail()));
    assert_eq!(common::sha256(&bytes), blob);
}

#[tokio::test]
async fn redis_over_tls_carries_the_scheduler() {
    let pki = Pki::new().unwrap();
    let redis = Redis::start_tls(&pki).await.unwrap();
    assert!(redis.url().starts_with("rediss://"));
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();

    let mut options = EdgeOptions::for_registry(&registry.addr(), &registry.url());
    options.top_toml = format!("redis = \"{}\"", redis.url());
    options
        .extra_toml
        .push_str(&format!("[tls]\nca_file = \"{}\"\n", pki.ca().display()));
    let edge = Edge::start(edge_binary(), options.clone())
        .await
        .expect("ready: Redis over TLS answers");
    let image = registry
        .push_image(layers(&[MIB], "rediss"), "demo/rediss:v1")
        .await
        .unwrap();
    let layer = image.largest_blob().digest.clone();
    let client = loopback_client().unwrap();
    let task = get_json(
        &client,
        &format!("{}/api/v1/tasks/{layer}?repo=demo/rediss", edge.url()),
    )
    .await;
    let ticket = task["ticket"].as_str().unwrap();
    let layout: damselfly_core::PieceLayout = serde_json::from_value(task.clone()).unwrap();
    let announced = client
        .put(format!("{}/api/v1/tasks/{layer}/peers/host-1", edge.url()))
        .header("x-damselfly-ticket", ticket)
        .json(&serde_json::json!({
            "upload_url": "http://127.0.0.1:9",
            "location": "eu/z1/r1",
            "pieces": damselfly_core::Bitfield::new(layout.count()),
            "uploads_active": 0,
            "upload_slots": 4,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(announced.status(), 204, "{}", edge.log_tail());
    let parents: serde_json::Value = client
        .get(format!("{}/api/v1/tasks/{layer}/parents", edge.url()))
        .query(&[("host_id", "host-2"), ("location", "eu/z1/r1")])
        .header("x-damselfly-ticket", ticket)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(parents["parents"][0]["host_id"], "host-1", "{parents}");

    // Without the CA, Redis's certificate is not trusted: the edge does not start.
    options.extra_toml = String::new();
    let refused = Edge::start(edge_binary(), options).await;
    let err = format!("{:#}", refused.err().expect("an untrusted Redis is refused"));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

fn check_config(binary: &Path, args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(binary)
        .arg("--check-config")
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

#[test]
fn secrets_stay_out_of_check_config_and_the_command_line_and_loose_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = "warm-token-0123456789-s3cret";
    let password = "upstream-password-s3cret";
    let token_file = private_file(dir.path(), "warm-token", &format!("{token}\n"), 0o600);
    let password_file = private_file(dir.path(), "password", password, 0o600);
    let config = private_file(
        dir.path(),
        "edge.toml",
        &format!(
            "redis = \"redis://:redis-pass-s3cret@127.0.0.1:6379/0\"\n\
             [[upstreams]]\nregistry = \"r.example\"\nurl = \"https://r.example\"\n\
             username = \"u\"\npassword_file = \"{password_file}\"\n"
        ),
        0o600,
    );
    let (ok, stdout, stderr) = check_config(
        edge_binary(),
        &["--config", &config, "--warm-token-file", &token_file],
        &[],
    );
    assert!(ok, "{stderr}");
    for secret in [token, password, "redis-pass-s3cret"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed:\n{stdout}"
        );
    }
    assert!(stdout.contains("warm_token = \"<redacted>\""), "{stdout}");

    // From the environment it is as good as a file; on the command line it would be in every
    // process listing: refused, without echoing it.
    let (ok, stdout, _) = check_config(edge_binary(), &[], &[("DAMSELFLY_EDGE_WARM_TOKEN", token)]);
    assert!(ok && !stdout.contains(token));
    let (ok, _, stderr) = check_config(edge_binary(), &["--warm-token", token], &[]);
    assert!(
        !ok && stderr.contains("process list") && !stderr.contains(token),
        "{stderr}"
    );

    let loose = private_file(dir.path(), "loose-token", token, 0o644);
    let (ok, _, stderr) = check_config(edge_binary(), &["--warm-token-file", &loose], &[]);
    assert!(!ok && stderr.contains("readable by others"), "{stderr}");
    assert!(!stderr.contains(token));

    // The agent holds no secrets of its own, but takes the same care with its key.
    let agent = edge_binary().with_file_name("peer-agent");
    let pki = Pki::new().unwrap();
    let files = pki.issue("agent-x", &["127.0.0.1"]).unwrap();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, stderr) = check_config(
        &agent,
        &[
            "--edge",
            "https://127.0.0.1:1",
            "--tls-cert",
            &files.cert.display().to_string(),
            "--tls-key",
            &files.key.display().to_string(),
        ],
        &[],
    );
    assert!(!ok && stderr.contains("readable by others"), "{stderr}");
}

#[tokio::test]
async fn a_cluster_secret_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = private_file(
        dir.path(),
        "cluster.secret",
        "0123456789abcdef0123456789abcdef-cluster",
        0o644,
    );
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let mut options = EdgeOptions::for_registry(&registry.addr(), &registry.url());
    options.top_toml = format!("cluster_secret_file = \"{secret}\"");
    let refused = Edge::start(edge_binary(), options).await;
    let err = format!("{:#}", refused.err().expect("a loose cluster secret is refused"));
    assert!(err.contains("readable by others"), "{err}");
}
