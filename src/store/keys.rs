//! Store keys for values that must not be readable in the store: phone numbers, IPs,
//! continuation tokens, method ids. Each becomes the hex HMAC-SHA256 of the value under a
//! secret key (`store.key_secret`), so someone who can read Redis cannot recover a phone
//! number by hashing the few billion possible ones.

use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Turns a sensitive value into the part of a store key that stands for it. Replicas
/// sharing a store must hash alike: give them the same key. Cheap to clone; `Debug`
/// hides the key.
#[derive(Clone)]
pub(crate) struct KeyHasher {
    /// Keyed once; cloned for every hash. `None`: plain SHA-256, for replicas that share
    /// Redis without a configured key (see [`KeyHasher::unkeyed`]).
    mac: Option<HmacSha256>,
}

impl KeyHasher {
    /// HMAC-SHA256 under `key`.
    pub(crate) fn keyed(key: &[u8]) -> Self {
        Self {
            mac: Some(keyed_mac(key)),
        }
    }

    /// HMAC-SHA256 under a random key of this process: for a store no other process
    /// reads. Keys do not survive a restart, and neither does the in-process store.
    pub(crate) fn random() -> Self {
        Self::keyed(&rand::random::<[u8; 32]>())
    }

    /// Plain SHA-256: what replicas can agree on without a shared key. Anyone who can
    /// read the store can brute-force a phone number from its key; set a key instead.
    pub(crate) fn unkeyed() -> Self {
        Self { mac: None }
    }

    pub(crate) fn is_keyed(&self) -> bool {
        self.mac.is_some()
    }

    /// The hex hash of `value`.
    pub(crate) fn hash(&self, value: &str) -> String {
        match &self.mac {
            Some(mac) => {
                let mut mac = mac.clone();
                mac.update(value.as_bytes());
                hex_lower(&mac.finalize().into_bytes())
            }
            None => hex_lower(&Sha256::digest(value.as_bytes())),
        }
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_keyed() {
            "hmac-sha256 <key redacted>"
        } else {
            "sha256"
        };
        f.debug_tuple("KeyHasher").field(&kind).finish()
    }
}

/// Lowercase hex, as `hex::encode` writes it, without building the `String` a `char` at a
/// time (that was about 2.5% of a gated request's CPU, at nine digests per request).
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    // The buffer is exactly twice as long, and hex digits are ASCII.
    match hex::encode_to_slice(bytes, &mut out) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => hex::encode(bytes),
    }
}

/// HMAC-SHA-256 keyed with `key` of any length, without a `Result`: RFC 2104 pads a key
/// up to the 64-byte block, or first hashes one longer than the block. Byte for byte
/// what `Hmac::new_from_slice` does (tested), which is fallible only in its signature.
pub(crate) fn keyed_mac(key: &[u8]) -> HmacSha256 {
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prekeyed_mac_is_hmac() {
        for len in [0, 18, 32, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = keyed_mac(&key);
            let mut reference = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
            ours.update(b"message");
            reference.update(b"message");
            assert_eq!(
                ours.finalize().into_bytes(),
                reference.finalize().into_bytes()
            );
        }
    }

    #[test]
    fn hex_is_lowercase_hex_of_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_lower(&all), hex::encode(&all));
        assert_eq!(hex_lower(&[]), "");
    }

    #[test]
    fn hashes_depend_on_the_key_and_never_equal_plain_sha256() {
        let phone = "+447912345678";
        let sha = hex::encode(Sha256::digest(phone));
        let a = KeyHasher::keyed(b"replica key");
        assert_eq!(a.hash(phone), KeyHasher::keyed(b"replica key").hash(phone));
        assert_ne!(a.hash(phone), KeyHasher::keyed(b"another key").hash(phone));
        assert_ne!(a.hash(phone), sha);
        assert_ne!(
            KeyHasher::random().hash(phone),
            KeyHasher::random().hash(phone)
        );
        assert_eq!(KeyHasher::unkeyed().hash(phone), sha);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", KeyHasher::keyed(b"s3cret-key"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
