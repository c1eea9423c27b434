//! What an operator uses by hand: `preheater jobs create … --wait` follows a job to its end
//! (and fails when the job fails), `jobs get` and `jobs list` read jobs back, and the jobs pages
//! show them to a browser that gives the API token as a Basic password, and to nobody else.

mod common;

use std::process::Command;

use base64::Engine as _;
use common::*;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::metrics::{dashboard_metrics, scrape};
use damselfly_test_support::net::{assert_asks_for_password, loopback_client, text};
use damselfly_test_support::process::private_file;

const API_TOKEN: &str = "api-token-0123456789abcdef";

fn jobs_command(
    preheater: &Preheater,
    token_file: &std::path::Path,
    args: &[&str],
) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_preheater"))
        .args(["jobs", "--url", &preheater.url(), "--token-file"])
        .arg(token_file)
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_from_the_command_line_and_in_a_browser() {
    init_logging();
    let (registry, image) =
        registry_with(ImageSpec::new("operator", vec![MIB, MIB / 2]), "demo/operator:v1").await;
    let edge = start_edge(&registry.url()).await;
    let preheater = Preheater::start(&PreheaterSetup {
        extra_top: format!("api_token = \"{API_TOKEN}\"\n"),
        ..PreheaterSetup::new(&registry, &[("eu", edge.url())])
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = private_file(dir.path(), "api.token", API_TOKEN);
    // Created and followed to the end: every item cached in the one region.
    let reference = format!("{}/demo/operator:v1", registry.addr());
    let (ok, stdout, stderr) = jobs_command(&preheater, &token_file, &["create", &reference, "--wait"]);
    assert!(ok, "{stdout}\n{stderr}\n{}", preheater.log_tail());
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("job ").and_then(|rest| rest.split(':').next()))
        .unwrap_or_else(|| panic!("{stdout}"))
        .trim()
        .to_string();
    // config + layers + manifest
    let items = image.blobs.len() + 1;
    assert!(
        stdout.contains(&format!("eu: {items}/{items} items cached")),
        "{stdout}"
    );
    assert_cached(&edge.url(), &image.largest_blob().digest).await;
    // The edge's status page lists the repository among its recent preheats.
    let status = edge.status().await.unwrap();
    let preheat = &status["preheats"][0];
    assert!(
        preheat["repository"]
            .as_str()
            .unwrap()
            .ends_with("/demo/operator"),
        "{status}"
    );
    assert_eq!(
        preheat["blobs"].as_u64(),
        Some(image.blobs.len() as u64),
        "{status}"
    );

    let (ok, stdout, _) = jobs_command(&preheater, &token_file, &["get", &id]);
    assert!(ok && stdout.contains("succeeded"), "{stdout}");
    let (ok, stdout, _) = jobs_command(&preheater, &token_file, &["list"]);
    assert!(ok && stdout.contains(&id), "{stdout}");

    // A job that cannot succeed: --wait says so with a failing exit status.
    let missing = format!("{}/demo/operator:missing", registry.addr());
    let (ok, stdout, stderr) = jobs_command(&preheater, &token_file, &["create", &missing, "--wait"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("failed"), "{stderr}");

    // The pages: refused without the token (a browser is asked for it), shown with it.
    let client = loopback_client().unwrap();
    assert_asks_for_password(client.get(format!("{}/", preheater.url()))).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{API_TOKEN}"));
    let list = client
        .get(format!("{}/", preheater.url()))
        .header("authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let list = list.text().await.unwrap();
    assert!(
        list.contains(&format!("/jobs/{id}")) && list.contains("succeeded") && list.contains("failed"),
        "{list}"
    );
    let detail = text(
        client
            .get(format!("{}/jobs/{id}", preheater.url()))
            .bearer_auth(API_TOKEN),
    )
    .await;
    assert!(detail.contains("Items by region"), "{detail}");
    assert_eq!(detail.matches("<td>cached</td>").count(), items, "{detail}");

    // Every preheater metric the Grafana dashboard queries is exported.
    let metrics = scrape(&format!("{}/metrics", preheater.url())).await.unwrap();
    for name in dashboard_metrics("damselfly_preheater_") {
        assert!(
            metrics.has(&name),
            "the dashboard queries {name}, which is not exported"
        );
    }
}

async fn assert_cached(edge_url: &str, digest: &str) {
    assert_eq!(edge_state(edge_url, digest).await, "cached");
}
