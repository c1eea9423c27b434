//! `harbor-integration register` against a stand-in for Harbor's REST API (Harbor itself cannot
//! run here). The stand-in keeps state the way Harbor does — ids, names unique per kind,
//! pagination, Basic auth, `{"errors":[…]}` answers — validates what Harbor validates, and records
//! every request so the test can check the shapes sent and that a second run changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "Harbor12345");
const PROJECT: &str = "library";
const PROJECT_ID: i64 = 3;

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    body: Value,
}

#[derive(Default)]
struct Harbor {
    requests: Vec<Recorded>,
    webhooks: Vec<Value>,
    instances: Vec<Value>,
    policies: Vec<Value>,
    next_id: i64,
}

type Shared = Arc<Mutex<Harbor>>;

/// Harbor's error answer, kept small so `Result`s carrying it stay cheap.
type Refusal = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: &str, message: &str) -> Refusal {
    (
        status,
        Json(json!({"errors": [{"code": code, "message": message}]})),
    )
}

fn authorized(headers: &HeaderMap) -> bool {
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1));
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Basic {expected}"))
}

/// Records the request, checks credentials and the project, and parses a JSON body.
fn admit(
    h: &mut Harbor,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Refusal> {
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &e.to_string()))?
    };
    h.requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        body: parsed.clone(),
    });
    if !authorized(headers) {
        return Err(error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "unauthorized"));
    }
    if uri.path().starts_with("/api/v2.0/projects/")
        && !uri.path().starts_with(&format!("/api/v2.0/projects/{PROJECT}"))
    {
        return Err(error(StatusCode::NOT_FOUND, "NOT_FOUND", "project not found"));
    }
    Ok(parsed)
}

fn page(items: &[Value], q: &HashMap<String, String>) -> Vec<Value> {
    let size: usize = q.get("page_size").and_then(|s| s.parse().ok()).unwrap_or(10);
    let page: usize = q.get("page").and_then(|s| s.parse().ok()).unwrap_or(1);
    items.iter().skip((page - 1) * size).take(size).cloned().collect()
}

fn require(body: &Value, fields: &[&str]) -> Result<(), Refusal> {
    for f in fields {
        if body.get(f).is_none_or(|v| v.is_null() || v == "") {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("{f} is required"),
            ));
        }
    }
    Ok(())
}

/// Harbor keeps its own fields (id, timestamps) over whatever the client sent.
fn store(
    list: &mut Vec<Value>,
    name_of: &str,
    mut item: Value,
    id: i64,
    extra: Value,
) -> Result<(), Refusal> {
    let name = item["name"].clone();
    let existing = list.iter().position(|i| i[name_of] == name);
    item["id"] = json!(id);
    for (k, v) in extra.as_object().unwrap() {
        item[k] = v.clone();
    }
    match existing {
        Some(_) => Err(error(StatusCode::CONFLICT, "CONFLICT", "name already exists")),
        None => {
            list.push(item);
            Ok(())
        }
    }
}

