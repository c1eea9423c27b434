//! Small secrets at rest (a registry credential a job needs until it ends), sealed with the
//! cluster secret: a store that leaks, or an operator reading it, sees only ciphertext.
//!
//! Format: `v1.<base64url(nonce || ciphertext || tag)>`, AES-256-GCM with a random 96-bit nonce
//! (each value is sealed once; random nonces are safe far beyond the number of values any store
//! holds) and key = HKDF-SHA256(cluster secret, info = "sealed-value" || purpose). The purpose
//! binds a value to where it belongs: a credential sealed for one use opens for no other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::seal::{ClusterSecret, SealError};

/// A sealed value as stored; opened only with the cluster secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedValue(String);

impl ClusterSecret {
    fn value_key(&self, purpose: &str) -> LessSafeKey {
        let bytes = self.derive(b"sealed-value", purpose.as_bytes());
        // 32 bytes are always a valid AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).unwrap_or_else(|_| unreachable!()))
    }

    pub fn seal_value(&self, purpose: &str, plain: &str) -> SealedValue {
        let mut nonce = [0u8; NONCE_LEN];
        // Without a working random source no nonce is safe: nothing sensible is left to do.
        SystemRandom::new()
            .fill(&mut nonce)
            .unwrap_or_else(|_| std::process::abort());
        let mut sealed = plain.as_bytes().to_vec();
        if let Ok(tag) = self.value_key(purpose).seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        ) {
            sealed.extend_from_slice(tag.as_ref());
        }
        let mut out = nonce.to_vec();
        out.extend(sealed);
        SealedValue(format!("v1.{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open_value(&self, purpose: &str, sealed: &SealedValue) -> Result<String, SealError> {
        let encoded = sealed.0.strip_prefix("v1.").ok_or(SealError::Unauthentic)?;
        let mut bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Unauthentic)?;
        if bytes.len() < NONCE_LEN + crate::seal::TAG_LEN {
            return Err(SealError::Truncated);
        }
        let (nonce, rest) = bytes.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Unauthentic)?;
        let plain = self
            .value_key(purpose)
            .open_in_place(nonce, Aad::empty(), rest)
            .map_err(|_| SealError::Unauthentic)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_open_only_with_their_secret_and_purpose() {
        let secret = ClusterSecret::new(&[7; 32]).unwrap();
        let sealed = secret.seal_value("job-credential", "Bearer harbor-pull-token");
        assert!(!serde_json::to_string(&sealed)
            .unwrap()
            .contains("harbor-pull-token"));
        assert_ne!(
            sealed,
            secret.seal_value("job-credential", "Bearer harbor-pull-token"),
            "fresh nonces"
        );
        assert_eq!(
            secret.open_value("job-credential", &sealed).unwrap(),
            "Bearer harbor-pull-token"
        );
        assert!(secret.open_value("other-purpose", &sealed).is_err());
        let other = ClusterSecret::new(&[8; 32]).unwrap();
        assert!(other.open_value("job-credential", &sealed).is_err());
        let mut tampered = sealed.0.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = SealedValue(String::from_utf8(tampered).unwrap());
        assert!(secret.open_value("job-credential", &tampered).is_err());
        assert!(secret
            .open_value("job-credential", &SealedValue("v1.AAAA".into()))
            .is_err());
    }
}
