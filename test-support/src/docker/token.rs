//! A token service in Docker Hub's manner (`auth.docker.io`): a registry with token auth
//! challenges every caller with `Bearer realm=<this>`, docker fetches a token here (anonymously,
//! for a public image) and presents it to the registry, or to its mirror, which must pass it on.
//!
//! Tokens are ES256 JWTs granting whatever scope was asked, signed by a key whose certificate
//! the registry trusts (`auth.token.rootcertbundle`) and named by the key ID Distribution derives
//! from it (libtrust's: base32 of the first 240 bits of the public key's SHA-256, in groups of
//! four).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use rcgen::{CertificateParams, DnType, KeyPair};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// `iss` of the tokens, and the registry's `auth.token.issuer`.
const ISSUER: &str = "damselfly-token-service";
/// `aud` of the tokens, and the registry's `auth.token.service`.
const SERVICE: &str = "damselfly-registry";

/// A running token service; stopped on drop.
pub struct TokenService {
    realm: String,
    certificate: PathBuf,
    issued: Arc<AtomicU64>,
    server: JoinHandle<()>,
}

struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
    issued: Arc<AtomicU64>,
}

impl TokenService {
    /// Starts the service on a free port of 127.0.0.1; its certificate is written into `dir`.
    pub async fn start(dir: &Path) -> Result<TokenService> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating the token key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow::anyhow!("reading the token key: {e}"))?;
        let cert_key = KeyPair::try_from(pkcs8.as_ref()).context("the token key for rcgen")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, ISSUER);
        let certificate = dir.join("token-issuer.pem");
        std::fs::write(&certificate, params.self_signed(&cert_key)?.pem())
            .context("writing the token issuer's certificate")?;
        let issued = Arc::new(AtomicU64::new(0));
        let issuer = Arc::new(Issuer {
            key,
            kid: libtrust_key_id(&cert_key.public_key_der()),
            issued: issued.clone(),
        });
        let app = Router::new().route("/token", get(token)).with_state(issuer);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let realm = format!("http://{}/token", listener.local_addr()?);
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!("token service stopped: {err}");
            }
        });
        Ok(TokenService {
            realm,
            certificate,
            issued,
            server,
        })
    }

    /// The `auth:` block of a Distribution `config.yml` that sends callers here.
    pub fn registry_auth_yaml(&self) -> String {
        let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            quote(&self.realm),
            quote(SERVICE),
            quote(ISSUER),
            quote(&self.certificate.to_string_lossy()),
        )
    }

    /// How many tokens were handed out.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `GET /token?service=&scope=repository:<name>:<actions>` (scope repeatable), answered as
/// Docker Hub's token service answers: `token` and `access_token`.
async fn token(State(issuer): State<Arc<Issuer>>, Query(query): Query<Vec<(String, String)>>) -> Json<Value> {
    let access: Vec<Value> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            Some(json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let token = issuer.sign(&access);
    issuer.issued.fetch_add(1, Ordering::Relaxed);
    Json(json!({"token": token, "access_token": token, "expires_in": 300}))
}

impl Issuer {
    fn sign(&self, access: &[Value]) -> String {
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let claims = json!({"iss": ISSUER, "sub": "", "aud": SERVICE, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", self.issued.load(Ordering::Relaxed)),
            "access": access});
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.as_ref()))
            .unwrap_or_default();
        format!("{signing_input}.{signature}")
    }
}

/// libtrust's key ID, by which Distribution finds the key of a token's `kid`.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let mut encoded = String::new();
    for chunk in hash[..30].chunks(5) {
        let bits = chunk.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        for i in 0..8 {
            encoded.push(ALPHABET[(bits >> (35 - 5 * i) & 31) as usize] as char);
        }
    }
    let groups: Vec<&str> = encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    groups.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_twelve_groups_of_four_base32_characters() {
        let id = libtrust_key_id(b"any public key");
        let groups: Vec<&str> = id.split(':').collect();
        assert_eq!(groups.len(), 12, "{id}");
        assert!(groups
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|b| ALPHABET_CHARS.contains(&b))));
    }

    const ALPHABET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
}