async fn project(State(s): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut h = s.lock().unwrap();
    match admit(&mut h, &method, &uri, &headers, &Bytes::new()) {
        Ok(_) => {
            Json(json!({"project_id": PROJECT_ID, "name": PROJECT, "owner_name": "admin", "repo_count": 1}))
                .into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// The objects `register` manages, each a list in the stand-in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook,
    Instance,
    Policy,
}

impl Kind {
    fn of(path: &str) -> Kind {
        if path.contains("/webhook/policies") {
            Kind::Webhook
        } else if path.contains("/p2p/preheat/instances") {
            Kind::Instance
        } else {
            Kind::Policy
        }
    }

    fn list(self, h: &mut Harbor) -> &mut Vec<Value> {
        match self {
            Kind::Webhook => &mut h.webhooks,
            Kind::Instance => &mut h.instances,
            Kind::Policy => &mut h.policies,
        }
    }

    /// What Harbor checks before it creates one.
    fn validate(self, h: &Harbor, body: &Value) -> Result<(), Refusal> {
        match self {
            Kind::Webhook => validate_webhook(body),
            Kind::Instance => validate_instance(body),
            Kind::Policy => validate_policy(h, body),
        }
    }

    /// What Harbor adds on creation.
    fn server_fields(self) -> Value {
        match self {
            Kind::Webhook => {
                json!({"project_id": PROJECT_ID, "creator": "admin", "creation_time": "2024-03-01T10:00:00.000Z"})
            }
            Kind::Instance => json!({"status": "Healthy", "setup_timestamp": 1709287200}),
            Kind::Policy => json!({"creation_time": "2024-03-01T10:00:00.000Z"}),
        }
    }

    /// Whether `item` is the one the last segment of an update's path names: webhook policies
    /// by id, the others by name.
    fn is_named(self, item: &Value, key: &str) -> bool {
        match self {
            Kind::Webhook => key.parse::<i64>().is_ok_and(|id| item["id"] == id),
            Kind::Instance | Kind::Policy => item["name"] == key,
        }
    }

    fn not_found(self) -> &'static str {
        match self {
            Kind::Instance => "instance not found",
            Kind::Webhook | Kind::Policy => "policy not found",
        }
    }
}

/// `GET` lists a page of the path's kind of object, `POST` creates one.
async fn list_or_create(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut h = s.lock().unwrap();
    let body = match admit(&mut h, &method, &uri, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let kind = Kind::of(uri.path());
    if method == Method::GET {
        return Json(page(kind.list(&mut h), &q)).into_response();
    }
    if let Err(r) = kind.validate(&h, &body) {
        return r.into_response();
    }
    h.next_id += 1;
    let id = h.next_id;
    match store(kind.list(&mut h), "name", body, id, kind.server_fields()) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(r) => r.into_response(),
    }
}

/// `PUT` replaces an object, keeping its id (Harbor validates only a preheat policy again).
async fn update(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let mut h = s.lock().unwrap();
    let mut body = match admit(&mut h, &method, &uri, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let kind = Kind::of(uri.path());
    if kind == Kind::Policy {
        if let Err(r) = validate_policy(&h, &body) {
            return r.into_response();
        }
    }
    let key = params.last().map_or("", |(_, value)| value.as_str());
    let Some(slot) = kind.list(&mut h).iter_mut().find(|i| kind.is_named(i, key)) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", kind.not_found()).into_response();
    };
    body["id"] = slot["id"].clone();
    if kind == Kind::Webhook {
        body["project_id"] = json!(PROJECT_ID);
    }
    *slot = body;
    StatusCode::OK.into_response()
}

fn validate_webhook(body: &Value) -> Result<(), Refusal> {
    require(body, &["name", "event_types", "targets"])?;
    if !["http", "slack"].contains(&body["targets"][0]["type"].as_str().unwrap_or("")) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "unsupported target type",
        ));
    }
    Ok(())
}

fn validate_instance(body: &Value) -> Result<(), Refusal> {
    require(body, &["name", "vendor", "endpoint", "auth_mode"])?;
    if !["dragonfly", "kraken"].contains(&body["vendor"].as_str().unwrap_or(""))
        || !["NONE", "BASIC", "OAUTH", "CUSTOM"].contains(&body["auth_mode"].as_str().unwrap_or(""))
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "bad vendor or auth_mode",
        ));
    }
    Ok(())
}

fn validate_policy(h: &Harbor, body: &Value) -> Result<(), Refusal> {
    require(body, &["name", "provider_id", "filters", "trigger"])?;
    let bad = |m: &str| Err(error(StatusCode::BAD_REQUEST, "BAD_REQUEST", m));
    if body["project_id"] != PROJECT_ID {
        return bad("project_id does not match");
    }
    if !h.instances.iter().any(|i| i["id"] == body["provider_id"]) {
        return bad("provider not found");
    }
    for field in ["filters", "trigger"] {
        if body[field]
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .is_none()
        {
            return bad(&format!("{field} must be a JSON document in a string"));
        }
    }
    Ok(())
}

