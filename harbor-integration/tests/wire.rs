//! Harbor's exact request bytes parse, and what the provider answers has the shape Harbor's
//! Dragonfly client decodes (the contract fixtures).

use damselfly_harbor::provider::{legacy, oapi, Api, Origin, Progress, ProviderJob, RegionOutcome};
use damselfly_harbor::Scope;
use damselfly_test_support::shape::assert_shape;
use serde_json::Value;

const JWT_PREFIX: &str = "Bearer eyJhbGciOiJSUzI1NiIs";

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn every_harbor_request_parses() {
    let r = oapi::parse(include_bytes!(
        "fixtures/harbor_preheat_dragonfly_job_request.json"
    ))
    .unwrap();
    assert_eq!(r.origin.scope, Scope::AllPeers);
    assert_eq!(r.cluster_ids, Some(vec![1, 2]));
    assert_eq!(
        (r.manifest.host.as_str(), r.manifest.repository.as_str()),
        ("harbor.example.com", "library/nginx")
    );
    assert_eq!(r.manifest.reference.to_string(), "1.25.3");
    assert!(r.authorization.unwrap().starts_with(JWT_PREFIX));

    let r = oapi::parse(include_bytes!(
        "fixtures/harbor_preheat_dragonfly_job_request_minimal.json"
    ))
    .unwrap();
    assert_eq!((r.origin.scope, r.cluster_ids), (Scope::SingleSeedPeer, None));

    let r = oapi::parse(include_bytes!(
        "fixtures/harbor_preheat_dragonfly_job_request_v2.12.json"
    ))
    .unwrap();
    assert_eq!((r.origin.scope, r.cluster_ids), (Scope::SingleSeedPeer, None));
    assert_eq!(r.origin.api, Api::Oapi);

    let r = legacy::parse(include_bytes!(
        "fixtures/harbor_preheat_dragonfly_v1_request.json"
    ))
    .unwrap();
    assert_eq!(r.origin.api, Api::Legacy);
    assert_eq!(r.origin.scope, Scope::AllSeedPeers);
    assert!(r.authorization.unwrap().starts_with(JWT_PREFIX));

    let text = include_str!("fixtures/harbor_preheat_dragonfly_job_request.json");
    assert!(oapi::parse(text.replace("\"preheat\"", "\"sync_peers\"").as_bytes()).is_err());
    assert!(oapi::parse(text.replace("all_peers", "most_peers").as_bytes()).is_err());
    assert!(oapi::parse(&text.as_bytes()[..100]).is_err());
}

fn job(progress: Progress, error: Option<&str>) -> ProviderJob {
    let blob = |d: &str| format!("https://harbor.example.com/v2/library/nginx/blobs/sha256:{d}");
    ProviderJob {
        id: 3_765_923_218_102_927_361,
        progress,
        created_at: 1_709_287_201_000,
        updated_at: 1_709_287_237_000,
        origin: Origin {
            api: Api::Oapi,
            url: "https://harbor.example.com/v2/library/nginx/manifests/1.25.3".into(),
            scope: Scope::AllPeers,
        },
        error: error.map(str::to_string),
        regions: vec![RegionOutcome {
            cluster_id: 1,
            region: "eu".into(),
            hostname: "edge.eu.internal".into(),
            ip: String::new(),
            cached: vec![blob("e1")],
            failed: error.iter().map(|e| (blob("88"), e.to_string())).collect(),
        }],
    }
}

#[test]
fn answers_have_the_shapes_harbor_decodes() {
    let pending = serde_json::to_value(oapi::JobResponse::from(&job(Progress::Running, None))).unwrap();
    assert_shape(
        &pending,
        &fixture(include_str!("fixtures/dragonfly_job_create_response.json")),
        "pending",
    );
    assert_eq!(pending["state"], "PENDING");
    assert!(pending["id"].is_i64(), "{pending}");
    assert_eq!(pending["created_at"], "2024-03-01T10:00:01Z");
    assert!(pending["result"].is_null());

    let success_fixture = fixture(include_str!("fixtures/dragonfly_job_success_response.json"));
    let success = serde_json::to_value(oapi::JobResponse::from(&job(Progress::Succeeded, None))).unwrap();
    assert_shape(&success, &success_fixture, "success");
    assert_eq!(success["state"], "SUCCESS");
    let results = &success["result"]["job_states"][0]["results"][0];
    assert_eq!(results["scheduler_cluster_id"], 1);
    assert_eq!(results["success_tasks"][0]["hostname"], "edge.eu.internal");

    let failure = serde_json::to_value(oapi::JobResponse::from(&job(
        Progress::Failed,
        Some("edge eu refused: 404"),
    )))
    .unwrap();
    assert_shape(&failure, &success_fixture, "failure");
    assert_shape(
        &failure["result"]["job_states"][0]["error"],
        &fixture(include_str!("fixtures/dragonfly_job_failure_response.json"))["result"]["job_states"][0]
            ["error"],
        "error",
    );
    assert_eq!(failure["state"], "FAILURE");
    assert_eq!(
        failure["result"]["job_states"][0]["error"],
        "edge eu refused: 404"
    );
    assert_eq!(
        failure["result"]["job_states"][0]["results"][0]["failure_tasks"][0]["description"],
        "edge eu refused: 404"
    );

    // The 1.x API: string ids, Dragonfly 1.x words and time format.
    let created = serde_json::to_value(legacy::Created::from(&job(Progress::Waiting, None))).unwrap();
    assert_shape(
        &created,
        &fixture(include_str!("fixtures/dragonfly_v1_preheat_create_response.json")),
        "created",
    );
    let waiting = serde_json::to_value(legacy::Status::from(&job(Progress::Waiting, None))).unwrap();
    assert_eq!(
        (waiting["status"].as_str(), waiting["finishTime"].as_str()),
        (Some("WAITING"), Some(""))
    );
    let done = serde_json::to_value(legacy::Status::from(&job(Progress::Succeeded, None))).unwrap();
    let status_fixture = fixture(include_str!("fixtures/dragonfly_v1_preheat_status_response.json"));
    for key in status_fixture.as_object().unwrap().keys() {
        assert!(done.get(key).is_some(), "status lacks {key}");
    }
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["startTime"], "2024-03-01 10:00:01");
    assert_eq!(done["finishTime"], "2024-03-01 10:00:37");
    let failed = serde_json::to_value(legacy::Status::from(&job(Progress::Failed, Some("x")))).unwrap();
    assert_eq!(
        (failed["status"].as_str(), failed["errorMsg"].as_str()),
        (Some("FAILED"), Some("x"))
    );
}
