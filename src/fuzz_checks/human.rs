//! `human_token`: HUMAN risk token v3 parsing, decryption and HMAC verification, the
//! emulator's minting, and what the provider makes of a token.

use std::net::{IpAddr, Ipv4Addr};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use super::ensure;
use crate::emulate::human::{mint_cookie, mint_mobile_token};
use crate::risk::human::token::{self, Limits, Payload, TokenError};
use crate::risk::human::{
    read_token_with, CallReason, HumanConfig, TokenOutcome, TokenState, MOBILE_HEADER, RISK_COOKIE,
};
use crate::risk::RiskRequest;

/// Secrets of the public test vectors: the A9 vectors, then the Python SDK's.
const VECTOR_SECRETS: [&str; 2] = ["perimeterx", "Pyth0nS3crE7K3Y"];
/// The user agent the A9 web vectors sign.
const VECTOR_UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.84 Safari/537.36";
const VECTOR_IP: Ipv4Addr = Ipv4Addr::new(1, 2, 3, 4);
/// The provider's clock: 2023-11-14, between the vectors' expiries.
const NOW_MS: f64 = 1_700_000_000_000.0;

/// Two kinds of input.
///
/// A token: `<hmac>:<salt>:<iterations>:<ciphertext>` as a `_px3` cookie, or `3:<token>` as
/// a mobile header, checked against the public vectors' secrets.
/// * A token is accepted as signed only if its HMAC, recomputed here, matches.
/// * A token that decrypts re-encrypts to the same ciphertext under its salt.
/// * The provider agrees: a token that fails decryption or its HMAC yields no trusted
///   uuid, vid or outcome (only `cookie_decryption_failed` / `cookie_validation_failed`).
/// * Changing any byte of the signed part of a valid token makes it fail.
///
/// A mint recipe, one field per line: `mint cookie` or `mint mobile`, then the secret, user
/// agent, socket IP, `t`, `s`, `u`, `v`, `a` and optionally `x`.
/// * What the emulator mints verifies with the same secret and fields, and decrypts to the
///   payload it was minted from (finite `t` and `s`: JSON has no NaN), unless it is longer
///   than the length cap, which refuses it before any cryptography.
/// * With another secret, other signed fields or any byte of the signed part changed, it is
///   not accepted as signed.
/// * The provider reads the minted token to exactly the outcome its payload calls for.
pub fn human_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("mint ") => mint_recipe(first, rest),
        _ => raw_token(text),
    }
}

fn vector_secrets() -> Vec<String> {
    VECTOR_SECRETS.map(str::to_owned).to_vec()
}

