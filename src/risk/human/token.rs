//! HUMAN risk token v3: the `_px3` cookie and the mobile `X-PX-AUTHORIZATION: 3:…` token
//! (reference A7, A8). Parsing, the HMAC check, PBKDF2-HMAC-SHA256 → AES-256-CBC
//! decryption, a cache of decrypted tokens, and the mirror-image minting the emulator and
//! tests use.
//!
//! Wire format: `<hmac_hex>:<salt_b64>:<iterations>:<ciphertext_b64>`.
//!
//! # Cost
//!
//! The key derivation costs as many HMAC-SHA256 rounds as the token names (up to
//! [`Limits::max_iterations`]), so it only runs for a token whose HMAC one of our secrets
//! made. The HMAC key is the cookie secret and its message the encrypted part plus the
//! signed fields, which the payload's `x` names: unknown before decryption, so the HMAC
//! is first checked against every string `x` can ask for (for a cookie: nothing, the user
//! agent, the socket IP, or any two of them in any order; for a mobile token: nothing),
//! for each secret, in constant time. A forged token then costs a few HMACs. After
//! decryption the HMAC is checked again against exactly what `x` names, as before.
//!
//! A token whose HMAC matches none of those strings fails validation without being
//! decrypted: telling a token made with another secret (a decryption failure when
//! decrypting first) from one whose signed fields differ (a validation failure) would
//! take the key derivation this order avoids. A cookie whose `x` names more than two
//! fields is refused the same way. What no key can decrypt (bad base64, a ciphertext of
//! partial blocks) is still a decryption failure, found before the HMAC.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aes::Aes256;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// `COOKIE_V3_MAXIMUM_SALT_LENGTH`: the longest accepted salt, in base64 characters.
pub(crate) const MAX_SALT_LENGTH: usize = 100;
/// The iteration count producers use.
pub(crate) const DEFAULT_ITERATIONS: u32 = 1000;
/// At most this many cookie secrets are tried (`COOKIE_SECRET_MAX_VALUES`).
pub(crate) const MAX_SECRETS: usize = 2;

const KEY_LEN: usize = 32;
const IV_LEN: usize = 16;
/// AES block size: a CBC ciphertext is a whole number of blocks.
const BLOCK_LEN: usize = 16;

/// Limits applied before any cryptography runs, so a hostile token costs little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lowest accepted PBKDF2 iteration count (`px_risk_cookie_min_iterations`, 500).
    pub min_iterations: u32,
    /// Highest accepted PBKDF2 iteration count (`px_risk_cookie_max_iterations`, 5000).
    pub max_iterations: u32,
    /// Longest accepted token (`px_risk_cookie_max_length`, 2048).
    pub max_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_iterations: 500,
            max_iterations: 5000,
            max_length: 2048,
        }
    }
}

/// The decrypted payload. All of `t`, `s`, `u`, `v`, `a` must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// Expiry, epoch milliseconds.
    pub t: f64,
    /// Score 0–100.
    pub s: f64,
    /// uuid of the assessment.
    pub u: String,
    /// Visitor id.
    pub v: String,
    /// Action (`c`, `b`, `j`, `r`, …).
    pub a: String,
    /// Which request fields the HMAC signs: `u` user agent, `s` socket IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Hype-sale approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpa: Option<serde_json::Value>,
}

/// A token split into its parts; borrowed from the raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub hmac_hex: &'a str,
    /// `<salt_b64>:<iterations>:<ciphertext_b64>`, exactly as received: what the HMAC signs.
    pub signed: &'a str,
    pub salt_b64: &'a str,
    pub iterations: u32,
    pub ciphertext_b64: &'a str,
}

/// Why a token was not accepted. `Decryption` maps to `cookie_decryption_failed`,
/// `Validation` to `cookie_validation_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token cannot be decrypted")]
    Decryption,
    #[error("token signature does not match")]
    Validation,
}

/// Splits and bounds-checks a token. Anything malformed is a decryption failure.
pub fn parse<'a>(raw: &'a str, limits: &Limits) -> Result<Parsed<'a>, TokenError> {
    if raw.is_empty() || raw.len() > limits.max_length {
        return Err(TokenError::Decryption);
    }
    let (hmac_hex, signed) = raw.split_once(':').ok_or(TokenError::Decryption)?;
    let mut parts = signed.split(':');
    let (Some(salt_b64), Some(iterations), Some(ciphertext_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Decryption);
    };
    if salt_b64.is_empty() || salt_b64.len() > MAX_SALT_LENGTH || ciphertext_b64.is_empty() {
        return Err(TokenError::Decryption);
    }
    if !iterations.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Decryption);
    }
    let iterations: u32 = iterations.parse().map_err(|_| TokenError::Decryption)?;
    if iterations < limits.min_iterations || iterations > limits.max_iterations {
        return Err(TokenError::Decryption);
    }
    Ok(Parsed {
        hmac_hex,
        signed,
        salt_b64,
        iterations,
        ciphertext_b64,
    })
}

