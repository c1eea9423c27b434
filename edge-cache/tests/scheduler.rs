//! The scheduler: agents announce pieces, parents come back ranked by locality; with Redis,
//! two edges of a region share one view (an announcement at one edge is seen at the other).

mod common;

use common::{get_json, layers, Origin, MIB};
use damselfly_test_support::edge::Edge;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::redis::Redis;
use serde_json::json;

/// Where a peer of `digest` announces itself to `edge` (PUT) and leaves (DELETE).
fn peer_url(edge: &Edge, digest: &str, host: &str) -> String {
    format!("{}/api/v1/tasks/{digest}/peers/{host}", edge.url())
}

fn parents_url(edge: &Edge, digest: &str) -> String {
    format!("{}/api/v1/tasks/{digest}/parents", edge.url())
}

/// Asks `edge` for the parents of `digest` as peer `me` of rack eu/z1/r1, holding `ticket`.
fn parents_for_me(
    client: &reqwest::Client,
    edge: &Edge,
    digest: &str,
    ticket: &str,
) -> reqwest::RequestBuilder {
    client
        .get(parents_url(edge, digest))
        .query(&[("host_id", "me"), ("location", "eu/z1/r1")])
        .header("x-damselfly-ticket", ticket)
}

fn announcement(upload: &str, location: &str, pieces: &serde_json::Value) -> serde_json::Value {
    json!({"upload_url": upload, "location": location, "pieces": pieces, "uploads_active": 0, "upload_slots": 4})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_share_peers_through_redis_and_rank_by_location() {
    let origin = Origin::start().await;
    let redis = Redis::start().await.unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("cluster.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-shared-by-the-region").unwrap();
    // A cluster secret readable by others is refused: readable by its owner only.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut edges = Vec::new();
    for _ in 0..2 {
        let mut options = origin.edge_options();
        options.top_toml = format!(
            "redis = \"{}\"\ncluster_secret_file = \"{}\"",
            redis.url(),
            secret.display()
        );
        edges.push(Edge::start(common::edge_binary(), options).await.unwrap());
    }
    let image = origin.push(layers(&[2 * MIB], "sched"), "demo/sched:v1").await;
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let url = format!("{}/api/v1/tasks/{}?repo=demo/sched", edges[0].url(), layer.digest);
    let task = get_json(&client, &url).await;
    let ticket = task["ticket"].as_str().unwrap().to_string();
    // The table lists pieces as they are sealed; the count comes from the layout.
    let layout: damselfly_core::PieceLayout = serde_json::from_value(task.clone()).unwrap();
    let pieces = layout.count();
    // Every peer holds piece 0, in the bitfield's own wire form.
    let mut held = damselfly_core::Bitfield::new(pieces);
    held.set(0);
    let some = serde_json::to_value(&held).unwrap();
    // One of them is also taking piece 1 from the edge.
    let mut taking = damselfly_core::Bitfield::new(pieces);
    taking.set(1);

    // Three peers announce at edge 0: same rack, same zone, other zone.
    for (host, location) in [
        ("same-rack", "eu/z1/r1"),
        ("same-zone", "eu/z1/r2"),
        ("far", "eu/z2/r9"),
    ] {
        let r = client
            .put(peer_url(&edges[0], &layer.digest, host))
            .header("x-damselfly-ticket", &ticket)
            .json(&{
                let mut a = announcement(&format!("http://{host}:1"), location, &some);
                if host == "far" {
                    a["fetching"] = serde_json::to_value(&taking).unwrap();
                }
                a
            })
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
    // The parents an edge names to a peer in rack eu/z1/r1.
    let parents_at = |edge: &Edge| {
        let request = parents_for_me(&client, edge, &layer.digest, &ticket).send();
        async move {
            let parents: serde_json::Value = request.await.unwrap().json().await.unwrap();
            parents
        }
    };
    // Edge 1 (same Redis, same cluster secret: it accepts edge 0's ticket) sees them, ranked.
    let parents = parents_at(&edges[1]).await;
    let order: Vec<&str> = parents["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["host_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["same-rack", "same-zone", "far"]);
    // What a peer is taking from the edge is passed on (others wait for it), and only then.
    let fetching: Vec<Option<damselfly_core::Bitfield>> = parents["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.get("fetching")
                .map(|f| serde_json::from_value(f.clone()).unwrap())
        })
        .collect();
    assert_eq!(fetching, vec![None, None, Some(taking.clone())]);

    // Agents ask for tables and parents several times a second: those answers are gzipped for
    // clients that accept it. Pieces never are (sealed bytes do not compress).
    let gzip_get = |url: String| {
        client
            .get(url)
            .query(&[
                ("host_id", "me"),
                ("location", "eu/z1/r1"),
                ("repo", "demo/sched"),
            ])
            .header("x-damselfly-ticket", &ticket)
            .header("accept-encoding", "gzip")
            .send()
    };
    for path in ["parents", ""] {
        let url = format!("{}/api/v1/tasks/{}/{path}", edges[1].url(), layer.digest);
        let r = gzip_get(url.trim_end_matches('/').to_string()).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-encoding"], "gzip", "{path}");
        let body = r.bytes().await.unwrap();
        assert_eq!(&body[..2], &[0x1f, 0x8b], "{path}: not a gzip stream");
    }
    let piece = gzip_get(format!("{}/pieces/{}/0", edges[0].url(), layer.digest))
        .await
        .unwrap();
    assert_eq!(piece.status(), 200);
    assert!(piece.headers().get("content-encoding").is_none());
    let sealed = piece.bytes().await.unwrap();
    let tag = damselfly_core::seal::TAG_LEN as u64;
    assert_eq!(
        sealed.len() as u64,
        layout.piece_length + tag,
        "piece 0: plaintext + GCM tag"
    );

    // A refresh names the hashes it holds and gets only the later ones.
    let task_url = format!("{}/api/v1/tasks/{}", edges[0].url(), layer.digest);
    let table_after = |known: Option<u64>| {
        let mut query = vec![("repo", "demo/sched".to_string())];
        query.extend(known.map(|k| ("known", k.to_string())));
        let request = client.get(&task_url).query(&query);
        async move {
            let t: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            t
        }
    };
    let mut full = table_after(None).await;
    while full["complete"] != true {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        full = table_after(None).await;
    }
    let all = full["pieces"].as_array().unwrap().clone();
    assert_eq!(all.len() as u64, pieces);
    assert!(full.get("pieces_from").is_none());
    let later = table_after(Some(3)).await;
    assert_eq!(later["pieces_from"], 3);
    assert_eq!(later["pieces"].as_array().unwrap()[..], all[3..]);
    let none = table_after(Some(pieces + 10)).await;
    assert_eq!(none["pieces_from"], pieces);
    assert!(none["pieces"].as_array().unwrap().is_empty());

    // Leaving removes a peer; no ticket, no scheduler.
    let r = client
        .delete(peer_url(&edges[1], &layer.digest, "same-rack"))
        .header("x-damselfly-ticket", &ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let parents = parents_at(&edges[0]).await;
    assert_eq!(parents["parents"].as_array().unwrap().len(), 2);
    let r = client
        .get(format!(
            "{}/api/v1/tasks/{}/parents?host_id=me&location=eu/z1/r1",
            edges[0].url(),
            layer.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// `limits.piece_rate_limit` paces all piece sends together: pieces cannot arrive faster than
/// it allows (a lower bound only; how much slower a loaded machine is does not matter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piece_sends_keep_to_the_rate_limit() {
    let origin = Origin::start().await;
    let rate = 512 * 1024;
    let mut options = origin.edge_options();
    options.limits_toml = format!("piece_rate_limit = \"{rate}\"");
    let edge = origin.edge_with(options).await;
    let image = origin.push(layers(&[2 * MIB], "paced"), "demo/paced:v1").await;
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let piece = |index: u64| {
        let url = format!("{}/pieces/{}/{index}", edge.url(), layer.digest);
        let client = client.clone();
        async move {
            let r = client
                .get(url)
                .query(&[("repo", "demo/paced")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap().len() as u64
        }
    };
    // The blob is cached first, so only the pacing can slow the sends down.
    let r = client
        .get(format!("{}/v2/demo/paced/blobs/{}", edge.url(), layer.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len() as u64, layer.size);
    let started = std::time::Instant::now();
    let sent: u64 = futures::future::join_all((0..4).map(piece))
        .await
        .into_iter()
        .sum();
    let took = started.elapsed().as_secs_f64();
    // Nothing is saved up beforehand: all but the first chunk wait for their turn.
    let least = (sent - 16 * 1024) as f64 / rate as f64;
    assert!(
        took >= least,
        "{sent} bytes in {took:.2} s, faster than {rate} B/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_waited_on_once_not_by_every_request() {
    let origin = Origin::start().await;
    let redis = Redis::start().await.unwrap();
    let mut options = origin.edge_options();
    options.top_toml = format!("redis = \"{}\"", redis.url());
    let edge = Edge::start(common::edge_binary(), options).await.unwrap();
    let image = origin.push(layers(&[MIB], "stopped"), "demo/stopped:v1").await;
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let ticket = edge
        .task(&client, "demo/stopped", &layer.digest)
        .await
        .unwrap()
        .ticket;
    let parents = || {
        let request = parents_for_me(&client, &edge, &layer.digest, &ticket).send();
        async move {
            let started = std::time::Instant::now();
            let status = request.await.unwrap().status();
            (status, started.elapsed())
        }
    };
    assert_eq!(parents().await.0, 200);

    // Stopped: its socket stays open and nothing answers.
    redis.pause().unwrap();
    let (status, first) = parents().await;
    assert!(status.is_server_error(), "{status}");
    let (status, second) = parents().await;
    assert!(status.is_server_error(), "{status}");
    redis.resume().unwrap();
    assert!(
        second < std::time::Duration::from_secs(1),
        "the first call waited {first:?} for Redis; the next should not wait, it took {second:?}"
    );
    // Back to normal once Redis answers again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if parents().await.0 == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// In process, the scheduler hands each piece nobody holds or takes to one asker at a time (to
/// take from the edge), and in a rack of 8 or more gives each asker its place in the rack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_nobody_holds_are_handed_to_one_asker_and_large_racks_get_places() {
    let origin = Origin::start().await;
    let edge = Edge::start(common::edge_binary(), origin.edge_options())
        .await
        .unwrap();
    let image = origin
        .push(layers(&[2 * MIB], "handout"), "demo/handout:v1")
        .await;
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let url = format!("{}/api/v1/tasks/{}?repo=demo/handout", edge.url(), layer.digest);
    let task = get_json(&client, &url).await;
    let ticket = task["ticket"].as_str().unwrap().to_string();
    let layout: damselfly_core::PieceLayout = serde_json::from_value(task.clone()).unwrap();
    let pieces = layout.count();
    assert!(pieces >= 8, "{pieces} pieces");
    let announce = |host: String, pieces_held: damselfly_core::Bitfield, taking: Option<u64>| {
        let mut a = announcement(&format!("http://{host}:1"), "eu/z1/r1", &json!(pieces_held));
        if let Some(i) = taking {
            let mut bits = damselfly_core::Bitfield::new(pieces);
            bits.set(i);
            a["fetching"] = json!(bits);
        }
        let request = client
            .put(peer_url(&edge, &layer.digest, &host))
            .header("x-damselfly-ticket", &ticket)
            .json(&a)
            .send();
        async move { assert_eq!(request.await.unwrap().status(), 204) }
    };
    let parents = |host: &str, room: Option<u32>| {
        let mut query = vec![
            ("host_id", host.to_string()),
            ("location", "eu/z1/r1".to_string()),
        ];
        if let Some(room) = room {
            query.push(("edge_room", room.to_string()));
            query.push(("known", pieces.to_string()));
        }
        let request = client
            .get(parents_url(&edge, &layer.digest))
            .query(&query)
            .header("x-damselfly-ticket", &ticket)
            .send();
        async move {
            let answer: serde_json::Value = request.await.unwrap().json().await.unwrap();
            answer
        }
    };
    // One peer holds piece 0, another takes piece 1 from the edge.
    let mut first = damselfly_core::Bitfield::new(pieces);
    first.set(0);
    announce("a".into(), first, None).await;
    announce("b".into(), damselfly_core::Bitfield::new(pieces), Some(1)).await;
    // Without edge room asked for (an agent from before hand-outs), none are handed out.
    let old = parents("c", None).await;
    assert!(old.get("edge_pieces").is_none(), "{old}");
    // Askers get the next pieces nobody holds or takes, in stream order, none twice.
    assert_eq!(parents("c", Some(2)).await["edge_pieces"], json!([2, 3]));
    assert_eq!(parents("d", Some(2)).await["edge_pieces"], json!([4, 5]));
    // A rack of two peers gets no places; of eight, each its own.
    assert!(parents("a", Some(0)).await.get("rack_place").is_none());
    for i in 0..6 {
        announce(format!("h{i}"), damselfly_core::Bitfield::new(pieces), None).await;
    }
    let mut places = std::collections::BTreeSet::new();
    for host in ["a", "b", "h0", "h1", "h2", "h3", "h4", "h5"] {
        let place = parents(host, Some(0)).await["rack_place"].clone();
        assert_eq!(place["of"], 8, "{host}: {place}");
        places.insert(place["index"].as_u64().unwrap());
    }
    assert_eq!(places.len(), 8, "{places:?}");
}