fn raw_token(text: &str) {
    let (raw, mobile) = match text.strip_prefix("3:") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let secrets = vector_secrets();
    let ip = VECTOR_IP.to_string();
    let limits = Limits::default();
    let verified = token::verify(raw, &secrets, &limits, mobile, VECTOR_UA, &ip);

    if let Ok((decrypted, signed)) = &verified {
        let parsed = token::parse(raw, &limits);
        let Ok(parsed) = parsed else {
            super::violated(format_args!("{raw:?} verified but does not parse"));
        };
        let secret = secrets.get(decrypted.secret_index);
        let Some(secret) = secret else {
            super::violated(format_args!("secret index {}", decrypted.secret_index));
        };
        let fields = token::signed_fields(&decrypted.payload, mobile, VECTOR_UA, &ip);
        let expected = hmac_matches(parsed.hmac_hex, secret, parsed.signed, &fields);
        ensure!(
            *signed == expected,
            "{raw:?}: verify says signed = {signed}, the recomputed HMAC says {expected}"
        );

        let salt = B64.decode(parsed.salt_b64).unwrap_or_default();
        let minted = token::mint(
            secret,
            &decrypted.plaintext,
            &fields,
            parsed.iterations,
            Some(&salt),
        );
        let ciphertext = |t: &str| t.rsplit(':').next().and_then(|c| B64.decode(c).ok());
        ensure!(
            ciphertext(&minted).is_some() && ciphertext(&minted) == ciphertext(raw),
            "{raw:?} does not re-encrypt to its ciphertext"
        );
        if *signed {
            tampered_fail(raw, &secrets, mobile, VECTOR_UA, &ip);
        }
    }

    if is_header_safe(raw) {
        let mut request = RiskRequest::new(
            "register_challenge",
            crate::risk::Channel::Sms,
            IpAddr::V4(VECTOR_IP),
        );
        request.user_agent = Some(VECTOR_UA.to_owned());
        carry(&mut request, raw, mobile);
        let cfg = HumanConfig {
            cookie_secrets: secrets.clone(),
            sensitive_route: false,
            ..HumanConfig::default()
        };
        let state = read_token_with(&cfg, &request, NOW_MS);
        match &verified {
            Err(TokenError::Decryption) => ensure!(
                state.outcome == TokenOutcome::Call(CallReason::CookieDecryptionFailed)
                    && state.decoded.is_none(),
                "{raw:?} does not decrypt, yet the provider reads {state:?}"
            ),
            // The HMAC matches no candidate: refused before any key derivation.
            Err(TokenError::Validation) => ensure!(
                state.outcome == TokenOutcome::Call(CallReason::CookieValidationFailed)
                    && state.decoded.is_none(),
                "{raw:?} fails its HMAC before decryption, yet the provider reads {state:?}"
            ),
            Ok((_, false)) => ensure!(
                state.outcome == TokenOutcome::Call(CallReason::CookieValidationFailed),
                "{raw:?} fails its HMAC, yet the provider reads {:?}",
                state.outcome
            ),
            Ok((decrypted, true)) => ensure!(
                state.outcome == expected_outcome(&decrypted.payload, &cfg),
                "{raw:?} is valid, yet the provider reads {:?}",
                state.outcome
            ),
        }
        if !matches!(verified, Ok((_, true))) {
            untrusted(raw, &state);
        }
    }
}