fn derive(secret: &str, salt: &[u8], iterations: u32) -> ([u8; KEY_LEN], [u8; IV_LEN]) {
    let mut dk = [0u8; KEY_LEN + IV_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt, iterations, &mut dk);
    let mut key = [0u8; KEY_LEN];
    let mut iv = [0u8; IV_LEN];
    key.copy_from_slice(&dk[..KEY_LEN]);
    iv.copy_from_slice(&dk[KEY_LEN..]);
    (key, iv)
}

/// A successfully decrypted token.
#[derive(Debug, Clone, PartialEq)]
pub struct Decrypted {
    pub payload: Payload,
    /// The plaintext JSON as decrypted (sent to the Risk API as `px_cookie`).
    pub plaintext: String,
    /// Index of the secret that decrypted it; the HMAC is checked with the same one.
    pub secret_index: usize,
}

/// Tries each secret (at most [`MAX_SECRETS`]) until one yields a well-formed payload.
pub fn decrypt(token: &Parsed<'_>, secrets: &[String]) -> Result<Decrypted, TokenError> {
    let (salt, ciphertext) = decode(token)?;
    secrets
        .iter()
        .take(MAX_SECRETS)
        .enumerate()
        .find_map(|(index, secret)| decrypt_with(secret, index, &salt, &ciphertext, token))
        .ok_or(TokenError::Decryption)
}

/// The salt and ciphertext, decoded. A ciphertext that is not whole AES blocks cannot
/// decrypt under any key.
fn decode(token: &Parsed<'_>) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let salt = B64
        .decode(token.salt_b64)
        .map_err(|_| TokenError::Decryption)?;
    let ciphertext = B64
        .decode(token.ciphertext_b64)
        .map_err(|_| TokenError::Decryption)?;
    if ciphertext.is_empty() || ciphertext.len() % BLOCK_LEN != 0 {
        return Err(TokenError::Decryption);
    }
    Ok((salt, ciphertext))
}

fn decrypt_with(
    secret: &str,
    secret_index: usize,
    salt: &[u8],
    ciphertext: &[u8],
    token: &Parsed<'_>,
) -> Option<Decrypted> {
    let (key, iv) = derive(secret, salt, token.iterations);
    let plain = cbc::Decryptor::<Aes256>::new(&key.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .ok()?;
    let plaintext = String::from_utf8(plain).ok()?;
    let payload = serde_json::from_str::<Payload>(&plaintext).ok()?;
    Some(Decrypted {
        payload,
        plaintext,
        secret_index,
    })
}

/// The extra text the HMAC covers: nothing for mobile tokens; for cookies, per char of
/// `x` (`u` → user agent, `s` → socket IP), or the user agent when `x` is absent. An absent
/// user agent signs as the empty string (PY2/PHP/JSCORE; NODE's `none` is not followed).
pub(crate) fn signed_fields(
    payload: &Payload,
    mobile: bool,
    user_agent: &str,
    socket_ip: &str,
) -> String {
    if mobile {
        return String::new();
    }
    match &payload.x {
        None => user_agent.to_owned(),
        Some(x) => x
            .chars()
            .map(|c| match c {
                'u' => user_agent,
                's' => socket_ip,
                _ => "",
            })
            .collect(),
    }
}

fn mac(secret: &str, signed: &str, fields: &str) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(signed.as_bytes());
    mac.update(fields.as_bytes());
    Some(mac)
}

/// Whether the token's HMAC matches `secret` over the signed text plus `fields`, compared
/// in constant time. Hex case does not matter.
pub(crate) fn hmac_valid(token: &Parsed<'_>, secret: &str, fields: &str) -> bool {
    let Ok(given) = hex::decode(token.hmac_hex) else {
        return false;
    };
    let Some(mac) = mac(secret, token.signed, fields) else {
        return false;
    };
    let expected = mac.finalize().into_bytes();
    given.len() == expected.len() && bool::from(expected.as_slice().ct_eq(&given))
}

