//! Harbor's P2P Preheat driving the preheater as its "Dragonfly" provider, end to end: the
//! exact request bodies Harbor 2.11, 2.12 and 2.13+ send (the contract fixtures), a real
//! `docker-registry` holding the artifact, real edges, the real preheater process.
//!
//! Harbor cannot run here, so the fixtures are rewritten in exactly two fields: `url` (the
//! capture's `https://harbor.example.com/v2/library/nginx/manifests/1.25.3` becomes the local
//! registry's manifest URL) and `headers.Authorization` (Harbor's pull-only JWT becomes the local
//! registry's pull credential, Basic because `docker-registry` runs with htpasswd here). Every
//! other byte is as Harbor sends it.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::poll::{poll_until, Probe};
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::shape::assert_shape;
use serde_json::Value;

const PROVIDER_TOKEN: &str = "df-pat-0123456789abcdef";
const USER: &str = "harbor-core";
const PASSWORD: &str = "pull-only-s3cret";
const CAPTURED_URL: &str = "https://harbor.example.com/v2/library/nginx/manifests/1.25.3";

/// The fixture with only `url` and the registry token replaced (see the module comment).
fn harbor_request(fixture: &str, manifest_url: &str, authorization: &str) -> Vec<u8> {
    let jwt = {
        let v: Value = serde_json::from_str(fixture).unwrap();
        let headers = v["args"]["headers"]
            .as_object()
            .or(v["headers"].as_object())
            .cloned()
            .unwrap();
        headers["Authorization"].as_str().unwrap().to_string()
    };
    assert!(fixture.contains(CAPTURED_URL) && jwt.starts_with("Bearer eyJ"));
    fixture
        .replace(CAPTURED_URL, manifest_url)
        .replace(&jwt, authorization)
        .into_bytes()
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// Sends what Harbor's provider client sends: `Accept` always, `Content-Type` on POST.
async fn call(method: &str, url: &str, auth: Option<&str>, body: Option<Vec<u8>>) -> (u16, Value) {
    let client = loopback_client().unwrap();
    let mut request = match method {
        "POST" => client.post(url).header("content-type", "application/json"),
        _ => client.get(url),
    }
    .header("accept", "application/json");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn is_rfc3339(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[13] == b':' && b[19] == b'Z'
}

/// Harbor ≥ 2.12 decodes `{id int, created_at time, updated_at time, state}`: an integer id,
/// RFC3339 (or absent) times, and one of three states.
fn assert_harbor_decodes(job: &Value) {
    assert!(
        job["id"].as_i64().is_some_and(|id| id > 0),
        "id must be a JSON integer: {job}"
    );
    for key in ["created_at", "updated_at"] {
        assert!(job[key].is_null() || is_rfc3339(&job[key]), "{key}: {job}");
    }
    let state = job["state"].as_str().unwrap_or("");
    assert!(
        ["PENDING", "SUCCESS", "FAILURE"].contains(&state),
        "state {state:?}: {job}"
    );
}

struct Setup {
    registry: Registry,
    eu: damselfly_test_support::edge::Edge,
    us: damselfly_test_support::edge::Edge,
    preheater: Preheater,
    images: Vec<BuiltImage>,
}

impl Setup {
    async fn start(seeds: &[&str]) -> Setup {
        Self::start_with(seeds, "max_attempts = 2\n").await
    }

    /// `warm`: lines of the preheater's `[warm]` section.
    async fn start_with(seeds: &[&str], warm: &str) -> Setup {
        init_logging();
        let registry = Registry::start(RegistryOptions {
            htpasswd: Some((USER.into(), PASSWORD.into())),
            ..RegistryOptions::default()
        })
        .await
        .expect("registry");
        let mut images = Vec::new();
        for seed in seeds {
            let spec = ImageSpec::new(*seed, vec![MIB, MIB / 3]);
            images.push(
                registry
                    .push_image(spec, &format!("demo/{seed}:v1"))
                    .await
                    .unwrap(),
            );
        }
        let eu = start_edge(&registry.url()).await;
        let us = start_edge(&registry.url()).await;
        // Listed us first: Harbor's cluster ids come from [[harbor.clusters]], not list order.
        let edges = [("us", us.url()), ("eu", eu.url())];
        let preheater = Preheater::start(&PreheaterSetup {
            extra_top: format!(
                "[harbor]\nprovider_tokens = [\"{PROVIDER_TOKEN}\"]\nprovider_basic = [\"harbor:basic-pw\"]\n\
                 [[harbor.clusters]]\nid = 1\nregion = \"eu\"\n[[harbor.clusters]]\nid = 2\nregion = \"us\"\n"
            ),
            warm: warm.into(),
            ..PreheaterSetup::new(&registry, &edges)
        })
        .await;
        Setup {
            registry,
            eu,
            us,
            preheater,
            images,
        }
    }

    fn manifest_url(&self, seed: &str) -> String {
        format!("http://{}/v2/demo/{seed}/manifests/v1", self.registry.addr())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.preheater.url())
    }

    /// Polls like Harbor (every state seen must be one Harbor knows) until the job ends.
    async fn wait_oapi(&self, id: u64) -> Value {
        let url = self.url(&format!("/oapi/v1/jobs/{id}"));
        let bearer = format!("Bearer {PROVIDER_TOKEN}");
        poll_until(&format!("provider job {id}"), Duration::from_secs(60), || {
            let (url, bearer) = (url.clone(), bearer.clone());
            async move {
                let (status, job) = call("GET", &url, Some(&bearer), None).await;
                assert_eq!(status, 200, "{job}");
                assert_harbor_decodes(&job);
                Ok(match job["state"].as_str() {
                    Some("PENDING") => Probe::NotYet("PENDING".into()),
                    _ => Probe::Ready(job),
                })
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\npreheater log:\n{}", self.preheater.log_tail()))
    }

    async fn create_oapi(&self, body: Vec<u8>) -> Value {
        let (status, job) = call(
            "POST",
            &self.url("/oapi/v1/jobs"),
            Some(&format!("Bearer {PROVIDER_TOKEN}")),
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{job}\n{}", self.preheater.log_tail());
        assert_harbor_decodes(&job);
        assert_eq!(job["state"], "PENDING");
        assert_shape(&job, &fixture("dragonfly_job_create_response.json"), "create");
        job
    }
}

fn fixture(name: &str) -> Value {
    let text = match name {
        "dragonfly_job_create_response.json" => include_str!("fixtures/dragonfly_job_create_response.json"),
        "dragonfly_job_success_response.json" => include_str!("fixtures/dragonfly_job_success_response.json"),
        _ => include_str!("fixtures/dragonfly_job_failure_response.json"),
    };
    serde_json::from_str(text).unwrap()
}

fn blob_urls(job: &Value, cluster: u64, list: &str) -> Vec<String> {
    let results = job["result"]["job_states"][0]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    results
        .iter()
        .filter(|r| r["scheduler_cluster_id"] == cluster)
        .flat_map(|r| r[list].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["url"].as_str().map(str::to_string))
        .filter(|u| u.contains("/blobs/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harbor_2_12_and_2_13_requests_warm_the_chosen_edges() {
    let s = Setup::start(&["oapi-all", "oapi-single"]).await;
    let credential = basic(USER, PASSWORD);

    // Harbor ≥ 2.13, scope all_peers, clusters [1, 2]: both regions.
    let body = harbor_request(
        include_str!("fixtures/harbor_preheat_dragonfly_job_request.json"),
        &s.manifest_url("oapi-all"),
        &credential,
    );
    let created = s.create_oapi(body).await;
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["args"]["url"], s.manifest_url("oapi-all").as_str());
    assert_eq!(created["args"]["scope"], "all_peers");
    assert!(!created.to_string().contains(PASSWORD) && !created.to_string().contains("Basic "));
    let done = s.wait_oapi(id).await;
    assert_eq!(done["state"], "SUCCESS", "{done:#}");
    assert_shape(&done, &fixture("dragonfly_job_success_response.json"), "success");
    assert_eq!(done["result"]["job_states"][0]["error"], "");
    let img = &s.images[0];
    for (cluster, edge) in [(1, &s.eu), (2, &s.us)] {
        let cached = blob_urls(&done, cluster, "success_tasks");
        assert!(blob_urls(&done, cluster, "failure_tasks").is_empty(), "{done:#}");
        for blob in &img.blobs {
            let url = format!(
                "http://{}/v2/demo/oapi-all/blobs/{}",
                s.registry.addr(),
                blob.digest
            );
            assert!(cached.contains(&url), "cluster {cluster} lacks {url}: {done:#}");
            assert_eq!(edge_state(&edge.url(), &blob.digest).await, "cached");
        }
    }

    // Harbor 2.12, scope single_peer, no clusters: one edge, the first configured region.
    let body = harbor_request(
        include_str!("fixtures/harbor_preheat_dragonfly_job_request_v2.12.json"),
        &s.manifest_url("oapi-single"),
        &credential,
    );
    let created = s.create_oapi(body).await;
    assert_eq!(created["args"]["scope"], "single_seed_peer");
    assert_eq!(
        created["scheduler_clusters"].as_array().map(Vec::len),
        Some(1),
        "{created}"
    );
    let done = s.wait_oapi(created["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "SUCCESS", "{done:#}");
    let single = &s.images[1];
    for blob in &single.blobs {
        assert_eq!(edge_state(&s.us.url(), &blob.digest).await, "cached");
        assert_eq!(
            edge_state(&s.eu.url(), &blob.digest).await,
            "absent",
            "single_peer warmed a second edge"
        );
    }

    // The job API shows the job but never Harbor's credential.
    let jobs = s.preheater.jobs().await;
    let ours: Vec<&Value> = jobs.iter().filter(|j| j["source"] == "harbor-p2p").collect();
    assert_eq!(ours.len(), 2);
    assert!(ours.iter().all(|j| j.get("authorization").is_none()), "{ours:?}");

    // A restart keeps the integer ids answering.
    let mut preheater = s.preheater;
    preheater.kill();
    preheater.start_again().await;
    let (status, again) = call(
        "GET",
        &format!("{}/oapi/v1/jobs/{id}", preheater.url()),
        Some(&format!("Bearer {PROVIDER_TOKEN}")),
        None,
    )
    .await;
    assert_eq!(
        (status, again["state"].as_str()),
        (200, Some("SUCCESS")),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harbor_2_11_preheats_and_failures_are_reported() {
    let s = Setup::start(&["legacy", "broken"]).await;
    let bearer = format!("Bearer {PROVIDER_TOKEN}");
    let credential = basic(USER, PASSWORD);

    // Harbor 2.1–2.11: the Dragonfly 1.x API.
    let body = harbor_request(
        include_str!("fixtures/harbor_preheat_dragonfly_v1_request.json"),
        &s.manifest_url("legacy"),
        &credential,
    );
    let (status, created) = call("POST", &s.url("/preheats"), Some(&bearer), Some(body)).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"]
        .as_str()
        .expect("id is a string in the 1.x API")
        .to_string();
    let url = s.url(&format!("/preheats/{id}"));
    let status_doc = poll_until("legacy preheat", Duration::from_secs(60), || {
        let (url, bearer) = (url.clone(), bearer.clone());
        async move {
            let (code, doc) = call("GET", &url, Some(&bearer), None).await;
            assert_eq!(code, 200, "{doc}");
            let status = doc["status"].as_str().unwrap_or("").to_string();
            assert!(
                ["WAITING", "RUNNING", "SUCCESS", "FAILED"].contains(&status.as_str()),
                "{doc}"
            );
            Ok(if status == "WAITING" || status == "RUNNING" {
                Probe::NotYet(status)
            } else {
                Probe::Ready(doc)
            })
        }
    })
    .await
    .unwrap();
    assert_eq!(status_doc["status"], "SUCCESS", "{status_doc}");
    assert_eq!(status_doc["id"], id.as_str());
    let keys: Vec<&String> = status_doc.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "status", "startTime", "finishTime", "errorMsg"]);
    for blob in &s.images[0].blobs {
        assert_eq!(edge_state(&s.eu.url(), &blob.digest).await, "cached");
        assert_eq!(edge_state(&s.us.url(), &blob.digest).await, "cached");
    }

    // A layer the registry cannot serve: the job ends FAILURE and says which and why.
    let broken = &s.images[1];
    let layer = broken.largest_blob();
    let hex = layer.digest.trim_start_matches("sha256:");
    let data = s.registry.data_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    std::fs::remove_file(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let body = harbor_request(
        include_str!("fixtures/harbor_preheat_dragonfly_job_request_minimal.json"),
        &s.manifest_url("broken"),
        &credential,
    );
    let created = s.create_oapi(body).await;
    let failed = s.wait_oapi(created["id"].as_u64().unwrap()).await;
    assert_eq!(failed["state"], "FAILURE", "{failed:#}");
    assert_shape(
        &failed,
        &fixture("dragonfly_job_success_response.json"),
        "failure",
    );
    assert_shape(
        &failed["result"]["job_states"][0]["error"],
        &fixture("dragonfly_job_failure_response.json")["result"]["job_states"][0]["error"],
        "error",
    );
    let error = failed["result"]["job_states"][0]["error"].as_str().unwrap();
    assert!(error.contains(&layer.digest), "{error}");
    let failures = failed["result"]["job_states"][0]["results"][0]["failure_tasks"]
        .as_array()
        .unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["url"].as_str().unwrap().ends_with(&layer.digest)
                && !f["description"].as_str().unwrap().is_empty()),
        "{failed:#}"
    );

    // A token the registry refuses: FAILURE with the registry's answer.
    let body = harbor_request(
        include_str!("fixtures/harbor_preheat_dragonfly_job_request.json"),
        &s.manifest_url("legacy"),
        &basic(USER, "wrong"),
    );
    let created = s.create_oapi(body).await;
    let refused = s.wait_oapi(created["id"].as_u64().unwrap()).await;
    assert_eq!(refused["state"], "FAILURE");
    let error = refused["result"]["job_states"][0]["error"].as_str().unwrap();
    assert!(error.contains("401"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_api_checks_credentials_and_input() {
    let s = Setup::start(&[]).await;
    let fixture_2_13 = include_str!("fixtures/harbor_preheat_dragonfly_job_request.json");
    let body = harbor_request(fixture_2_13, &s.manifest_url("none"), &basic(USER, PASSWORD));

    // OAUTH (Bearer) and BASIC as Harbor sends them; NONE is refused once a credential is set.
    for path in ["/healthy", "/_ping"] {
        for (auth, want) in [
            (Some(format!("Bearer {PROVIDER_TOKEN}")), 200),
            (Some(basic("harbor", "basic-pw")), 200),
            (None, 401),
            (Some("Bearer wrong".to_string()), 401),
            (Some(format!("Bearer {PROVIDER_TOKEN}x")), 401),
            (Some(basic("harbor", "nope")), 401),
        ] {
            let (status, _) = call("GET", &s.url(path), auth.as_deref(), None).await;
            assert_eq!(status, want, "{path} with {auth:?}");
        }
    }
    for (path, body) in [("/oapi/v1/jobs", body.clone()), ("/preheats", body.clone())] {
        let (status, answer) = call("POST", &s.url(path), Some("Bearer wrong"), Some(body)).await;
        assert_eq!(status, 401, "{path}: {answer}");
    }
    assert!(
        s.preheater.jobs().await.is_empty(),
        "a refused request created a job"
    );

    let bearer = format!("Bearer {PROVIDER_TOKEN}");
    let jobs_url = s.url("/oapi/v1/jobs");
    let post = |body: Vec<u8>| call("POST", &jobs_url, Some(&bearer), Some(body));
    // A cluster id no region answers to, a registry that is not configured, a truncated body.
    let unknown_cluster = String::from_utf8(body.clone()).unwrap().replace("[1,2]", "[1,7]");
    let (status, answer) = post(unknown_cluster.into_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("cluster 7"),
        "{answer}"
    );
    let elsewhere = harbor_request(
        fixture_2_13,
        "https://elsewhere.example.com/v2/a/b/manifests/v1",
        "Bearer x",
    );
    let (status, answer) = post(elsewhere).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("elsewhere.example.com"),
        "{answer}"
    );
    let (status, _) = post(body[..body.len() / 2].to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = post(vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!(status, 413);
    assert!(s.preheater.jobs().await.is_empty());

    // Ids Harbor never got.
    for id in ["12345", "abc", "-1"] {
        let (status, _) = call("GET", &s.url(&format!("/oapi/v1/jobs/{id}")), Some(&bearer), None).await;
        assert_eq!(status, 404, "{id}");
        let (status, _) = call("GET", &s.url(&format!("/preheats/{id}")), Some(&bearer), None).await;
        assert_eq!(status, 404, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preheat_cut_short_by_a_restart_resumes() {
    // Many attempts: the job keeps retrying while its edge is down instead of failing.
    let mut s = Setup::start_with(&["resume"], "max_attempts = 200\n").await;
    s.us.kill().unwrap();
    // Harbor ≥ 2.13 without scope or clusters: one edge, the first configured ("us").
    let body = harbor_request(
        include_str!("fixtures/harbor_preheat_dragonfly_job_request_minimal.json"),
        &s.manifest_url("resume"),
        &basic(USER, PASSWORD),
    );
    let created = s.create_oapi(body).await;
    let id = created["id"].as_u64().unwrap();

    // Resolved (so Harbor's token was used and stored) and stuck on the dead edge.
    let preheater = &s.preheater;
    poll_until("job resolved and warming", Duration::from_secs(30), || async {
        let jobs = preheater.jobs().await;
        let job = jobs
            .iter()
            .find(|j| j["source"] == "harbor-p2p")
            .cloned()
            .unwrap_or_default();
        Ok(
            match (job["state"].as_str(), job["items"].as_array().map(Vec::len)) {
                (Some("running"), Some(n)) if n > 0 => Probe::Ready(()),
                other => Probe::NotYet(format!("{other:?}")),
            },
        )
    })
    .await
    .unwrap();
    let (_, pending) = call(
        "GET",
        &s.url(&format!("/oapi/v1/jobs/{id}")),
        Some(&format!("Bearer {PROVIDER_TOKEN}")),
        None,
    )
    .await;
    assert_eq!(pending["state"], "PENDING", "{pending}");

    s.preheater.kill();
    s.us.restart().await.unwrap();
    s.preheater.start_again().await;
    let done = s.wait_oapi(id).await;
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", s.preheater.log_tail());
    for blob in &s.images[0].blobs {
        assert_eq!(edge_state(&s.us.url(), &blob.digest).await, "cached");
    }
}
