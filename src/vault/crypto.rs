//! Cryptographic primitives of the vault: AES-256-GCM sealing, the key check
//! value, HKDF derivations, argon2id and random bytes.
//!
//! Every other vault module goes through these functions, so the algorithms
//! and their parameters are chosen in one place.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

/// Length in bytes of every symmetric key (AES-256, HMAC-SHA256).
pub const KEY_LEN: usize = 32;

/// Length in bytes of an AES-GCM nonce (96 bits).
pub const NONCE_LEN: usize = 12;

/// A 256-bit key that is wiped from memory when dropped.
pub type SecretKey = Zeroizing<[u8; KEY_LEN]>;

/// A failed cryptographic operation.
#[derive(Debug, Error)]
pub enum CryptoError {
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error(
        "authentication tag mismatch: the ciphertext, its nonce or its associated data changed, or the key is wrong"
    )]
    Open,
    #[error("AES-GCM encryption failed")]
    Seal,
    #[error("invalid argon2id parameters: {0}")]
    Argon2(String),
}

/// A ciphertext (tag appended) with the nonce it was sealed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Argon2id cost parameters, stored in the vault header with the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Argon2Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes over the memory.
    pub iterations: u32,
    /// Number of lanes.
    pub parallelism: u32,
}

impl Argon2Cost {
    /// The parameters `init` uses: 64 MiB, 3 passes, 1 lane. This is the second
    /// recommended option of RFC 9106 (section 4) with one lane instead of
    /// four, because the argon2 crate computes lanes one after another.
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };
}

/// Fills `N` bytes from the operating system's random number generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(CryptoError::Random)?;
    Ok(bytes)
}

/// Returns a fresh random 256-bit key.
pub fn random_key() -> Result<SecretKey, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut_slice()).map_err(CryptoError::Random)?;
    Ok(key)
}

/// Seals `plaintext` with AES-256-GCM under a fresh random nonce, binding `aad`.
pub fn seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::Seal)?;
    let nonce = random_bytes::<NONCE_LEN>()?;
    let ciphertext = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Seal)?;
    Ok(Sealed { nonce, ciphertext })
}

/// Opens a sealed value. Fails when the key, nonce, ciphertext or `aad` differ.
pub fn open(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::Open)?;
    let plaintext = cipher
        .decrypt(
            &sealed.nonce.into(),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Open)?;
    Ok(Zeroizing::new(plaintext))
}

const KEY_CHECK_LABEL: &[u8] = b"safe-exec vault key check v1";

/// Computes the key check value: HMAC-SHA256 of a fixed label and the vault id
/// under the master key. It identifies the right key without revealing it.
pub fn key_check_value(master: &[u8; KEY_LEN], vault_id: &str) -> Vec<u8> {
    key_check_mac(master, vault_id)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Compares `expected` with the key check value of `master` in constant time.
pub fn key_check_matches(master: &[u8; KEY_LEN], vault_id: &str, expected: &[u8]) -> bool {
    key_check_mac(master, vault_id)
        .verify_slice(expected)
        .is_ok()
}

fn key_check_mac(master: &[u8; KEY_LEN], vault_id: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this constructor cannot fail.
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(master)
        .unwrap_or_else(|_| unreachable!("HMAC accepts a 32-byte key"));
    mac.update(KEY_CHECK_LABEL);
    mac.update(vault_id.as_bytes());
    mac
}

/// Derives a 256-bit key with HKDF-SHA256.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8]) -> SecretKey {
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32 bytes.
    if hkdf.expand(info, key.as_mut_slice()).is_err() {
        unreachable!("HKDF-SHA256 can expand to 32 bytes");
    }
    key
}

/// Stretches a passphrase into a 256-bit key with argon2id (version 0x13).
pub fn argon2id(
    passphrase: &[u8],
    salt: &[u8],
    cost: Argon2Cost,
) -> Result<SecretKey, CryptoError> {
    let params = argon2::Params::new(
        cost.memory_kib,
        cost.iterations,
        cost.parallelism,
        Some(KEY_LEN),
    )
    .map_err(|err| CryptoError::Argon2(err.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(passphrase, salt, key.as_mut_slice())
        .map_err(|err| CryptoError::Argon2(err.to_string()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let key = random_key().unwrap();
        let sealed = seal(&key, b"aad", b"secret").unwrap();
        assert_eq!(open(&key, b"aad", &sealed).unwrap().as_slice(), b"secret");
    }

    #[test]
    fn open_rejects_other_aad() {
        let key = random_key().unwrap();
        let sealed = seal(&key, b"entry a", b"secret").unwrap();
        assert!(open(&key, b"entry b", &sealed).is_err());
    }

    #[test]
    fn seal_uses_fresh_nonces() {
        let key = random_key().unwrap();
        let first = seal(&key, b"", b"same").unwrap();
        let second = seal(&key, b"", b"same").unwrap();
        assert_ne!(first.nonce, second.nonce);
    }

    #[test]
    fn key_check_tells_keys_apart() {
        let key = random_key().unwrap();
        let other = random_key().unwrap();
        let check = key_check_value(&key, "id");
        assert!(key_check_matches(&key, "id", &check));
        assert!(!key_check_matches(&other, "id", &check));
    }
}