/// Whether `secret` made the token's HMAC over any string the payload's `x` can name
/// (see the module docs). Every candidate is computed and compared in constant time.
fn signed_by(
    token: &Parsed<'_>,
    given: &[u8],
    secret: &str,
    mobile: bool,
    user_agent: &str,
    socket_ip: &str,
) -> bool {
    let Some(base) = mac(secret, token.signed, "") else {
        return false;
    };
    let then = |mac: &Hmac<Sha256>, field: &str| {
        let mut mac = mac.clone();
        mac.update(field.as_bytes());
        mac
    };
    let mut candidates = vec![base.clone()];
    if !mobile {
        let ua = then(&base, user_agent);
        let ip = then(&base, socket_ip);
        candidates.extend([
            then(&ua, user_agent),
            then(&ua, socket_ip),
            then(&ip, user_agent),
            then(&ip, socket_ip),
            ua,
            ip,
        ]);
    }
    let matched = candidates
        .into_iter()
        .map(|mac| mac.finalize().into_bytes().as_slice().ct_eq(given))
        .fold(Choice::from(0), |any, this| any | this);
    bool::from(matched)
}

/// Parse, check the signature, decrypt and check the signed fields. The key derivation
/// runs only for a token one of `secrets` signed (see the module docs); a token no secret
/// signed fails validation without being decrypted. On `Ok((_, false))` the token
/// decrypted but its HMAC does not cover what the payload's `x` names: it fails
/// validation, and the payload is returned so the caller can report it to the Risk API.
pub fn verify(
    raw: &str,
    secrets: &[String],
    limits: &Limits,
    mobile: bool,
    user_agent: &str,
    socket_ip: &str,
) -> Result<(Decrypted, bool), TokenError> {
    verify_inner(raw, secrets, limits, mobile, user_agent, socket_ip, None)
}

/// [`verify`], answering a token `cache` holds without decrypting it again, and adding
/// one that verifies and has not expired at `now_ms` (epoch ms). The signature is checked
/// on every call: a cached token presented with other signed fields still fails.
#[allow(clippy::too_many_arguments)]
pub fn verify_cached(
    raw: &str,
    secrets: &[String],
    limits: &Limits,
    mobile: bool,
    user_agent: &str,
    socket_ip: &str,
    cache: &DecryptCache,
    now_ms: f64,
) -> Result<(Decrypted, bool), TokenError> {
    let cache = Some((cache, now_ms));
    verify_inner(raw, secrets, limits, mobile, user_agent, socket_ip, cache)
}

fn verify_inner(
    raw: &str,
    secrets: &[String],
    limits: &Limits,
    mobile: bool,
    user_agent: &str,
    socket_ip: &str,
    cache: Option<(&DecryptCache, f64)>,
) -> Result<(Decrypted, bool), TokenError> {
    let parsed = parse(raw, limits)?;
    let (salt, ciphertext) = decode(&parsed)?;
    let given = hex::decode(parsed.hmac_hex).unwrap_or_default();
    let signers: Vec<(usize, &String)> = secrets
        .iter()
        .take(MAX_SECRETS)
        .enumerate()
        .filter(|(_, secret)| signed_by(&parsed, &given, secret, mobile, user_agent, socket_ip))
        .collect();
    if signers.is_empty() {
        return Err(TokenError::Validation);
    }
    for (index, secret) in signers {
        let cache = cache.map(|(cache, now_ms)| (cache, now_ms, DecryptCache::key(index, raw)));
        let hit = cache
            .as_ref()
            .and_then(|(cache, now_ms, key)| cache.get(key, *now_ms));
        let missed = hit.is_none();
        let Some(decrypted) =
            hit.or_else(|| decrypt_with(secret, index, &salt, &ciphertext, &parsed))
        else {
            continue;
        };
        let fields = signed_fields(&decrypted.payload, mobile, user_agent, socket_ip);
        let ok = hmac_valid(&parsed, secret, &fields);
        if let (true, true, Some((cache, now_ms, key))) = (ok, missed, cache) {
            cache.put(key, &decrypted, now_ms);
        }
        return Ok((decrypted, ok));
    }
    Err(TokenError::Decryption)
}

/// Tokens that verified recently, so a client sending the same token again does not pay
/// the key derivation again. Keyed by SHA-256 of the secret's index and the whole token
/// (the raw token is not kept); an entry leaves when the token's `t` passes, and the
/// cache holds at most its capacity (when full, expired entries go first, then any one).
/// A cache belongs to one list of secrets: build a new one when they change.
pub struct DecryptCache {
    entries: Mutex<HashMap<[u8; 32], Decrypted>>,
    capacity: usize,
    hits: AtomicU64,
}

