//! Piece sealing: AES-256-GCM with a per-task key derived from the cluster secret.
//!
//! Format of a sealed piece: `ciphertext || tag` (16 bytes), standard AES-256-GCM with
//! - key   = HKDF-SHA256(ikm = cluster secret, salt = "damselfly/v1", info = "task-key" || task id)
//! - nonce = "dfly" || piece index as u64 big-endian (12 bytes)
//! - no associated data.
//!
//! A task's content never changes (its id is a content digest), so sealing piece *n* twice gives
//! the same bytes and the nonce never protects two different plaintexts. Every edge derives the
//! same key from the shared secret, so edges need no coordination to serve each other's pieces.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;

use crate::digest::Digest;

pub const TAG_LEN: usize = 16;
pub const NONCE_LEN: usize = 12;
const HKDF_SALT: &[u8] = b"damselfly/v1";

/// The cluster-wide secret every edge shares. Never leaves the edges.
#[derive(Clone)]
pub struct ClusterSecret(hkdf::Prk);

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("cluster secret must be at least 32 bytes")]
    SecretTooShort,
    #[error("sealed piece is shorter than its tag")]
    Truncated,
    #[error("sealed piece failed authentication (wrong key, index or tampered bytes)")]
    Unauthentic,
    /// A compressed piece that authenticated but does not decompress to exactly its plaintext
    /// length (more is never produced: the output buffer is the piece's length).
    #[error("compressed piece does not decompress to its {0} bytes")]
    Decompress(usize),
}

impl ClusterSecret {
    pub fn new(secret: &[u8]) -> Result<Self, SealError> {
        if secret.len() < 32 {
            return Err(SealError::SecretTooShort);
        }
        Ok(ClusterSecret(
            hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret),
        ))
    }

    /// Derives 32 bytes for a purpose (`label`) and an optional subject.
    pub(crate) fn derive(&self, label: &[u8], subject: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let info = [label, subject];
        // expand/fill only fail for output lengths above 255 * 32 bytes; 32 is always valid.
        if let Ok(okm) = self.0.expand(&info, hkdf::HKDF_SHA256) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    pub fn task_key(&self, task: &Digest) -> TaskKey {
        TaskKey::from_bytes(self.derive(b"task-key", task.as_bytes()))
    }
}

/// The AES-256-GCM key of one task. Handed to agents whose caller proved read access.
#[derive(Clone)]
pub struct TaskKey {
    bytes: [u8; 32],
    key: std::sync::Arc<LessSafeKey>,
}

impl TaskKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // A 32-byte slice is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).unwrap_or_else(|_| unreachable!());
        TaskKey {
            bytes,
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn nonce_bytes(index: u64) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(b"dfly");
        n[4..].copy_from_slice(&index.to_be_bytes());
        n
    }

    /// Encrypts `piece` in place and appends the tag.
    pub fn seal(&self, index: u64, piece: &mut Vec<u8>) {
        let nonce = Nonce::assume_unique_for_key(Self::nonce_bytes(index));
        // Sealing fails only for inputs beyond GCM's 64 GiB message limit, far above any piece.
        if let Ok(tag) = self.key.seal_in_place_separate_tag(nonce, Aad::empty(), piece) {
            piece.extend_from_slice(tag.as_ref());
        }
    }

    /// Authenticates and decrypts a sealed piece in place; returns the plaintext part.
    pub fn open<'a>(&self, index: u64, sealed: &'a mut [u8]) -> Result<&'a mut [u8], SealError> {
        if sealed.len() < TAG_LEN {
            return Err(SealError::Truncated);
        }
        let nonce = Nonce::assume_unique_for_key(Self::nonce_bytes(index));
        self.key
            .open_in_place(nonce, Aad::empty(), sealed)
            .map_err(|_| SealError::Unauthentic)
    }

    /// Encrypts `body` in place under an explicit `nonce` (one never used for other bytes
    /// under this key) and returns the tag: the compressed pieces' seal (`encoding.rs`).
    pub(crate) fn seal_with_nonce(&self, nonce: [u8; NONCE_LEN], body: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::assume_unique_for_key(nonce);
        let mut out = [0u8; TAG_LEN];
        // Sealing fails only beyond GCM's 64 GiB message limit, far above any piece.
        if let Ok(tag) = self.key.seal_in_place_separate_tag(nonce, Aad::empty(), body) {
            out.copy_from_slice(tag.as_ref());
        }
        out
    }

    /// Authenticates and decrypts `sealed` (ciphertext and tag) under `nonce`, in place.
    pub(crate) fn open_with_nonce<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], SealError> {
        if sealed.len() < TAG_LEN {
            return Err(SealError::Truncated);
        }
        let nonce = Nonce::assume_unique_for_key(nonce);
        self.key
            .open_in_place(nonce, Aad::empty(), sealed)
            .map_err(|_| SealError::Unauthentic)
    }

    /// Authenticates a sealed piece without changing it (a copy is opened): for a server that
    /// must not send bytes it cannot vouch for.
    pub fn verify(&self, index: u64, sealed: &[u8]) -> Result<(), SealError> {
        let mut copy = sealed.to_vec();
        self.open(index, &mut copy).map(|_| ())
    }
}

