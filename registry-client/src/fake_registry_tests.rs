//! The client against an in-process registry that speaks token auth: when it authenticates
//! itself, when it hands a challenge back, what it forwards as given, and how tokens are reused.
//! (The daemons' integration tests run real registries, but none has the edge or the preheater
//! authenticate with credentials of their own.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use damselfly_core::{Digest, Reference, RepositoryName};

use crate::{http_builder, Error, OwnAuth, RegistryClient, Request};

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
/// What the token endpoint hands out, and the registry accepts.
const GOOD_TOKEN: &str = "Bearer good";
/// `u:p`
const GOOD_BASIC: &str = "Basic dTpw";

#[derive(Default)]
struct Fake {
    token_requests: AtomicUsize,
    addr: std::sync::OnceLock<String>,
}

fn auth(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A manifest behind a Bearer challenge; it answers the Accept and Range it received in headers.
async fn bearer_manifest(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if auth(&headers) != GOOD_TOKEN {
        let realm = format!(
            r#"Bearer realm="http://{}/token",service="fake",scope="repository:private:pull""#,
            fake.addr.get().unwrap()
        );
        return (StatusCode::UNAUTHORIZED, [("www-authenticate", realm)]).into_response();
    }
    let accept: Vec<&str> = headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let range = headers.get("range").cloned();
    let mut response = (
        [
            (
                "content-type",
                "application/vnd.oci.image.manifest.v1+json".to_string(),
            ),
            ("docker-content-digest", Digest::of(MANIFEST).to_string()),
            ("x-accept", accept.join("|")),
        ],
        MANIFEST,
    )
        .into_response();
    if let Some(range) = range {
        response.headers_mut().insert("x-range", range);
    }
    response
}

async fn basic_manifest(headers: HeaderMap) -> Response {
    if auth(&headers) != GOOD_BASIC {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", r#"Basic realm="fake""#)],
        )
            .into_response();
    }
    // A generic Content-Type and a digest the body does not have.
    let claimed = Digest::of(b"something else").to_string();
    (
        [
            ("content-type", "application/json".to_string()),
            ("docker-content-digest", claimed),
        ],
        MANIFEST,
    )
        .into_response()
}

/// Tokens for the configured credentials only; anonymous callers are refused.
async fn token(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    fake.token_requests.fetch_add(1, Ordering::SeqCst);
    if auth(&headers) != GOOD_BASIC {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(serde_json::json!({"token": "good", "expires_in": 300})).into_response()
}

async fn start() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    fake.addr.set(addr.clone()).unwrap();
    let app = Router::new()
        .route("/v2/private/manifests/{reference}", get(bearer_manifest))
        .route("/v2/basic/manifests/{reference}", get(basic_manifest))
        .route("/token", get(token))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}"))
}

fn client(base: &str, own: OwnAuth) -> RegistryClient {
    RegistryClient::new(base, own, http_builder().build().unwrap(), Duration::from_secs(5)).unwrap()
}

fn credentials() -> OwnAuth {
    OwnAuth::Credentials {
        username: "u".into(),
        password: "p".into(),
    }
}

fn private_manifest() -> Request<'static> {
    Request {
        scope: Some("repository:private:pull".into()),
        ..Request::get("/v2/private/manifests/v1".into())
    }
}

/// A fresh fake, and what one request for the private manifest made with `own` got.
async fn send_private_manifest(own: OwnAuth) -> (Arc<Fake>, Result<reqwest::Response, Error>) {
    let (fake, base) = start().await;
    let result = client(&base, own).send(private_manifest()).await;
    (fake, result)
}

#[tokio::test]
async fn without_an_identity_challenges_go_back_to_the_caller() {
    let (fake, response) = send_private_manifest(OwnAuth::None).await;
    let response = response.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_callers_credential_is_sent_as_is_and_never_replaced() {
    let (fake, base) = start().await;
    let registry = client(&base, credentials());
    /// The status of the private manifest sent with the caller's `authorization`.
    async fn status_with(registry: &RegistryClient, authorization: &'static str) -> StatusCode {
        let authorization = HeaderValue::from_static(authorization);
        let request = Request {
            authorization: Some(&authorization),
            ..private_manifest()
        };
        registry.send(request).await.unwrap().status()
    }
    assert_eq!(
        status_with(&registry, "Bearer stale").await,
        StatusCode::UNAUTHORIZED,
        "handed back, not answered with ours"
    );
    assert_eq!(status_with(&registry, GOOD_TOKEN).await, StatusCode::OK);
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn own_credentials_get_a_token_once_per_scope() {
    let (fake, base) = start().await;
    let registry = client(&base, credentials());
    for _ in 0..3 {
        let response = registry.send(private_manifest()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        1,
        "the token is reused"
    );
}

#[tokio::test]
async fn every_accept_line_and_the_range_are_forwarded_as_given() {
    let (_fake, base) = start().await;
    let response = client(&base, credentials())
        .send(Request {
            accept: vec![
                HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
                HeaderValue::from_static("text/x, */*; q=0.1"),
            ],
            range: Some(HeaderValue::from_static("bytes=5-")),
            ..private_manifest()
        })
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-accept"],
        "application/vnd.oci.image.index.v1+json|text/x, */*; q=0.1"
    );
    assert_eq!(response.headers()["x-range"], "bytes=5-");
}

#[tokio::test]
async fn a_refused_token_request_is_an_error_no_retry_can_fix() {
    let (fake, response) = send_private_manifest(OwnAuth::Anonymous).await;
    let err = response.unwrap_err();
    assert!(matches!(err, Error::TokenDenied { status } if status == StatusCode::UNAUTHORIZED));
    assert!(!err.is_retryable());
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn basic_challenges_are_answered_with_own_credentials_only() {
    let (_fake, base) = start().await;
    let request = || Request::get("/v2/basic/manifests/v1".into());
    let own = client(&base, credentials()).send(request()).await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let anonymous = client(&base, OwnAuth::Anonymous).send(request()).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn manifests_are_verified_and_typed() {
    let (_fake, base) = start().await;
    let registry = client(&base, credentials());
    let private: RepositoryName = "private".parse().unwrap();
    let tag: Reference = "v1".parse().unwrap();
    let manifest = registry.manifest(&private, &tag, None, 1024).await.unwrap();
    assert_eq!(manifest.digest, Digest::of(MANIFEST));
    assert_eq!(manifest.media_type, "application/vnd.oci.image.manifest.v1+json");
    let pinned = Reference::Digest(Digest::of(b"another manifest"));
    assert!(matches!(
        registry.manifest(&private, &pinned, None, 1024).await,
        Err(Error::DigestMismatch { .. })
    ));
    assert!(matches!(
        registry.manifest(&private, &tag, None, 10).await,
        Err(Error::TooLarge { limit: 10 })
    ));
    let basic: RepositoryName = "basic".parse().unwrap();
    assert!(
        matches!(
            registry.manifest(&basic, &tag, None, 1024).await,
            Err(Error::DigestMismatch { .. })
        ),
        "the registry's Docker-Content-Digest is checked for tags"
    );
    let refused = registry
        .manifest(
            &private,
            &tag,
            Some(&HeaderValue::from_static("Bearer stale")),
            1024,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Status { status, .. } if status == StatusCode::UNAUTHORIZED));
    assert!(!refused.is_retryable());
}