impl DecryptCache {
    /// Tokens a cache holds by default: a few MiB at most.
    pub(crate) const DEFAULT_CAPACITY: usize = 4096;

    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            hits: AtomicU64::new(0),
        }
    }

    /// Tokens answered from the cache since it was built.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Tokens held, expired or not.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(secret_index: usize, raw: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(secret_index.to_be_bytes());
        hash.update(raw.as_bytes());
        hash.finalize().into()
    }

    fn get(&self, key: &[u8; 32], now_ms: f64) -> Option<Decrypted> {
        let mut entries = self.entries.lock();
        match entries.get(key) {
            Some(d) if d.payload.t >= now_ms => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(d.clone())
            }
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: [u8; 32], decrypted: &Decrypted, now_ms: f64) {
        if self.capacity == 0 || decrypted.payload.t < now_ms {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, d| d.payload.t >= now_ms);
            if entries.len() >= self.capacity {
                if let Some(victim) = entries.keys().next().copied() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key, decrypted.clone());
    }
}

impl Default for DecryptCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

// Payloads are not secrets, but a log has no use for them.
impl fmt::Debug for DecryptCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("hits", &self.hits())
            .finish()
    }
}

/// Encrypts and signs `plaintext` (JSON) the way HUMAN's collector does: PBKDF2 over
/// `salt`, AES-256-CBC with PKCS#7, `b64(salt):iterations:b64(ct)`, HMAC-SHA256 over that
/// plus `fields`, lower-case hex in front. `salt` defaults to 16 random bytes.
pub fn mint(
    secret: &str,
    plaintext: &str,
    fields: &str,
    iterations: u32,
    salt: Option<&[u8]>,
) -> String {
    let salt = match salt {
        Some(s) => s.to_vec(),
        None => {
            let mut s = vec![0u8; 16];
            rand::thread_rng().fill_bytes(&mut s);
            s
        }
    };
    let (key, iv) = derive(secret, &salt, iterations);
    let ct = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
    let signed = format!("{}:{}:{}", B64.encode(&salt), iterations, B64.encode(ct));
    let hmac_hex = mac(secret, &signed, fields)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{hmac_hex}:{signed}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.84 Safari/537.36";
    const WEB_GOOD: &str = "335b98aef8ef5d0005b0672c056db96710e49592d4329fb1b5beef584ee8f102:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3E3E7Q1G3WRGDgLn0/YAz2gk7sykHn/3nb4qxa3resILBRZcNNl5TOhVp+Eht7HxhM=";
    const MOBILE_GOOD: &str = "d93b4a4afa90c39b58b8ac401eccfe70ac1aba0d32fe368b0ae1621061a1699d:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3E3E7Q1G3WRGDgLn0/YAz2gk7sykHn/3nb4qxa3resILBRZcNNl5TOhVp+Eht7HxhM=";

    fn secrets(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn key_and_iv_match_the_reference_derivation() {
        let (key, iv) = derive("perimeterx", b"12345678123456781234567812345678", 1000);
        assert_eq!(
            hex::encode(key),
            "2552f9b954a9da80a32f455f8ba2006464332f1dc11c2bfb1038aa04190d72d9"
        );
        assert_eq!(hex::encode(iv), "a926c76627646a12575f77d7a47ed092");
    }

    #[test]
    fn parse_rejects_malformed_tokens() {
        let l = Limits::default();
        let salt = "MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=";
        for bad in [
            String::new(),
            "abc".to_owned(),
            format!("h:{salt}:1000"),
            format!("h:{salt}:1000:ct:extra"),
            "h::1000:ct".to_owned(),
            format!("h:{salt}:499:ct"),
            format!("h:{salt}:5001:ct"),
            format!("h:{salt}:+1000:ct"),
            format!("h:{}:1000:ct", "A".repeat(101)),
            format!("h:{salt}:1000:{}", "A".repeat(2048)),
        ] {
            assert_eq!(parse(&bad, &l), Err(TokenError::Decryption), "{bad}");
        }
        assert!(parse(&format!("h:{salt}:500:ct"), &l).is_ok());
        assert!(parse(&format!("h:{salt}:5000:ct"), &l).is_ok());
    }

    #[test]
    fn mint_reproduces_the_reference_web_vector() {
        let plain = r#"{"u":"57ecdc10-0e97-11e6-80b6-095df820282c","v":"a0b1c2d3-0e97-11e6-80b6-095df820282c","t":4102444800000,"s":0,"a":"c"}"#;
        let token = mint(
            "perimeterx",
            plain,
            UA,
            1000,
            Some(b"12345678123456781234567812345678"),
        );
        assert_eq!(token, WEB_GOOD);
        let mobile = mint(
            "perimeterx",
            plain,
            "",
            1000,
            Some(b"12345678123456781234567812345678"),
        );
        assert_eq!(mobile, MOBILE_GOOD);
    }

    #[test]
    fn second_secret_decrypts_and_validates_during_rotation() {
        let (d, ok) = verify(
            WEB_GOOD,
            &secrets(&["wrong-secret", "perimeterx"]),
            &Limits::default(),
            false,
            UA,
            "1.2.3.4",
        )
        .unwrap();
        assert!(ok);
        assert_eq!(d.secret_index, 1);
    }

    #[test]
    fn only_two_secrets_are_tried() {
        let r = verify(
            WEB_GOOD,
            &secrets(&["a", "b", "perimeterx"]),
            &Limits::default(),
            false,
            UA,
            "",
        );
        assert_eq!(r, Err(TokenError::Validation));
    }

    #[test]
    fn uppercase_hmac_hex_is_accepted() {
        let upper = WEB_GOOD.replacen(&WEB_GOOD[..64], &WEB_GOOD[..64].to_uppercase(), 1);
        let (_, ok) = verify(
            &upper,
            &secrets(&["perimeterx"]),
            &Limits::default(),
            false,
            UA,
            "",
        )
        .unwrap();
        assert!(ok);
    }

    /// Found by fuzzing the emulator's minting: JSON read with best-effort float parsing
    /// gave back `100.0` for a score of `99.99999999999999`, a score below a blocking score
    /// of 100 read as at it. Payload numbers now read back exactly.
    #[test]
    fn payload_numbers_read_back_exactly() {
        for n in [
            99.999_999_999_999_99,
            0.1,
            5e-324,
            1.797_693_134_862_315_7e308,
            4_102_444_800_000.5,
        ] {
            let payload = Payload {
                t: n,
                s: n,
                u: "u".into(),
                v: "v".into(),
                a: "c".into(),
                x: None,
                cpa: None,
            };
            let plain = serde_json::to_string(&payload).unwrap();
            let token = mint("k", &plain, "", DEFAULT_ITERATIONS, Some(b"salt"));
            let parsed = parse(&token, &Limits::default()).unwrap();
            let decrypted = decrypt(&parsed, &secrets(&["k"])).unwrap();
            assert_eq!(decrypted.payload, payload, "{plain}");
        }
    }

    #[test]
    fn signed_fields_follow_x() {
        let mut p = Payload {
            t: 0.0,
            s: 0.0,
            u: String::new(),
            v: String::new(),
            a: "c".into(),
            x: None,
            cpa: None,
        };
        assert_eq!(signed_fields(&p, false, "UA", "1.2.3.4"), "UA");
        assert_eq!(signed_fields(&p, true, "UA", "1.2.3.4"), "");
        p.x = Some("su".into());
        assert_eq!(signed_fields(&p, false, "UA", "1.2.3.4"), "1.2.3.4UA");
        p.x = Some("uzs".into());
        assert_eq!(signed_fields(&p, false, "UA", "1.2.3.4"), "UA1.2.3.4");
    }

    const SALT: &[u8] = b"12345678123456781234567812345678";
    const PLAIN: &str = r#"{"u":"57ecdc10-0e97-11e6-80b6-095df820282c","v":"a0b1c2d3-0e97-11e6-80b6-095df820282c","t":4102444800000,"s":0,"a":"c"}"#;
    const IP: &str = "1.2.3.4";

    /// The reference payload naming the signed fields `x`.
    fn with_x(x: &str) -> String {
        PLAIN.replace(r#""a":"c"}"#, &format!(r#""a":"c","x":"{x}"}}"#))
    }

    #[test]
    fn a_token_no_secret_signed_fails_validation_without_decryption() {
        let s = secrets(&["perimeterx"]);
        let l = Limits::default();
        // Whole blocks of garbage at the highest iteration count accepted: decrypted first,
        // as before, it would have been a decryption failure.
        let forged = format!(
            "{}:{}:5000:{}",
            "0".repeat(64),
            B64.encode(SALT),
            B64.encode([7u8; 64])
        );
        assert_eq!(
            verify(&forged, &s, &l, false, UA, IP),
            Err(TokenError::Validation)
        );
        let other_secret = mint("attacker-secret", PLAIN, UA, 5000, Some(SALT));
        assert_eq!(
            verify(&other_secret, &s, &l, false, UA, IP),
            Err(TokenError::Validation)
        );
        // What no key can decrypt is still a decryption failure.
        for ciphertext in [B64.encode([7u8; 15]), "%%%".to_owned()] {
            let broken = format!("{}:{}:1000:{ciphertext}", "0".repeat(64), B64.encode(SALT));
            assert_eq!(
                verify(&broken, &s, &l, false, UA, IP),
                Err(TokenError::Decryption)
            );
        }
    }

    #[test]
    fn every_field_list_of_up_to_two_fields_verifies() {
        let s = secrets(&["other", "perimeterx"]);
        for x in ["", "u", "s", "us", "su", "uu", "ss", "uz", "q"] {
            let plain = with_x(x);
            let payload: Payload = serde_json::from_str(&plain).unwrap();
            let fields = signed_fields(&payload, false, UA, IP);
            let token = mint("perimeterx", &plain, &fields, 1000, Some(SALT));
            let (d, ok) = verify(&token, &s, &Limits::default(), false, UA, IP).unwrap();
            assert!(ok, "x = {x:?}");
            assert_eq!((d.payload.x.as_deref(), d.secret_index), (Some(x), 1));
        }
        // Three fields are more than the signature is checked against before decryption.
        let plain = with_x("usu");
        let token = mint(
            "perimeterx",
            &plain,
            &format!("{UA}{IP}{UA}"),
            1000,
            Some(SALT),
        );
        assert_eq!(
            verify(&token, &s, &Limits::default(), false, UA, IP),
            Err(TokenError::Validation)
        );
    }

    #[test]
    fn a_signature_over_other_fields_than_x_names_fails_after_decryption() {
        // Signed over the user agent, while the payload names the socket IP.
        let token = mint("perimeterx", &with_x("s"), UA, 1000, Some(SALT));
        let s = secrets(&["perimeterx"]);
        let (d, ok) = verify(&token, &s, &Limits::default(), false, UA, IP).unwrap();
        assert!(!ok);
        assert_eq!(d.payload.x.as_deref(), Some("s"));
        // A mobile token signs nothing extra: a cookie signed over its user agent is not one.
        assert_eq!(
            verify(WEB_GOOD, &s, &Limits::default(), true, "", ""),
            Err(TokenError::Validation)
        );
    }

    #[test]
    fn the_cache_answers_a_repeated_token_until_it_expires() {
        let cache = DecryptCache::new(8);
        let s = secrets(&["perimeterx"]);
        let l = Limits::default();
        let t = 4_102_444_800_000.0;
        let now = t - 1000.0;
        let first = verify_cached(WEB_GOOD, &s, &l, false, UA, "", &cache, now).unwrap();
        assert!(first.1);
        assert_eq!((cache.len(), cache.hits()), (1, 0));
        let again = verify_cached(WEB_GOOD, &s, &l, false, UA, "", &cache, now).unwrap();
        assert_eq!(again, first);
        assert_eq!(cache.hits(), 1);
        // The signature is still checked on every call.
        assert_eq!(
            verify_cached(WEB_GOOD, &s, &l, false, "curl/8.0", "", &cache, now),
            Err(TokenError::Validation)
        );
        // A payload whose `x` the request does not satisfy is not cached.
        let mismatched = mint("perimeterx", &with_x("s"), UA, 1000, Some(SALT));
        let (_, ok) = verify_cached(&mismatched, &s, &l, false, UA, IP, &cache, now).unwrap();
        assert!(!ok);
        assert_eq!(cache.len(), 1);
        // Once `t` has passed, the entry goes and the token is decrypted again.
        let later = verify_cached(WEB_GOOD, &s, &l, false, UA, "", &cache, t + 1.0).unwrap();
        assert_eq!(later.0.payload.t, t);
        assert_eq!((cache.len(), cache.hits()), (0, 1));
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = DecryptCache::new(2);
        let s = secrets(&["perimeterx"]);
        for i in 0..4u8 {
            let token = mint("perimeterx", PLAIN, UA, 500, Some(&[i; 16]));
            let (_, ok) =
                verify_cached(&token, &s, &Limits::default(), false, UA, "", &cache, 0.0).unwrap();
            assert!(ok);
            assert!(cache.len() <= 2);
        }
        assert_eq!(cache.len(), 2);
    }
}
