//! The status page in a real browser (headless Chromium): after pulls through the edge it shows
//! the cache use, the traffic and a plot, and its JSON agrees with `/metrics`. The screenshot is
//! kept under the target directory for people to look at.

mod common;

use std::time::Duration;

use common::{fetch, get_json, origin_edge_and_image, MIB};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::process::run_command;

fn chromium(profile: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--window-size=1000,1200",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_cache_and_traffic_and_agrees_with_metrics() {
    let (_origin, edge, image) = origin_edge_and_image(&[4 * MIB], "status", "demo/status:v1").await;
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let url = format!("{}/v2/demo/status/blobs/{}", edge.url(), layer.digest);
    // A miss, then a hit.
    fetch(&client, &url).await.unwrap();
    fetch(&client, &url).await.unwrap();

    let status = get_json(&client, &format!("{}/api/v1/status", edge.url())).await;
    let metrics = edge.metrics().await.unwrap();
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("{v} in {status}"));
    assert_eq!(
        number(&status["cache"]["used_bytes"]),
        metrics.get("damselfly_edge_cache_used_bytes")
    );
    assert_eq!(
        number(&status["bytes"]["upstream"]),
        metrics.get("damselfly_edge_upstream_bytes_total")
    );
    assert_eq!(
        number(&status["bytes"]["served"]["blob"]),
        metrics.sum("damselfly_edge_served_bytes_total", &["kind=\"blob\""])
    );
    assert_eq!(number(&status["hit_ratio"]["blob"]), 0.5);
    assert_eq!(status["cache"]["blobs"], 1);
    assert!(status["history"].as_array().unwrap().len() >= 2);

    // In a real browser: the page renders, with the cache use and the plot in it.
    let profile = tempfile::tempdir().unwrap();
    let dom = run_command(
        {
            let mut cmd = chromium(profile.path());
            cmd.arg("--dump-dom").arg(format!("{}/", edge.url()));
            cmd
        },
        Duration::from_secs(60),
    )
    .await
    .expect("chromium --dump-dom");
    let used = status["cache"]["used_bytes"].as_u64().unwrap();
    let used_text = format!("{:.1} MiB", used as f64 / MIB as f64);
    assert!(
        dom.stdout.contains(&used_text),
        "{used_text} not on the page:\n{}",
        dom.stdout
    );
    assert!(
        dom.stdout.contains("id=\"traffic-plot\""),
        "no plot:\n{}",
        dom.stdout
    );
    assert!(
        dom.stdout.contains("id=\"sources-plot\""),
        "no plot of the agents' sources"
    );
    // Two lines for the edge's traffic, three for the agents' sources.
    assert_eq!(dom.stdout.matches("<polyline").count(), 5);

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("edge-status.png");
    let _ = std::fs::remove_file(&shot);
    run_command(
        {
            let mut cmd = chromium(profile.path());
            cmd.arg(format!("--screenshot={}", shot.display()))
                .arg(format!("{}/", edge.url()));
            cmd
        },
        Duration::from_secs(60),
    )
    .await
    .expect("chromium --screenshot");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