fn mint_recipe(first: &str, rest: &str) {
    let mobile = match first {
        "mint cookie" => false,
        "mint mobile" => true,
        _ => return,
    };
    let lines: Vec<&str> = rest.split('\n').collect();
    let [secret, ua, ip, t, s, u, v, a, more @ ..] = lines.as_slice() else {
        return;
    };
    let (Ok(t), Ok(s)) = (t.parse::<f64>(), s.parse::<f64>()) else {
        return;
    };
    if !(t.is_finite() && s.is_finite()) {
        return;
    }
    let payload = Payload {
        t,
        s,
        u: (*u).to_owned(),
        v: (*v).to_owned(),
        a: (*a).to_owned(),
        x: more.first().map(|x| (*x).to_owned()),
        cpa: None,
    };
    let minted = if mobile {
        mint_mobile_token(secret, &payload)
    } else {
        mint_cookie(secret, &payload, ua, ip)
    };
    let raw = if mobile {
        minted.strip_prefix("3:").unwrap_or_default()
    } else {
        minted.as_str()
    };
    let secrets = vec![(*secret).to_owned()];
    let limits = Limits::default();

    let verified = token::verify(raw, &secrets, &limits, mobile, ua, ip);
    if raw.len() > limits.max_length {
        // Long fields (JSON escapes a control character as six bytes) can push a token past
        // the length cap, which applies before any cryptography.
        ensure!(
            verified == Err(TokenError::Decryption),
            "a minted token of {} bytes, over the {}-byte cap, verifies as {verified:?}",
            raw.len(),
            limits.max_length
        );
        return;
    }
    // The signature is checked before decryption against what `x` can name when it
    // names at most two fields (the token module's docs; the producers in the reference
    // sign one at most). A cookie signed over anything else is refused as unsigned.
    let signed = token::signed_fields(&payload, mobile, ua, ip);
    let checked_first = [
        String::new(),
        (*ua).to_owned(),
        (*ip).to_owned(),
        format!("{ua}{ua}"),
        format!("{ua}{ip}"),
        format!("{ip}{ua}"),
        format!("{ip}{ip}"),
    ];
    if !checked_first.contains(&signed) {
        ensure!(
            verified == Err(TokenError::Validation),
            "a cookie signed over {} bytes that x names ({:?}) verifies as {verified:?}",
            signed.len(),
            payload.x
        );
        return;
    }
    let expected_plaintext = serde_json::to_string(&payload).unwrap_or_default();
    match &verified {
        Ok((d, true)) => {
            ensure!(
                d.payload == payload && d.plaintext == expected_plaintext && d.secret_index == 0,
                "minted {payload:?}, decrypted {:?} (secret {})",
                d.payload,
                d.secret_index
            );
        }
        other => super::violated(format_args!(
            "a minted token for {payload:?} verifies as {other:?}"
        )),
    }

    let wrong = vec![format!("{secret}-not")];
    let with_wrong = token::verify(raw, &wrong, &limits, mobile, ua, ip);
    ensure!(
        !matches!(with_wrong, Ok((_, true))),
        "a token minted with {secret:?} is accepted with {:?}",
        wrong[0]
    );

    let other_ua = format!("{ua}-other");
    let same_fields = token::signed_fields(&payload, mobile, &other_ua, ip)
        == token::signed_fields(&payload, mobile, ua, ip);
    let with_other_ua = token::verify(raw, &secrets, &limits, mobile, &other_ua, ip);
    // Signed fields that differ fail the HMAC: before decryption (validation failed) or,
    // when the HMAC is checked after it, as a decrypted token that is not signed.
    let accepted = matches!(with_other_ua, Ok((_, true)));
    ensure!(
        accepted == same_fields
            && (same_fields
                || matches!(with_other_ua, Err(TokenError::Validation) | Ok((_, false)))),
        "another user agent (same signed fields: {same_fields}) verifies as {with_other_ua:?}"
    );

    tampered_fail(raw, &secrets, mobile, ua, ip);

    // The provider reads the socket IP from the connection: only a canonical address can be
    // the one signed.
    let Ok(addr) = ip.parse::<IpAddr>() else {
        return;
    };
    if addr.to_string() != *ip {
        return;
    }
    let mut request = RiskRequest::new("register_challenge", crate::risk::Channel::Sms, addr);
    request.user_agent = Some((*ua).to_owned());
    carry(&mut request, raw, mobile);
    let cfg = HumanConfig {
        cookie_secrets: secrets.clone(),
        sensitive_route: false,
        ..HumanConfig::default()
    };
    let state = read_token_with(&cfg, &request, NOW_MS);
    let expected = expected_outcome(&payload, &cfg);
    ensure!(
        state.outcome == expected && state.uuid.as_deref() == Some(payload.u.as_str()),
        "minted {payload:?}: expected {expected:?}, the provider reads {:?}",
        state.outcome
    );

    let forged = tamper(raw);
    if !is_header_safe(&forged) {
        return;
    }
    let mut request = RiskRequest::new("register_challenge", crate::risk::Channel::Sms, addr);
    request.user_agent = Some((*ua).to_owned());
    carry(&mut request, &forged, mobile);
    let state = read_token_with(&cfg, &request, NOW_MS);
    untrusted(&forged, &state);
}

/// What a valid token with `payload` decides alone (reference A6).
fn expected_outcome(payload: &Payload, cfg: &HumanConfig) -> TokenOutcome {
    if payload.t < NOW_MS {
        TokenOutcome::Call(CallReason::CookieExpired)
    } else if payload.s >= f64::from(cfg.blocking_score) {
        TokenOutcome::Block {
            score: payload.s,
            action: payload.a.clone(),
        }
    } else if cfg.sensitive_route {
        TokenOutcome::Call(CallReason::SensitiveRoute)
    } else {
        TokenOutcome::Pass
    }
}

