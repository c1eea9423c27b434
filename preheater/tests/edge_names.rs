//! The preheater asks every edge at start whether it knows each configured registry by the name
//! warm requests will use, and refuses to start when an edge does not: otherwise every push
//! from that registry would fail inside its jobs, where nobody looks.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{start_edge, EDGE_TOKEN};
use damselfly_test_support::daemon::{Daemon, DaemonSpec};
use damselfly_test_support::net::free_addr_on;
use damselfly_test_support::registry::{Registry, RegistryOptions};

fn config(edge_url: &str, registry_lines: &str, data: &std::path::Path) -> (String, String) {
    let addr = free_addr_on("127.0.0.1").unwrap();
    let text = format!(
        "listen = \"{addr}\"\ninsecure = true\ndata_dir = \"{}\"\nedge_token = \"{EDGE_TOKEN}\"\n\
         [[edges]]\nregion = \"eu\"\nurl = \"{edge_url}\"\n[[registries]]\n{registry_lines}\n",
        data.display()
    );
    (text, format!("http://{addr}"))
}

#[tokio::test]
async fn a_registry_the_edge_does_not_know_stops_the_start() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    // The edge knows the registry by its address, as its upstream URL names it.
    let edge = start_edge(&registry.url()).await;
    let dir = tempfile::tempdir().unwrap();

    let (text, _) = config(
        &edge.url(),
        &format!("host = \"registry.example.com\"\nurl = \"{}\"", registry.url()),
        &dir.path().join("data"),
    );
    let path = dir.path().join("preheater.toml");
    std::fs::write(&path, text).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_preheater"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the preheater exits instead of serving")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("has no upstream named registry.example.com") && stderr.contains("edge_registry"),
        "the error names the registry and the fix: {stderr}"
    );

    // Named as the edge knows it, the same registry is fine.
    let (text, url) = config(
        &edge.url(),
        &format!(
            "host = \"registry.example.com\"\nurl = \"{}\"\nedge_registry = \"{}\"",
            registry.url(),
            registry.addr()
        ),
        &dir.path().join("data2"),
    );
    let spec = DaemonSpec::plain("preheater", env!("CARGO_BIN_EXE_preheater"), "info", url);
    let daemon = Daemon::start(spec, tempfile::tempdir().unwrap(), &text).await;
    assert!(daemon.is_ok(), "{:?}", daemon.err());
}