async fn start_harbor() -> (SocketAddr, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/api/v2.0/projects/{project}", get(project))
        .route(
            "/api/v2.0/projects/{project}/webhook/policies",
            get(list_or_create).post(list_or_create),
        )
        .route("/api/v2.0/projects/{project}/webhook/policies/{id}", put(update))
        .route(
            "/api/v2.0/p2p/preheat/instances",
            get(list_or_create).post(list_or_create),
        )
        .route("/api/v2.0/p2p/preheat/instances/{name}", put(update))
        .route(
            "/api/v2.0/projects/{project}/preheat/policies",
            get(list_or_create).post(list_or_create),
        )
        .route(
            "/api/v2.0/projects/{project}/preheat/policies/{name}",
            put(update),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn register(harbor: SocketAddr, password: &str, extra: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_harbor-integration"))
        .arg("register")
        .args(["--harbor", &format!("http://{harbor}"), "--project", PROJECT])
        .args(["--preheater", "http://preheater.internal:5090"])
        .args(["--scope", "all_peers", "--cluster-id", "1,2"])
        .args(extra)
        .env("HARBOR_USERNAME", ADMIN.0)
        .env("HARBOR_PASSWORD", password)
        .env("DAMSELFLY_HARBOR_WEBHOOK_AUTH", "Bearer wh-7f3c9a1e2b")
        .env("DAMSELFLY_HARBOR_PROVIDER_TOKEN", "df-pat-0123456789abcdef")
        .env_remove("HARBOR_URL")
        .output()
        .await
        .expect("run harbor-integration");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn writes(h: &Shared) -> Vec<Recorded> {
    h.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect()
}

fn clear(h: &Shared) {
    h.lock().unwrap().requests.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_creates_once_then_changes_nothing() {
    let (addr, harbor) = start_harbor().await;

    let first = register(addr, ADMIN.1, &[]).await;
    assert!(first.ok, "{}{}", first.stdout, first.stderr);
    assert_eq!(first.stdout.matches(": created").count(), 3, "{}", first.stdout);
    let sent = writes(&harbor);
    let paths: Vec<(&str, &str)> = sent
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST", "/api/v2.0/projects/library/webhook/policies"),
            ("POST", "/api/v2.0/p2p/preheat/instances"),
            ("POST", "/api/v2.0/projects/library/preheat/policies"),
        ]
    );

    // The webhook policy has the shape of Harbor's own (the contract fixture), field for field.
    let fixture: Value = serde_json::from_str(include_str!("fixtures/harbor_webhook_policy.json")).unwrap();
    let webhook = &sent[0].body;
    for key in fixture.as_object().unwrap().keys() {
        assert!(
            webhook.get(key).is_some(),
            "webhook policy lacks {key}: {webhook}"
        );
    }
    let target_keys = |v: &Value| {
        v["targets"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(target_keys(webhook), target_keys(&fixture));
    assert_eq!(
        webhook["targets"][0]["address"],
        "http://preheater.internal:5090/webhooks/harbor"
    );
    assert_eq!(webhook["targets"][0]["auth_header"], "Bearer wh-7f3c9a1e2b");
    assert_eq!(webhook["targets"][0]["payload_format"], "CloudEvents");
    assert_eq!(webhook["event_types"], json!(["PUSH_ARTIFACT"]));

    let instance = &sent[1].body;
    assert_eq!(instance["vendor"], "dragonfly");
    assert_eq!(instance["endpoint"], "http://preheater.internal:5090");
    assert_eq!(instance["auth_mode"], "OAUTH");
    assert_eq!(instance["auth_info"], json!({"token": "df-pat-0123456789abcdef"}));

    let policy = &sent[2].body;
    let instance_id = harbor.lock().unwrap().instances[0]["id"].clone();
    assert_eq!(policy["provider_id"], instance_id);
    assert_eq!(policy["project_id"], PROJECT_ID);
    let filters: Value = serde_json::from_str(policy["filters"].as_str().unwrap()).unwrap();
    assert_eq!(
        filters,
        json!([{"type": "repository", "value": "**"}, {"type": "tag", "value": "**"}])
    );
    let trigger: Value = serde_json::from_str(policy["trigger"].as_str().unwrap()).unwrap();
    assert_eq!(trigger["type"], "event_based");
    assert_eq!(policy["scope"], "all_peers");
    assert_eq!(
        policy["extra_attrs"],
        json!({"scope": "all_peers", "cluster_ids": [1, 2]})
    );

    // Again: only reads.
    clear(&harbor);
    let second = register(addr, ADMIN.1, &[]).await;
    assert!(second.ok, "{}", second.stderr);
    assert_eq!(
        second.stdout.matches(": unchanged").count(),
        3,
        "{}",
        second.stdout
    );
    assert!(writes(&harbor).is_empty(), "{:?}", writes(&harbor));

    // Someone edits the instance in Harbor: exactly that object is put back.
    harbor.lock().unwrap().instances[0]["endpoint"] = json!("http://old-preheater:5090");
    clear(&harbor);
    let third = register(addr, ADMIN.1, &[]).await;
    assert!(third.ok, "{}", third.stderr);
    let sent = writes(&harbor);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].method.as_str(), sent[0].path.as_str()),
        ("PUT", "/api/v2.0/p2p/preheat/instances/damselfly")
    );
    assert_eq!(sent[0].body["endpoint"], "http://preheater.internal:5090");
    assert_eq!(sent[0].body["id"], instance_id);
    assert!(
        third
            .stdout
            .contains("p2p provider instance \"damselfly\": updated"),
        "{}",
        third.stdout
    );
    assert_eq!(harbor.lock().unwrap().instances.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_and_errors_are_clear() {
    let (addr, harbor) = start_harbor().await;
    assert!(register(addr, ADMIN.1, &[]).await.ok);
    clear(&harbor);

    // A changed webhook credential and tag filter, previewed: printed with secrets masked, not sent.
    let preview = register(
        addr,
        ADMIN.1,
        &["--dry-run", "--webhook-auth", "Bearer rotated", "--tags", "v*"],
    )
    .await;
    assert!(preview.ok, "{}", preview.stderr);
    assert!(writes(&harbor).is_empty(), "dry run wrote: {:?}", writes(&harbor));
    assert!(
        preview.stdout.contains(&format!(
            "PUT http://{addr}/api/v2.0/projects/library/webhook/policies/1"
        )),
        "{}",
        preview.stdout
    );
    assert!(preview.stdout.contains(&format!(
        "PUT http://{addr}/api/v2.0/projects/library/preheat/policies/damselfly-preheat"
    )));
    assert!(
        preview.stdout.contains("<redacted>") && !preview.stdout.contains("rotated"),
        "{}",
        preview.stdout
    );
    assert!(preview
        .stdout
        .contains("webhook policy \"damselfly-preheater\": would be updated"));
    assert!(preview
        .stdout
        .contains("p2p provider instance \"damselfly\": unchanged"));

    let denied = register(addr, "wrong", &[]).await;
    assert!(!denied.ok);
    assert!(
        denied.stderr.contains("401") && denied.stderr.contains("UNAUTHORIZED"),
        "{}",
        denied.stderr
    );

    let missing = register(addr, ADMIN.1, &["--project", "nope"]).await;
    assert!(!missing.ok);
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);

    let bad = register(addr, ADMIN.1, &["--auth-mode", "basic"]).await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("--provider-basic"), "{}", bad.stderr);

    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_harbor-integration"))
        .args(["register", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--harbor",
        "--project",
        "--preheater",
        "--dry-run",
        "HARBOR_USERNAME",
        "HARBOR_PASSWORD",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