/// A token that is not valid yields nothing trusted.
fn untrusted(raw: &str, state: &TokenState) {
    ensure!(
        matches!(
            state.outcome,
            TokenOutcome::Call(
                CallReason::CookieDecryptionFailed | CallReason::CookieValidationFailed
            )
        ) && state.uuid.is_none()
            && state.vid_source != Some("risk_cookie"),
        "{raw:?} is not valid, yet the provider trusts it: {state:?}"
    );
}

/// Put `raw` where the provider looks: the `_px3` cookie or the mobile header.
fn carry(request: &mut RiskRequest, raw: &str, mobile: bool) {
    let value = if mobile {
        HeaderValue::from_str(&format!("3:{raw}"))
    } else {
        HeaderValue::from_str(&format!("{RISK_COOKIE}={raw}"))
    };
    let Ok(value) = value else {
        super::violated(format_args!("{raw:?} is not a header value"));
    };
    let name = if mobile {
        http::HeaderName::from_static(MOBILE_HEADER)
    } else {
        http::header::COOKIE
    };
    request.headers.insert(name, value);
}

/// A cookie value the provider reads back unchanged: visible ASCII without the separators
/// and escapes of cookie syntax.
fn is_header_safe(raw: &str) -> bool {
    !raw.is_empty()
        && raw
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b'%' | b','))
}

/// The HMAC-SHA256 of `signed ‖ fields` under `secret` equals the hex `hmac_hex` (any case).
fn hmac_matches(hmac_hex: &str, secret: &str, signed: &str, fields: &str) -> bool {
    let Ok(given) = hex::decode(hmac_hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(signed.as_bytes());
    mac.update(fields.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// `raw` with one byte of its signed part (after the HMAC) replaced by another, chosen from
/// the token's own content so that a run is reproducible.
fn tamper(raw: &str) -> String {
    let start = raw.find(':').map_or(0, |i| i + 1);
    let signed = raw.len() - start;
    if signed == 0 {
        return format!("{raw}A");
    }
    let seed = raw.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    let at = start + seed % signed;
    let old = raw.as_bytes()[at];
    let new = if old == b'A' { b'B' } else { b'A' };
    let mut bytes = raw.as_bytes().to_vec();
    bytes[at] = new;
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Changing a byte of the signed part of a valid token makes it fail its HMAC, or fail.
fn tampered_fail(raw: &str, secrets: &[String], mobile: bool, ua: &str, ip: &str) {
    let forged = tamper(raw);
    let verified = token::verify(&forged, secrets, &Limits::default(), mobile, ua, ip);
    ensure!(
        !matches!(verified, Ok((_, true))),
        "{raw:?} changed to {forged:?} is still accepted as signed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB_GOOD: &str = "335b98aef8ef5d0005b0672c056db96710e49592d4329fb1b5beef584ee8f102:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3E3E7Q1G3WRGDgLn0/YAz2gk7sykHn/3nb4qxa3resILBRZcNNl5TOhVp+Eht7HxhM=";

    /// The independent HMAC agrees with the public vector, and tampering always changes the
    /// signed part, so the checks built on them can fail.
    #[test]
    fn the_recomputed_hmac_and_the_tampering_have_teeth() {
        let (hmac, signed) = WEB_GOOD.split_once(':').expect("a token");
        assert!(hmac_matches(hmac, "perimeterx", signed, VECTOR_UA));
        assert!(!hmac_matches(hmac, "perimeterx", signed, "curl/8.0"));
        assert!(!hmac_matches(hmac, "other", signed, VECTOR_UA));
        for token in [WEB_GOOD, "h:A", "h:", "AAAA", ""] {
            let forged = tamper(token);
            assert_ne!(forged, token);
            assert_eq!(
                forged.split_once(':').map(|p| p.0),
                token.split_once(':').map(|p| p.0)
            );
        }
        let verified = token::verify(
            WEB_GOOD,
            &vector_secrets(),
            &Limits::default(),
            false,
            VECTOR_UA,
            "1.2.3.4",
        );
        assert!(matches!(verified, Ok((_, true))));
        human_token(WEB_GOOD.as_bytes());
    }
}
