//! Who gets what: task keys travel only over TLS to agents that proved who they are, scheduler
//! records belong to the identity that wrote them, tickets work only for the identity they were
//! issued to, and no one can point agents at a parent of their choosing.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::{agent_binary, edge_binary, edge_in_front_of, pull_through, MIB};
use damselfly_core::{ClusterSecret, Digest};
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::pki::{Pki, TlsFiles};
use damselfly_test_support::registry::{Registry, RegistryOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay that keeps a copy of every byte it passes, both ways.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(target: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(copy(client_read, server_write, record.clone()));
                tokio::spawn(copy(server_read, client_write, record.clone()));
            }
        });
        Recorder { addr, seen }
    }

    fn contains(&self, needle: &[u8]) -> bool {
        let seen = self.seen.lock().unwrap();
        !needle.is_empty() && seen.windows(needle.len()).any(|w| w == needle)
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        seen.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

fn edge_addr(edge: &Edge) -> SocketAddr {
    edge.addr().parse().unwrap()
}

/// The key of `task` as the edge derives it from its (generated) cluster secret.
fn task_key(edge: &Edge, task: &str) -> [u8; 32] {
    let secret = std::fs::read_to_string(edge.data_dir().join("cluster.secret")).unwrap();
    let secret = ClusterSecret::new(secret.trim().as_bytes()).unwrap();
    let digest: Digest = task.parse().unwrap();
    *secret.task_key(&digest).as_bytes()
}

async fn image(registry: &Registry) -> BuiltImage {
    registry
        .push_image(ImageSpec::new("trust", vec![2 * MIB, MIB]), "demo/trust:v1")
        .await
        .unwrap()
}

/// A registry holding the test image and an edge in front of it, speaking TLS with `tls`'s
/// certificates when given: the starting point of every check here that involves agents.
async fn image_behind_edge(tls: Option<Arc<Pki>>) -> (Registry, BuiltImage, Edge) {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let image = image(&registry).await;
    let mut options = EdgeOptions::for_registry(&registry.addr(), &registry.url());
    options.tls = tls;
    let edge = Edge::start(&edge_binary(), options).await.unwrap();
    (registry, image, edge)
}

/// Pulls through `agent` with skopeo; the manifest digest.
async fn pull(registry: &Registry, agent: &Agent, out: &std::path::Path) -> String {
    pull_through(registry, agent, "demo/trust:v1", out)
        .await
        .manifest_digest
}

/// What a recorder between one agent and its edge saw of a pull.
struct Seen {
    /// A layer's task key, raw or as the task answer spells it (base64).
    keys: bool,
    /// The agent's task requests, as text.
    requests: bool,
}

/// Pulls `image` through one agent whose edge traffic passes a recorder.
async fn seen_on_the_wire(tls: Option<Arc<Pki>>) -> Seen {
    let (registry, image, edge) = image_behind_edge(tls.clone()).await;
    let recorder = Recorder::start(edge_addr(&edge)).await;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut agent = AgentOptions::host(0, "eu/z1/r1", format!("{scheme}://{}", recorder.addr), &registry);
    agent.tls = tls;
    let agent = Agent::start(agent_binary(), agent).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    assert_eq!(pull(&registry, &agent, out.path()).await, image.top_digest);
    assert!(
        recorder.len() > 0,
        "the agent's edge traffic went through the recorder"
    );
    agent
        .assert_counted(
            "damselfly_agent_download_bytes_total",
            &["source=\"edge\""],
            "the pull used the P2P path",
        )
        .await;
    Seen {
        keys: image.blobs.iter().any(|blob| {
            let key = task_key(&edge, &blob.digest);
            let b64 = base64::engine::general_purpose::STANDARD.encode(key);
            recorder.contains(&key) || recorder.contains(b64.as_bytes())
        }),
        requests: recorder.contains(b"GET /api/v1/tasks/"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_keys_never_cross_the_wire_readable() {
    let secure = seen_on_the_wire(Some(Pki::new().unwrap())).await;
    assert!(
        !secure.keys,
        "a task key crossed the wire between agent and edge in clear"
    );
    assert!(!secure.requests, "the agent's requests crossed the wire in clear");
    // The same recording of a lab edge (plain HTTP, --insecure) reads every request (task
    // answers are gzip-compressed, which hides nothing from anyone who inflates them): the
    // recorder sees what crosses the wire.
    assert!(seen_on_the_wire(None).await.requests);
}

/// A client of the edge presenting `identity`, trusting the cluster CA.
fn client(pki: &Pki, identity: Option<&TlsFiles>) -> reqwest::Client {
    pki.client(identity).unwrap()
}

fn announcement(upload_url: &str, pieces: u64) -> serde_json::Value {
    let held = damselfly_core::Bitfield::new(pieces);
    serde_json::json!({
        "upload_url": upload_url,
        "location": "eu/z1/r1",
        "pieces": held,
        "uploads_active": 0,
        "upload_slots": 4,
    })
}

struct Scheduler<'a> {
    edge: &'a Edge,
    task: &'a str,
}

impl Scheduler<'_> {
    async fn task(&self, as_: &reqwest::Client) -> reqwest::Response {
        as_.get(format!(
            "{}/api/v1/tasks/{}?repo=demo/trust",
            self.edge.url(),
            self.task
        ))
        .send()
        .await
        .unwrap()
    }

    async fn ticket(&self, as_: &reqwest::Client) -> (String, u64) {
        let answer: serde_json::Value = self.task(as_).await.json().await.unwrap();
        let layout: damselfly_core::PieceLayout = serde_json::from_value(answer.clone()).unwrap();
        (answer["ticket"].as_str().unwrap().to_string(), layout.count())
    }

    fn peer_url(&self, host: &str) -> String {
        format!(
            "{}{}",
            self.edge.url(),
            damselfly_core::api::scheduler::peer_path(&self.task.parse().unwrap(), host)
        )
    }

    async fn announce(
        &self,
        as_: &reqwest::Client,
        host: &str,
        ticket: &str,
        body: &serde_json::Value,
    ) -> u16 {
        status_with_ticket(as_.put(self.peer_url(host)).json(body), ticket).await
    }

    async fn leave(&self, as_: &reqwest::Client, host: &str, ticket: &str) -> u16 {
        status_with_ticket(as_.delete(self.peer_url(host)), ticket).await
    }

    async fn parents(&self, as_: &reqwest::Client, ticket: &str) -> u16 {
        let url = format!("{}/api/v1/tasks/{}/parents", self.edge.url(), self.task);
        let request = as_.get(url).query(&[("host_id", "x"), ("location", "eu/z1/r1")]);
        status_with_ticket(request, ticket).await
    }

    async fn piece(&self, as_: &reqwest::Client, ticket: &str) -> u16 {
        let url = format!("{}/pieces/{}/0", self.edge.url(), self.task);
        status_with_ticket(as_.get(url), ticket).await
    }
}

/// Sends `request` presenting `ticket`: every scheduler call these checks make differs only in
/// method and path, and what they judge is the status code alone.
async fn status_with_ticket(request: reqwest::RequestBuilder, ticket: &str) -> u16 {
    request
        .header("x-damselfly-ticket", ticket)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_are_who_their_certificates_say_and_nobody_else() {
    let pki = Pki::new().unwrap();
    let (_registry, image, edge) = image_behind_edge(Some(pki.clone())).await;
    let layer = image.largest_blob().digest.clone();
    let scheduler = Scheduler {
        edge: &edge,
        task: &layer,
    };

    // Plain HTTP to the TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/tasks/{layer}?repo=demo/trust",
            edge.addr()
        ))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // TLS without a client certificate: no key, no ticket.
    let anonymous = client(&pki, None);
    let refused = scheduler.task(&anonymous).await;
    assert_eq!(refused.status(), 403);
    assert!(!refused.text().await.unwrap().contains("task_key"));

    let a_files = pki.issue("agent-a", &["127.0.0.1"]).unwrap();
    let b_files = pki.issue("agent-b", &["127.0.0.1"]).unwrap();
    let (a, b) = (client(&pki, Some(&a_files)), client(&pki, Some(&b_files)));
    let answer: serde_json::Value = scheduler.task(&a).await.json().await.unwrap();
    assert!(
        answer["task_key"].is_string(),
        "an identified agent gets the key: {answer}"
    );
    let (ticket_a, pieces) = scheduler.ticket(&a).await;
    let (ticket_b, _) = scheduler.ticket(&b).await;

    // Records: only one's own, and only at an address one is known by.
    let own = announcement("http://127.0.0.1:9", pieces);
    assert_eq!(
        scheduler.announce(&a, "agent-b", &ticket_a, &own).await,
        403,
        "writing another's record"
    );
    let elsewhere = announcement("http://127.0.0.77:9", pieces);
    assert_eq!(
        scheduler.announce(&a, "agent-a", &ticket_a, &elsewhere).await,
        403,
        "pointing others elsewhere"
    );
    assert_eq!(scheduler.announce(&a, "agent-a", &ticket_a, &own).await, 204);
    assert_eq!(scheduler.announce(&b, "agent-b", &ticket_b, &own).await, 204);
    assert_eq!(
        scheduler.leave(&b, "agent-a", &ticket_b).await,
        403,
        "deleting another's record"
    );

    // A ticket is its holder's alone, at every edge endpoint.
    assert_eq!(scheduler.parents(&a, &ticket_a).await, 200);
    assert_eq!(scheduler.parents(&b, &ticket_a).await, 403);
    assert_eq!(scheduler.announce(&b, "agent-b", &ticket_a, &own).await, 403);
    assert_eq!(scheduler.piece(&b, &ticket_a).await, 403);
    assert_eq!(
        scheduler.piece(&anonymous, &ticket_a).await,
        403,
        "a sniffed ticket buys nothing from an edge"
    );
    assert_eq!(scheduler.piece(&a, &ticket_a).await, 200);
    assert_eq!(scheduler.leave(&a, "agent-a", &ticket_a).await, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_can_point_agents_at_a_parent_of_their_choosing() {
    let pki = Pki::new().unwrap();
    let (registry, image, edge) = image_behind_edge(Some(pki.clone())).await;

    // A fake parent, counting whoever comes.
    let fake = TcpListener::bind("127.0.0.77:0").await.unwrap();
    let fake_url = format!("http://{}", fake.local_addr().unwrap());
    let visits = Arc::new(AtomicUsize::new(0));
    let counted = visits.clone();
    tokio::spawn(async move {
        while let Ok((_, _)) = fake.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });

    // An intruder with a genuine certificate (for its own address) tries to register the fake
    // parent, holding every piece, for every layer.
    let intruder = client(&pki, Some(&pki.issue("intruder", &["127.0.0.1"]).unwrap()));
    for blob in &image.blobs {
        let scheduler = Scheduler {
            edge: &edge,
            task: &blob.digest,
        };
        let (ticket, pieces) = scheduler.ticket(&intruder).await;
        let mut all = damselfly_core::Bitfield::new(pieces);
        (0..pieces).for_each(|i| all.set(i));
        let mut body = announcement(&fake_url, pieces);
        body["pieces"] = serde_json::to_value(&all).unwrap();
        assert_eq!(
            scheduler.announce(&intruder, "intruder", &ticket, &body).await,
            403
        );
    }

    let mut agents = Vec::new();
    for i in 0..2 {
        let mut options = AgentOptions::host(i, "eu/z1/r1", edge.url(), &registry);
        options.tls = Some(pki.clone());
        agents.push(Agent::start(agent_binary(), options).await.unwrap());
    }
    let out = tempfile::tempdir().unwrap();
    let (out0, out1) = (out.path().join("0"), out.path().join("1"));
    let (first, second) = tokio::join!(
        pull(&registry, &agents[0], &out0),
        pull(&registry, &agents[1], &out1)
    );
    assert_eq!(
        (first, second),
        (image.top_digest.clone(), image.top_digest.clone())
    );
    assert_eq!(
        visits.load(Ordering::SeqCst),
        0,
        "an agent sent a request to the fake parent"
    );
}

#[tokio::test]
async fn an_edge_without_tls_hands_out_no_keys_unless_started_insecure() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let image = image(&registry).await;
    let layer = image.largest_blob().digest.clone();
    let mut options = EdgeOptions::for_registry(&registry.addr(), &registry.url());
    // Plain HTTP, and the lab switch left off.
    options.insecure = false;
    let edge = Edge::start(&edge_binary(), options).await.unwrap();
    let answer = reqwest::get(format!("{}/api/v1/tasks/{layer}?repo=demo/trust", edge.url()))
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert_eq!(edge.metrics().await.unwrap().get("damselfly_edge_insecure"), 0.0);

    let lab = edge_in_front_of(&registry).await;
    let answer = reqwest::get(format!("{}/api/v1/tasks/{layer}?repo=demo/trust", lab.url()))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(lab.metrics().await.unwrap().get("damselfly_edge_insecure"), 1.0);
    assert!(lab.log_tail().contains("INSECURE"), "a lab edge says so at start");
}
