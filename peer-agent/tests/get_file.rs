//! `peer-agent get`: plain files through the P2P path. The file's server sends it once however
//! many hosts fetch it, every spelling of the URL joins one task, a wrong digest keeps nothing,
//! the edge refuses URLs outside its allow list, and with the edge gone the agent fetches the
//! file from its server itself.

mod common;

use std::path::Path;
use std::process::Output;

use common::{agent_binary, downloaded_from, sha256, Region, MIB};
use damselfly_test_support::file_server::FileServer;
use damselfly_test_support::image::random_bytes;
use damselfly_test_support::registry::RegistryOptions;

/// Runs `peer-agent get` against agent `agent_url`.
async fn get(agent_url: &str, url: &str, out: &Path, digest: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(agent_binary());
    command
        .arg("get")
        .arg(url)
        .arg("-o")
        .arg(out)
        .arg("--agent")
        .arg(agent_url);
    if let Some(d) = digest {
        command.arg("--digest").arg(d);
    }
    command.output().await.expect("run peer-agent get")
}

fn assert_ok(output: &Output, what: &str, region: &Region) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        region.logs()
    );
}

/// Deterministic, incompressible content.
fn content(len: usize) -> Vec<u8> {
    random_bytes(0x9e37_79b9_7f4a_7c15, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_is_sent_once_by_its_server_and_shared_between_agents() {
    let files = FileServer::start().await.unwrap();
    let edge_toml = format!("[files]\nallow = [\"{}\"]\n", files.prefix());
    let racks = ["eu/z1/r1", "eu/z1/r1", "eu/z1/r2"];
    let region = Region::start_with_edge_toml(RegistryOptions::default(), &racks, &edge_toml).await;
    let data = content(24 * MIB as usize);
    let url = files.put("model.bin", &data).unwrap();
    let digest = sha256(&data);
    let out = tempfile::tempdir().unwrap();

    let first = out.path().join("first.bin");
    let output = get(&region.agents[0].url(), &url, &first, Some(&digest)).await;
    assert_ok(&output, "first get", &region);
    assert!(std::fs::read(&first).unwrap() == data, "first copy differs");
    assert_eq!(
        files.gets(),
        1,
        "the edge fetches the file once\n{}",
        region.logs()
    );
    assert_eq!(files.bytes_sent(), data.len() as u64);

    // Two more hosts at once, one spelling the URL differently: same task, nothing new from
    // the server, and the first agent's pieces travel between peers.
    let odd_spelling = url
        .replace("http://", "HTTP://")
        .replace("/model.bin", "/x/../model.bin#top");
    let (a, b) = (out.path().join("a.bin"), out.path().join("b.bin"));
    let (agent1, agent2) = (region.agents[1].url(), region.agents[2].url());
    let (ra, rb) = tokio::join!(
        get(&agent1, &url, &a, None),
        get(&agent2, &odd_spelling, &b, Some(&digest)),
    );
    assert_ok(&ra, "second get", &region);
    assert_ok(&rb, "third get", &region);
    assert!(std::fs::read(&a).unwrap() == data && std::fs::read(&b).unwrap() == data);
    assert_eq!(files.gets(), 1, "every host shares one task");
    let metrics = region.agent_metrics().await;
    let peer = downloaded_from(&metrics, "peer");
    let origin = downloaded_from(&metrics, "origin");
    assert!(peer > 0.0, "no bytes travelled between peers\n{}", region.logs());
    assert_eq!(origin, 0.0);
    // The agent names the file by its content on success.
    assert!(String::from_utf8_lossy(&rb.stderr).contains(&digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_digests_and_unlisted_urls_keep_nothing_and_say_why() {
    let files = FileServer::start().await.unwrap();
    let elsewhere = FileServer::start().await.unwrap();
    let edge_toml = format!("[files]\nallow = [\"{}\"]\n", files.prefix());
    let mut region =
        Region::start_with_edge_toml(RegistryOptions::default(), &["eu/z1/r1"], &edge_toml).await;
    let data = content(3 * MIB as usize);
    let url = files.put("tool.tar", &data).unwrap();
    let out = tempfile::tempdir().unwrap();
    let agent = region.agents[0].url();

    let wrong = format!("sha256:{}", "0".repeat(64));
    let target = out.path().join("tool.tar");
    let output = get(&agent, &url, &target, Some(&wrong)).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not the expected"), "{stderr}");
    assert!(!target.exists(), "a file that failed its digest check was kept");
    assert!(!out.path().join("tool.tar.part").exists());

    let unlisted = elsewhere.put("other.bin", &data).unwrap();
    let output = get(&agent, &unlisted, &out.path().join("other.bin"), None).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("403") && stderr.contains("allow"), "{stderr}");
    assert_eq!(
        elsewhere.gets(),
        0,
        "the edge fetched a URL outside its allow list"
    );

    let missing = get(&agent, &files.url("missing.bin"), &out.path().join("m"), None).await;
    assert!(!missing.status.success());
    assert!(!out.path().join("m").exists());

    // With the edge gone, the agent fetches the file from its server itself.
    let before = downloaded_from(&region.agent_metrics().await, "origin");
    region.edge.kill().unwrap();
    let fresh = files.put("fresh.bin", &data).unwrap();
    let target = out.path().join("fresh.bin");
    let output = get(&agent, &fresh, &target, Some(&sha256(&data))).await;
    assert_ok(&output, "get with the edge down", &region);
    assert!(std::fs::read(&target).unwrap() == data);
    let after = downloaded_from(&region.agent_metrics().await, "origin");
    assert_eq!(after - before, data.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_file_is_a_new_task_and_a_wrong_digest_never_gets_the_cached_copy() {
    let files = FileServer::start().await.unwrap();
    let edge_toml = format!("[files]\nallow = [\"{}\"]\n", files.prefix());
    let region = Region::start_with_edge_toml(RegistryOptions::default(), &["eu/z1/r1"], &edge_toml).await;
    let agent = region.agents[0].url();
    let out = tempfile::tempdir().unwrap();
    let first = content(2 * MIB as usize);
    let url = files.put("weights.bin", &first).unwrap();
    let target = out.path().join("weights.bin");
    assert_ok(
        &get(&agent, &url, &target, Some(&sha256(&first))).await,
        "first get",
        &region,
    );
    assert_eq!(files.gets(), 1);

    // The cached copy is not what this caller names: refused, nothing fetched, nothing kept.
    let wrong = format!("sha256:{}", "1".repeat(64));
    let refused = out.path().join("refused.bin");
    let output = get(&agent, &url, &refused, Some(&wrong)).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&sha256(&first)) && stderr.contains(&wrong),
        "{stderr}"
    );
    assert!(!refused.exists());
    assert_eq!(files.gets(), 1, "a refusal fetches nothing");

    // Same name, same length, new content: a new version, fetched anew, never mixed with the
    // old one (Last-Modified has a resolution of a second).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second: Vec<u8> = first.iter().map(|b| b ^ 0x5a).collect();
    files.put("weights.bin", &second).unwrap();
    let again = out.path().join("again.bin");
    assert_ok(
        &get(&agent, &url, &again, None).await,
        "get after the change",
        &region,
    );
    assert!(
        std::fs::read(&again).unwrap() == second,
        "the old content came back"
    );
    assert_eq!(files.gets(), 2, "the new version is fetched once");
    assert_eq!(downloaded_from(&region.agent_metrics().await, "origin"), 0.0);
}