impl std::fmt::Debug for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit};

    fn secret() -> ClusterSecret {
        ClusterSecret::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn sealed_format_is_standard_aes_256_gcm() {
        // RustCrypto's aes-gcm is the independent reference: it must open what ring sealed.
        let key = secret().task_key(&Digest::of(b"blob"));
        let plain = b"piece payload".to_vec();
        let mut sealed = plain.clone();
        key.seal(5, &mut sealed);
        assert_eq!(sealed.len(), plain.len() + TAG_LEN);

        let reference = aes_gcm::Aes256Gcm::new_from_slice(key.as_bytes()).unwrap();
        let nonce = aes_gcm::Nonce::from(TaskKey::nonce_bytes(5));
        assert_eq!(reference.decrypt(&nonce, sealed.as_slice()).unwrap(), plain);
        assert_eq!(reference.encrypt(&nonce, plain.as_slice()).unwrap(), sealed);
    }

    #[test]
    fn open_rejects_tampering_and_wrong_index() {
        let key = secret().task_key(&Digest::of(b"blob"));
        let mut sealed = b"abc".to_vec();
        key.seal(0, &mut sealed);
        let mut copy = sealed.clone();
        assert_eq!(key.open(0, &mut copy).unwrap(), b"abc");
        let mut copy = sealed.clone();
        assert_eq!(key.open(1, &mut copy), Err(SealError::Unauthentic));
        let mut copy = sealed.clone();
        copy[0] ^= 1;
        assert_eq!(key.open(0, &mut copy), Err(SealError::Unauthentic));
        assert_eq!(key.open(0, &mut [0u8; 3]), Err(SealError::Truncated));
        assert_eq!(key.verify(0, &sealed), Ok(()));
        let mut flipped = sealed.clone();
        flipped[2] ^= 0x40;
        assert_eq!(key.verify(0, &flipped), Err(SealError::Unauthentic));
        assert_eq!(key.verify(1, &sealed), Err(SealError::Unauthentic));
    }

    #[test]
    fn keys_depend_on_secret_and_task() {
        let a = secret().task_key(&Digest::of(b"a"));
        assert_eq!(a.as_bytes(), secret().task_key(&Digest::of(b"a")).as_bytes());
        assert_ne!(a.as_bytes(), secret().task_key(&Digest::of(b"b")).as_bytes());
        let other = ClusterSecret::new(&[8u8; 32]).unwrap();
        assert_ne!(a.as_bytes(), other.task_key(&Digest::of(b"a")).as_bytes());
        assert!(ClusterSecret::new(b"short").is_err());
    }
}
