//! TLS listeners with client certificates: who a caller is, and what a caller without the
//! right certificates gets. Certificates are made by the project's own CA helper.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};
use damselfly_server::certs::{self, Subject};
use damselfly_server::tls::{client_builder, PeerIdentity, ServerTls, TlsConfig};
use damselfly_server::{Listener, Readiness, Server, ServerConfig, ServerMetrics};
use tokio::net::TcpListener;

fn subject(name: &str, spiffe: Option<&str>) -> Subject {
    Subject {
        name: name.into(),
        dns: vec!["localhost".into()],
        ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        spiffe: spiffe.map(str::to_string),
        days: 1,
    }
}

fn config_for(dir: &Path, name: &str, with_client_ca: bool) -> TlsConfig {
    TlsConfig {
        cert: Some(dir.join(format!("{name}.crt"))),
        key: Some(dir.join(format!("{name}.key"))),
        client_ca: with_client_ca.then(|| dir.join("ca/ca.crt")),
        ca_file: Some(dir.join("ca/ca.crt")),
    }
}

async fn whoami(identity: Option<Extension<PeerIdentity>>) -> String {
    identity.map_or(
        "anonymous".into(),
        |Extension(PeerIdentity { name, addresses })| format!("{name} {}", addresses.join(",")),
    )
}

async fn serve(tls: Arc<ServerTls>) -> std::net::SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let app = Router::new().route("/whoami", get(whoami));
    let server = Server::new(
        &ServerConfig::default(),
        Readiness::new(),
        ServerMetrics::register(&mut registry),
    )
    .listener(Listener::new("tls", tcp, app).tls(Some(tls)));
    tokio::spawn(server.run(std::future::pending()));
    addr
}

async fn ask(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    response.text().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_client_certificate_names_the_caller_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs::init_ca(&d.join("ca"), "test cluster CA", 1).unwrap();
    for (name, spiffe) in [
        ("edge", None),
        ("agent-a", None),
        ("agent-b", Some("spiffe://cluster.local/ns/df/sa/agent-b")),
    ] {
        certs::issue(&d.join("ca"), &subject(name, spiffe), d).unwrap();
    }
    let server_tls = config_for(d, "edge", true);
    server_tls.validate().unwrap();
    let addr = serve(ServerTls::load(&server_tls).unwrap()).await;
    let url = format!("https://localhost:{}/whoami", addr.port());

    let as_agent = |name: &str| {
        client_builder(&config_for(d, name, false), true)
            .unwrap()
            .build()
            .unwrap()
    };
    assert_eq!(
        ask(&as_agent("agent-a"), &url).await.unwrap(),
        "agent-a localhost,127.0.0.1"
    );
    assert_eq!(
        ask(&as_agent("agent-b"), &url).await.unwrap(),
        "spiffe://cluster.local/ns/df/sa/agent-b localhost,127.0.0.1",
        "a spiffe URI wins over the CN"
    );
    let trusted_only = client_builder(&config_for(d, "agent-a", false), false)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(ask(&trusted_only, &url).await.unwrap(), "anonymous");
    // A caller claiming an identity in a header is still anonymous.
    let claimed = trusted_only
        .get(&url)
        .header("x-peer-identity", "agent-a")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(claimed, "anonymous");

    let untrusting = client_builder(&TlsConfig::default(), false)
        .unwrap()
        .build()
        .unwrap();
    let err = ask(&untrusting, &url).await.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let plain = reqwest::Client::new();
    assert!(
        ask(&plain, &format!("http://127.0.0.1:{}/whoami", addr.port()))
            .await
            .is_err(),
        "plain HTTP to a TLS port gets nothing"
    );

    // A certificate from another CA proves nothing here.
    certs::init_ca(&d.join("other"), "another CA", 1).unwrap();
    certs::issue(&d.join("other"), &subject("intruder", None), &d.join("other")).unwrap();
    let intruder = TlsConfig {
        cert: Some(d.join("other/intruder.crt")),
        key: Some(d.join("other/intruder.key")),
        ca_file: Some(d.join("ca/ca.crt")),
        client_ca: None,
    };
    let intruder = client_builder(&intruder, true).unwrap().build().unwrap();
    assert!(
        ask(&intruder, &url).await.is_err(),
        "a foreign client certificate is refused"
    );
}

#[tokio::test]
async fn rotated_certificates_are_picked_up_and_broken_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs::init_ca(&d.join("ca"), "test cluster CA", 1).unwrap();
    certs::issue(&d.join("ca"), &subject("edge", None), d).unwrap();
    let config = config_for(d, "edge", false);
    let tls = ServerTls::load(&config).unwrap();
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");
    let addr = serve(tls.clone()).await;
    let url = format!("https://localhost:{}/whoami", addr.port());
    let client = client_builder(&config, false).unwrap().build().unwrap();
    assert_eq!(ask(&client, &url).await.unwrap(), "anonymous");

    // Mtimes have a resolution; make sure the rewrite is seen as a change.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    certs::issue(&d.join("ca"), &subject("edge", None), d).unwrap();
    assert!(tls.reload_if_changed().unwrap(), "the new certificate is loaded");
    let fresh = client_builder(&config, false).unwrap().build().unwrap();
    assert_eq!(ask(&fresh, &url).await.unwrap(), "anonymous");

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    std::fs::write(d.join("edge.crt"), "not a certificate").unwrap();
    assert!(tls.reload_if_changed().is_err());
    let after = client_builder(&config, false).unwrap().build().unwrap();
    assert_eq!(
        ask(&after, &url).await.unwrap(),
        "anonymous",
        "the previous certificate keeps serving"
    );
}

#[test]
fn a_private_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs::init_ca(&d.join("ca"), "test cluster CA", 1).unwrap();
    certs::issue(&d.join("ca"), &subject("edge", None), d).unwrap();
    let config = config_for(d, "edge", true);
    config.validate().unwrap();
    std::fs::set_permissions(d.join("edge.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("edge.key") && err.contains("644"), "{err}");
    assert!(ServerTls::load(&config).is_err());
    assert!(
        certs::init_ca(&d.join("ca"), "again", 1).is_err(),
        "an existing CA is never overwritten"
    );
}
