//! Harbor's real credential shape: the registry runs with token auth (as Harbor's registry
//! does), and the preheat request carries what Harbor core mints — an RS256 JWT from
//! `harbor-token-issuer` for `harbor-registry`, granting `pull` on one repository only. The
//! preheater must resolve with it as-is and the edges must fetch with it; a token for another
//! repository must end the job FAILURE.
//!
//! The 2.13+ fixture is posted with only `url` and the JWT in `headers.Authorization` replaced.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use common::*;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::poll::{poll_until, Probe};
use damselfly_test_support::registry::{Registry, RegistryOptions};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

const PROVIDER_TOKEN: &str = "df-pat-token-registry";
const CAPTURED_URL: &str = "https://harbor.example.com/v2/library/nginx/manifests/1.25.3";

/// An RSA key and its self-signed certificate, made with openssl, and the key id
/// docker-registry derives from the certificate (libtrust: base32 of the first 240 bits of the
/// SPKI's sha256, in groups of four).
struct Issuer {
    key: RsaKeyPair,
    kid: String,
    cert: std::path::PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        for i in 0..(chunk.len() * 8).div_ceil(5) {
            out.push(ALPHABET[(bits >> (35 - 5 * i) & 31) as usize] as char);
        }
    }
    out
}

impl Issuer {
    fn new(dir: &std::path::Path) -> Issuer {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "1",
                "-subj",
                "/CN=harbor-token-issuer",
            ],
        );
        openssl(
            dir,
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.pk8",
            ],
        );
        openssl(
            dir,
            &[
                "pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "pub.der",
            ],
        );
        let key = RsaKeyPair::from_pkcs8(&std::fs::read(dir.join("key.pk8")).unwrap()).expect("pkcs8 key");
        let spki = std::fs::read(dir.join("pub.der")).unwrap();
        let hash = damselfly_core::Digest::of(&spki).to_string();
        let raw = hex_bytes(hash.trim_start_matches("sha256:"));
        let encoded = base32(&raw[..30]);
        let kid = encoded
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        Issuer {
            key,
            kid,
            cert: dir.join("cert.pem"),
        }
    }

    /// A registry token as Harbor core mints it. `aud` is a string: Debian's docker-registry
    /// 2.8.2 decodes it as one (Harbor's own registry build also accepts the list it writes).
    fn token(&self, repository: &str, actions: &[&str]) -> String {
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let claims = json!({"iss": "harbor-token-issuer", "sub": "distributor", "aud": "harbor-registry",
            "exp": now + 1800, "nbf": now - 10, "iat": now, "jti": format!("{now}-{repository}"),
            "access": [{"type": "repository", "name": repository, "actions": actions}]});
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!(
            "{signing_input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature)
        )
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The realm skopeo gets its push token from (Harbor core's `/service/token`).
async fn token_service(issuer: std::sync::Arc<Issuer>) -> String {
    let app = Router::new().route(
        "/service/token",
        get(move |Query(q): Query<Vec<(String, String)>>| {
            let issuer = issuer.clone();
            async move {
                let scope = q
                    .iter()
                    .find(|(k, _)| k == "scope")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let mut parts = scope.split(':');
                let (_, name, actions) = (
                    parts.next(),
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                );
                let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
                let token = issuer.token(name, &actions);
                Json(json!({"token": token, "access_token": token, "expires_in": 1800}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/service/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn poll_job(preheater: &Preheater, id: u64) -> Value {
    let url = format!("{}/oapi/v1/jobs/{id}", preheater.url());
    poll_until("provider job", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let r = loopback_client()
                .unwrap()
                .get(&url)
                .bearer_auth(PROVIDER_TOKEN)
                .send()
                .await?;
            let job: Value = r.json().await?;
            Ok(match job["state"].as_str() {
                Some("PENDING") => Probe::NotYet("PENDING".into()),
                _ => Probe::Ready(job),
            })
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", preheater.log_tail()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harbor_registry_tokens_are_used_as_harbor_mints_them() {
    init_logging();
    let work = tempfile::tempdir().unwrap();
    let issuer = std::sync::Arc::new(Issuer::new(work.path()));
    let realm = token_service(issuer.clone()).await;
    // Started with htpasswd (so the harness accepts a 401 as "up"), then switched to token auth.
    let mut registry = Registry::start(RegistryOptions {
        htpasswd: Some(("unused".into(), "unused".into())),
        ..RegistryOptions::default()
    })
    .await
    .expect("registry");
    registry.stop().unwrap();
    let config = std::fs::read_to_string(registry.config_path()).unwrap();
    let htpasswd = config.find("auth:\n  htpasswd:").expect("htpasswd block");
    assert!(
        !config[htpasswd..].contains("notifications:"),
        "the auth block is last"
    );
    let config = format!(
        "{}auth:\n  token:\n    realm: {realm}\n    service: harbor-registry\n    issuer: harbor-token-issuer\n    rootcertbundle: {}\n",
        &config[..htpasswd],
        issuer.cert.display()
    );
    std::fs::write(registry.config_path(), config).unwrap();
    registry.start_again().await.expect("registry with token auth");

    let img = registry
        .push_image(ImageSpec::new("token", vec![MIB, MIB / 4]), "library/nginx:v1")
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", registry.log_tail()));

    let edge = start_edge(&registry.url()).await;
    let preheater = Preheater::start(&PreheaterSetup {
        extra_top: format!("[harbor]\nprovider_tokens = [\"{PROVIDER_TOKEN}\"]\n"),
        warm: "max_attempts = 2\n".into(),
        ..PreheaterSetup::new(&registry, &[("eu", edge.url())])
    })
    .await;

    let fixture = include_str!("fixtures/harbor_preheat_dragonfly_job_request.json");
    let captured: Value = serde_json::from_str(fixture).unwrap();
    let captured_jwt = captured["args"]["headers"]["Authorization"].as_str().unwrap();
    let manifest_url = format!("http://{}/v2/library/nginx/manifests/v1", registry.addr());
    let request = |jwt: String| {
        fixture
            .replace(CAPTURED_URL, &manifest_url)
            .replace(captured_jwt, &format!("Bearer {jwt}"))
            // Clusters 1 and 2 in the fixture; one edge here is cluster 1.
            .replace("[1,2]", "[1]")
    };
    let post = |body: String| {
        loopback_client()
            .unwrap()
            .post(format!("{}/oapi/v1/jobs", preheater.url()))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .bearer_auth(PROVIDER_TOKEN)
            .body(body)
            .send()
    };

    // Pull-only on this repository, as Harbor mints it for the preheat.
    let r = post(request(issuer.token("library/nginx", &["pull"])))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.unwrap();
    let done = poll_job(&preheater, created["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", preheater.log_tail());
    for blob in &img.blobs {
        assert_eq!(edge_state(&edge.url(), &blob.digest).await, "cached");
    }

    // A token for another repository is refused by the registry: FAILURE, with its answer.
    let r = post(request(issuer.token("library/other", &["pull"])))
        .await
        .unwrap();
    let created: Value = r.json().await.unwrap();
    let failed = poll_job(&preheater, created["id"].as_u64().unwrap()).await;
    assert_eq!(failed["state"], "FAILURE", "{failed:#}");
    let error = failed["result"]["job_states"][0]["error"].as_str().unwrap();
    assert!(error.contains("401"), "{error}");
}
