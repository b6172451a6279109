#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The decision algorithm (A6) against the public vectors of A9, the Risk API body per
//! `s2s_call_reason` (A2, A3) and response validation (A4).

use super::*;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

const UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.84 Safari/537.36";
const SALT_CT: &str = "MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3";
const WEB_GOOD: &str = "335b98aef8ef5d0005b0672c056db96710e49592d4329fb1b5beef584ee8f102:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3E3E7Q1G3WRGDgLn0/YAz2gk7sykHn/3nb4qxa3resILBRZcNNl5TOhVp+Eht7HxhM=";
const WEB_HIGH: &str = "6d7ecde2deed63ee9542818c327b8be20f10b98159e833bebfe0f09c4c8df82f:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3E3E7Q1G3WRGDgLn0/YAz2gPZDA5tYCTA4zc8Exu25k5oGpZ0CT0PYE3p7sbaGGhlk=";
const WEB_EXPIRED: &str = "5fc1a92108f269ce0b127f41decf414441d29e1d836c21fb31a03565e818c8f6:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3HpFIFCL2ZDyUp1o4qHyhXk5rSz5UgXAC4FbBMd8SN8+8PKP5IeDtoq8EotCRWAfZA=";
const MOBILE_GOOD: &str = "d93b4a4afa90c39b58b8ac401eccfe70ac1aba0d32fe368b0ae1621061a1699d:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3E3E7Q1G3WRGDgLn0/YAz2gk7sykHn/3nb4qxa3resILBRZcNNl5TOhVp+Eht7HxhM=";
const WEB_X_SU: &str = "211a6c72de772092f0cde86cbf23a42460c93be0e0d8d9e68f0d315529dc0730:MTIzNDU2NzgxMjM0NTY3ODEyMzQ1Njc4MTIzNDU2Nzg=:1000:HB1PdCSaEhMrRm5SSozR82/+fM4sLmcs98KJYvcSdLaoQr6cAK1iDGL6cLxHXS5ZLcrdUoDhZ5NER8Z9hxU6qv0g9RmrGgTGZyeDhMrQt3E3E7Q1G3WRGDgLn0/YAz2gk7sykHn/3nb4qxa3resILDbB4ogwJSBCM7dx91gBVKPXt9fgg7wWImWKInKmigTw";

// perimeterx-python-3-wsgi test/test_px_cookie_validator.py (secret Pyth0nS3crE7K3Y).
const PY_SECRET: &str = "Pyth0nS3crE7K3Y";
const PY3_VALID: &str = "bbf83fb7a74cf729e62e4f2e9e7cca0e75c1132bd103e04ba3045c0d6fbe29dd:VHO15SRxOlQ=:1000:xSGDf57DeOpnS3sJRh6dKt95ZiTzAZmj71nXRJzVuKhaWaSRl3ivBrfqWZ5rpIXTgdNRTDbHOMJbx0I5H8fzIrlMK0Cm1Kwji1Has1n4VwphzY36ngKqKv+9qhMK2zB3U5lXvXWKkvcMqz09HvinAOifHsmsJLDWLEXii/4apoIYpQjYHKa+fAK2sVye4gUV";
const PY3_BAD_HMAC: &str = "abcd:JZoYVnbrh1Y=:1000:iqxHgR/FX71+cUXolJztwJrZ2FKH685xsgJNRqwvexyhdTeLP0100qan7OosAN+oRZgPjCtzn9nCkyZS4LuGrbXcp29bcYlA1uQLSUNw9SwZrxAB/w3ZOpHJOP4LnAi+oR0CUrjQoMD27EsvyIDUWaOga4AV+bVoCJyIMnyMa7TxueNG39G+ke9S2LI+Shmb";
// perimeterx-python-wsgi test/test_px_cookie_validator.py (same secret).
const PY2_VALID: &str = "bd078865fa9627f626d6f7d6828ab595028d2c0974065ab6f6c5a9f80c4593cd:OCIluokZHHvqrWyu8zrWSH8Vu7AefCjrd4CMx/NXsX58LzeV40EZIlPG4gsNMoAYzH88s/GoZwv+DpQa76C21A==:1000:zwT+Rht/YGDNWKkzHtJAB7IiI00u4fOePL/3xWMs1nZ93lzW1XvAMGR2hLlHBmOv8O0CpylEQOZZTK1uQMls6O28Y8aQnTo5DETLkrbhpwCVeNjOcf8GVKTckITwuHfXbEcfHbdtb68s1+jHv1+vt/w/6HZqTzanaIsvFVp8vmA=";
const PY2_EXPIRED: &str = "0d67bdf4a58c524b55b9cf0f703e4f0f3cbe23a10bd2671530d3c7e0cfa509eb:HOiYSw11ICB2A+HYx+C+l5Naxcl7hMeEo67QNghCQByyHlhWZT571ZKfqV98JFWg7TvbV9QtlrQtXakPYeIEjQ==:1000:+kuXS/iJUoEqrm8Fo4K0cTebsc4YQZu+f5bRGX0lC1T+l0g1gzRUuKiCtWTar28Y0wjch1ZQvkNy523Pxr07agVi/RL0SUktmEl59qGor+m4FLewZBVdcgx/Ya9kU0riis98AAR0zdTpTtoN5wpNbmztIpOZ0YejeD0Esk3vagU=";
const PY2_HIGH: &str = "bf46ceff75278ae166f376cbf741a7639060581035dd4e93641892c905dd0d67:EGFGcwQ2rum7KRmQCeSXBAUt1+25mj2DFJYi7KJkEliF3cBspdXtD2X03Csv8N8B6S5Bte/4ccCcETkBNDVxTw==:1000:x9x+oI6BISFhlKEERpf8HpZD2zXBCW9lzVfuRURHaAnbaMnpii+XjPEd7a7EGGUSMch5ramy3y+KOxyuX3F+LbGYwvn3OJb+u40zU+ixT1w5N15QltX+nBMhC7izC1l8QtgMuG/f3Nts5ebnec9j2V7LS5Y1/5b73rd9s7AMnug=";
const PY2_CORRUPT: &str = "774958bcc233ea1a876b92ababf47086d8a4d95165bbd6f98b55d7e61afd2a05:ow3Er5dskpt8ZZ11CRiDMAueEi3ozJTqMBnYzsSM7/8vHTDA0so6ekhruiTrXa/taZINotR5PnTo78D5zM2pWw==:1000:uQ3Tdt7D3mSO5CuHDis3GgrnkGMC+XAghbHuNOE9x4H57RAmtxkTcNQ1DaqL8rx79bHl0iPVYlOcRmRgDiBCUoizBdUCjsSIplofPBLIl8WpfHDDtpxPKzz9I2rUEbFgfhFjiTY3rPGob2PUvTsDXTfPUeHnzKqbNTO8z7H6irFnUE=";

/// 2023-11-14, between the PY2 valid vector's expiry (2022-09-20) and 2100.
const NOW: f64 = 1_700_000_000_000.0;

fn settings(secrets: &[&str], sensitive: bool) -> Settings {
    let cfg = HumanConfig {
        app_id: "PXtest1234".into(),
        auth_token: "token".into(),
        cookie_secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        sensitive_route: sensitive,
        ..HumanConfig::default()
    };
    Settings::new(&cfg)
}

fn web(cookie: &str, ua: &str, ip: &str) -> RiskRequest {
    let mut req = RiskRequest::new(
        "register_challenge",
        crate::risk::Channel::Sms,
        ip.parse().unwrap(),
    );
    req.url = "https://idp.example.com/tenant/register/v1.0/challenge".into();
    req.user_agent = Some(ua.to_owned());
    req.headers
        .insert(header::USER_AGENT, HeaderValue::from_str(ua).unwrap());
    if !cookie.is_empty() {
        req.headers
            .insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
    }
    req
}

fn mobile(token: &str) -> RiskRequest {
    let mut req = web("", "okhttp/4.12", "10.0.0.1");
    req.headers
        .insert(MOBILE_HEADER, HeaderValue::from_str(token).unwrap());
    req
}

fn outcome(req: &RiskRequest, s: &Settings, now: f64) -> TokenOutcome {
    read_token(req, s, now).outcome
}

fn call(reason: CallReason) -> TokenOutcome {
    TokenOutcome::Call(reason)
}

#[test]
fn a9_web_good_passes_on_its_own_and_calls_on_a_sensitive_route() {
    let req = web(&format!("_px3={WEB_GOOD}"), UA, "1.2.3.4");
    assert_eq!(
        outcome(&req, &settings(&["perimeterx"], false), NOW),
        TokenOutcome::Pass
    );
    let st = read_token(&req, &settings(&["perimeterx"], true), NOW);
    assert_eq!(st.outcome, call(CallReason::SensitiveRoute));
    assert_eq!(
        st.vid.as_deref(),
        Some("a0b1c2d3-0e97-11e6-80b6-095df820282c")
    );
    assert_eq!(st.vid_source, Some("risk_cookie"));
    assert_eq!(
        st.uuid.as_deref(),
        Some("57ecdc10-0e97-11e6-80b6-095df820282c")
    );
}

#[test]
fn a9_web_high_blocks_with_the_cookie_action() {
    let req = web(&format!("_px3={WEB_HIGH}"), UA, "1.2.3.4");
    assert_eq!(
        outcome(&req, &settings(&["perimeterx"], true), NOW),
        TokenOutcome::Block {
            score: 100.0,
            action: "b".into()
        }
    );
}

#[test]
fn a9_web_expired_calls_with_cookie_expired() {
    let req = web(&format!("_px3={WEB_EXPIRED}"), UA, "1.2.3.4");
    assert_eq!(
        outcome(&req, &settings(&["perimeterx"], true), NOW),
        call(CallReason::CookieExpired)
    );
}

#[test]
fn a9_wrong_user_agent_fails_validation() {
    let req = web(&format!("_px3={WEB_GOOD}"), "curl/8.0", "1.2.3.4");
    assert_eq!(
        outcome(&req, &settings(&["perimeterx"], false), NOW),
        call(CallReason::CookieValidationFailed)
    );
    // A forged high score under a wrong signature must not block on its own.
    let req = web(&format!("_px3={WEB_HIGH}"), "curl/8.0", "1.2.3.4");
    assert_eq!(
        outcome(&req, &settings(&["perimeterx"], false), NOW),
        call(CallReason::CookieValidationFailed)
    );
}

#[test]
fn a9_x_su_signs_the_socket_ip_and_user_agent() {
    let s = settings(&["perimeterx"], false);
    let ok = web(&format!("_px3={WEB_X_SU}"), UA, "1.2.3.4");
    assert_eq!(outcome(&ok, &s, NOW), TokenOutcome::Pass);
    let wrong_ip = web(&format!("_px3={WEB_X_SU}"), UA, "1.2.3.5");
    assert_eq!(
        outcome(&wrong_ip, &s, NOW),
        call(CallReason::CookieValidationFailed)
    );
    let wrong_ua = web(&format!("_px3={WEB_X_SU}"), "other", "1.2.3.4");
    assert_eq!(
        outcome(&wrong_ua, &s, NOW),
        call(CallReason::CookieValidationFailed)
    );
}

#[test]
fn a9_mobile_token_signs_no_fields_and_ignores_cookies() {
    let s = settings(&["perimeterx"], false);
    let mut req = mobile(&format!("3:{MOBILE_GOOD}"));
    // A broken cookie next to the header is ignored: header clients never use cookies.
    req.headers
        .insert(header::COOKIE, HeaderValue::from_static("_px3=garbage"));
    let st = read_token(&req, &s, NOW);
    assert_eq!(st.outcome, TokenOutcome::Pass);
    assert_eq!(st.origin, CookieOrigin::Header);
    // The web token has a UA in its HMAC, so as a mobile token it does not validate.
    assert_eq!(
        outcome(&mobile(&format!("3:{WEB_GOOD}")), &s, NOW),
        call(CallReason::CookieValidationFailed)
    );
}

#[test]
fn a9_rotation_accepts_the_previous_secret() {
    let req = web(&format!("_px3={WEB_GOOD}"), UA, "1.2.3.4");
    assert_eq!(
        outcome(&req, &settings(&["wrong-secret", "perimeterx"], false), NOW),
        TokenOutcome::Pass
    );
    // Signed with a secret we do not hold: refused before decryption, so it cannot be told
    // from a token signed over other fields (see `token`).
    assert_eq!(
        outcome(&req, &settings(&["wrong-secret"], false), NOW),
        call(CallReason::CookieValidationFailed)
    );
}

#[test]
fn a9_python_vectors() {
    let s = settings(&[PY_SECRET], false);
    let py = |cookie: &str| web(&format!("_px3={cookie}"), "", "127.0.0.1");
    // Valid until 2029.
    assert_eq!(outcome(&py(PY3_VALID), &s, NOW), TokenOutcome::Pass);
    // Valid until 2022-09-20: passes with the clock frozen before then, expired after.
    assert_eq!(
        outcome(&py(PY2_VALID), &s, 1_600_000_000_000.0),
        TokenOutcome::Pass
    );
    assert_eq!(
        outcome(&py(PY2_VALID), &s, NOW),
        call(CallReason::CookieExpired)
    );
    assert_eq!(
        outcome(&py(PY2_EXPIRED), &s, NOW),
        call(CallReason::CookieExpired)
    );
    // PY2 only "passes" this because it checks the score before the HMAC; we do not.
    assert_eq!(
        outcome(&py(PY2_HIGH), &s, NOW),
        call(CallReason::CookieValidationFailed)
    );
    assert_eq!(
        outcome(&py(PY3_BAD_HMAC), &s, NOW),
        call(CallReason::CookieValidationFailed)
    );
    let st = read_token(&py(PY2_CORRUPT), &s, NOW);
    assert_eq!(st.outcome, call(CallReason::CookieDecryptionFailed));
    assert_eq!(st.raw_token.as_deref(), Some(PY2_CORRUPT));
}

#[test]
fn a9_common_ciphertext_prefix_is_shared_by_the_generated_vectors() {
    for v in [WEB_GOOD, WEB_HIGH, WEB_EXPIRED, MOBILE_GOOD, WEB_X_SU] {
        assert!(v[65..].starts_with(SALT_CT));
    }
}

#[test]
fn percent_encoded_cookie_values_are_decoded() {
    let encoded = WEB_GOOD
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    let req = web(&format!("_pxvid=x; _px3={encoded}"), UA, "1.2.3.4");
    assert_eq!(
        outcome(&req, &settings(&["perimeterx"], false), NOW),
        TokenOutcome::Pass
    );
}

#[test]
fn custom_cookie_header_is_read() {
    let mut req = web("", UA, "1.2.3.4");
    req.headers.insert(
        "x-px-cookies",
        HeaderValue::from_str(&format!("_px3={WEB_GOOD}")).unwrap(),
    );
    assert_eq!(
        outcome(&req, &settings(&["perimeterx"], false), NOW),
        TokenOutcome::Pass
    );
}

// --- one test per s2s_call_reason: the reason and its extras in the Risk API body ---

fn body_for(req: &RiskRequest, s: &Settings) -> (CallReason, Value) {
    let st = read_token(req, s, NOW);
    let TokenOutcome::Call(reason) = st.outcome else {
        panic!("expected a Risk API call, got {:?}", st.outcome);
    };
    let c = Call {
        req,
        st: &st,
        monitor: s.monitor(req),
        request_id: "rid".into(),
        enforcer_start: 1,
    };
    (reason, risk_body(&c, s, reason, 2))
}

#[test]
fn reason_no_cookie() {
    let (r, b) = body_for(
        &web("", UA, "203.0.113.7"),
        &settings(&["perimeterx"], true),
    );
    assert_eq!(r, CallReason::NoCookie);
    assert_eq!(b["additional"]["s2s_call_reason"], "no_cookie");
    assert_eq!(b["additional"]["cookie_origin"], "cookie");
    assert_eq!(b["additional"]["risk_mode"], "active_blocking");
    assert_eq!(b["additional"]["http_method"], "POST");
    assert_eq!(b["additional"]["http_version"], "1.1");
    assert_eq!(b["request"]["socket_ip"], "203.0.113.7");
    assert_eq!(
        b["request"]["url"],
        "https://idp.example.com/tenant/register/v1.0/challenge"
    );
    assert!(b.get("vid").is_none());
    assert!(b["additional"].get("px_cookie").is_none());
}

#[test]
fn reason_no_cookie_w_vid() {
    let vid = "a0b1c2d3-0e97-11e6-80b6-095df820282c";
    let req = web(&format!("_pxhd=hd-value; _pxvid={vid}"), UA, "1.2.3.4");
    let (r, b) = body_for(&req, &settings(&["perimeterx"], true));
    assert_eq!(r, CallReason::NoCookieWithVid);
    assert_eq!(b["additional"]["s2s_call_reason"], "no_cookie_w_vid");
    assert_eq!(b["pxhd"], "hd-value");
    assert_eq!(b["vid"], vid);
    assert_eq!(b["vid_source"], "vid_cookie");
    assert_eq!(
        b["additional"]["request_cookie_names"],
        json!(["_pxhd", "_pxvid"])
    );
    // Cookies are sensitive headers: never sent.
    let headers = b["request"]["headers"].as_array().unwrap();
    assert!(headers.iter().all(|h| h["name"] != "cookie"));
    assert!(headers
        .iter()
        .any(|h| h["name"] == "user-agent" && h["value"] == UA));
}

#[test]
fn reason_no_cookie_key() {
    let req = web(&format!("_px3={WEB_GOOD}"), UA, "1.2.3.4");
    let (r, b) = body_for(&req, &settings(&[], true));
    assert_eq!(r, CallReason::NoCookieKey);
    assert_eq!(b["additional"]["s2s_call_reason"], "no_cookie_key");
}

#[test]
fn reason_cookie_expired() {
    let req = web(&format!("_px3={WEB_EXPIRED}"), UA, "1.2.3.4");
    let (r, b) = body_for(&req, &settings(&["perimeterx"], true));
    assert_eq!(r, CallReason::CookieExpired);
    assert_eq!(b["additional"]["s2s_call_reason"], "cookie_expired");
    // px_cookie is the decoded payload as a JSON *string*.
    let px_cookie = b["additional"]["px_cookie"].as_str().unwrap();
    let payload: Value = serde_json::from_str(px_cookie).unwrap();
    assert_eq!(payload["t"], 1462000000000u64);
    assert_eq!(b["additional"]["px_cookie_hmac"], &WEB_EXPIRED[..64]);
}

#[test]
fn reason_cookie_decryption_failed() {
    let req = web("_px3=deadbeef:bm90:1000:bm90", UA, "1.2.3.4");
    let (r, b) = body_for(&req, &settings(&["perimeterx"], true));
    assert_eq!(r, CallReason::CookieDecryptionFailed);
    assert_eq!(
        b["additional"]["s2s_call_reason"],
        "cookie_decryption_failed"
    );
    assert_eq!(b["additional"]["px_orig_cookie"], "deadbeef:bm90:1000:bm90");
    assert!(b["additional"].get("px_cookie").is_none());
}

#[test]
fn reason_cookie_validation_failed() {
    // Its HMAC matches no field this request could have signed: refused before decryption,
    // and reported as received.
    let req = web(&format!("_px3={WEB_GOOD}"), "curl/8.0", "1.2.3.4");
    let (r, b) = body_for(&req, &settings(&["perimeterx"], true));
    assert_eq!(r, CallReason::CookieValidationFailed);
    assert_eq!(
        b["additional"]["s2s_call_reason"],
        "cookie_validation_failed"
    );
    assert_eq!(b["additional"]["px_orig_cookie"], WEB_GOOD);
    assert!(b["additional"].get("px_cookie").is_none());
    assert!(b.get("vid").is_none());

    // Signed over the user agent while its payload names the socket IP: it decrypts, and
    // fails validation with its payload reported.
    let plain = r#"{"u":"57ecdc10-0e97-11e6-80b6-095df820282c","v":"a0b1c2d3-0e97-11e6-80b6-095df820282c","t":4102444800000,"s":0,"a":"c","x":"s"}"#;
    let cookie = token::mint("perimeterx", plain, UA, 1000, None);
    let req = web(&format!("_px3={cookie}"), UA, "1.2.3.4");
    let (r, b) = body_for(&req, &settings(&["perimeterx"], true));
    assert_eq!(r, CallReason::CookieValidationFailed);
    assert_eq!(b["additional"]["px_cookie"], plain);
    assert_eq!(b["additional"]["px_cookie_hmac"], &cookie[..64]);
    assert!(b["additional"].get("px_orig_cookie").is_none());
    // An unvalidated token's vid is not trusted.
    assert!(b.get("vid").is_none());
}

#[test]
fn a_repeated_token_is_decrypted_once() {
    let s = settings(&["perimeterx"], false);
    let req = web(&format!("_px3={WEB_GOOD}"), UA, "1.2.3.4");
    for _ in 0..3 {
        assert_eq!(outcome(&req, &s, NOW), TokenOutcome::Pass);
    }
    assert_eq!((s.tokens.len(), s.tokens.hits()), (1, 2));
    // The same token from another client fails, cached or not.
    let elsewhere = web(&format!("_px3={WEB_GOOD}"), "curl/8.0", "1.2.3.4");
    assert_eq!(
        outcome(&elsewhere, &s, NOW),
        call(CallReason::CookieValidationFailed)
    );
}

#[test]
fn reason_sensitive_route() {
    let req = web(&format!("_px3={WEB_GOOD}"), UA, "1.2.3.4");
    let (r, b) = body_for(&req, &settings(&["perimeterx"], true));
    assert_eq!(r, CallReason::SensitiveRoute);
    assert_eq!(b["additional"]["s2s_call_reason"], "sensitive_route");
    assert_eq!(b["client_uuid"], "57ecdc10-0e97-11e6-80b6-095df820282c");
    assert_eq!(b["vid_source"], "risk_cookie");
    assert!(b["additional"]["px_cookie"].is_string());
}

#[test]
fn reason_mobile_error_with_original_token() {
    let s = settings(&["perimeterx"], true);
    for n in 1..=4u8 {
        let (r, b) = body_for(&mobile(&n.to_string()), &s);
        assert_eq!(r, CallReason::MobileError(n));
        assert_eq!(
            b["additional"]["s2s_call_reason"],
            format!("mobile_error_{n}")
        );
        assert_eq!(b["additional"]["cookie_origin"], "header");
    }
    let mut req = mobile("2");
    req.headers.insert(
        ORIGINAL_TOKEN_HEADER,
        HeaderValue::from_str(&format!("3:{MOBILE_GOOD}")).unwrap(),
    );
    let (_, b) = body_for(&req, &s);
    assert_eq!(
        b["additional"]["original_uuid"],
        "57ecdc10-0e97-11e6-80b6-095df820282c"
    );
    assert_eq!(
        b["additional"]["original_token"],
        format!("3:{MOBILE_GOOD}")
    );
    assert!(b["additional"]["px_decoded_original_token"].is_string());
    assert!(b["additional"].get("original_token_error").is_none());
    assert_eq!(b["vid"], "a0b1c2d3-0e97-11e6-80b6-095df820282c");

    req.headers.insert(
        ORIGINAL_TOKEN_HEADER,
        HeaderValue::from_str(&format!("3:{WEB_GOOD}")).unwrap(),
    );
    let (_, b) = body_for(&req, &s);
    assert_eq!(b["additional"]["original_token_error"], "validation_failed");
    req.headers
        .insert(ORIGINAL_TOKEN_HEADER, HeaderValue::from_static("3:junk"));
    let (_, b) = body_for(&req, &s);
    assert_eq!(b["additional"]["original_token_error"], "decryption_failed");
}

#[test]
fn malformed_mobile_headers_are_decryption_failures() {
    let s = settings(&["perimeterx"], true);
    for value in ["", "5", "12", "1:legacy", "garbage"] {
        assert_eq!(
            outcome(&mobile(value), &s, NOW),
            call(CallReason::CookieDecryptionFailed),
            "{value:?}"
        );
    }
}

#[test]
fn monitor_mode_and_its_bypass_header() {
    let cfg = HumanConfig {
        app_id: "PXtest1234".into(),
        auth_token: "t".into(),
        module_mode: ModuleMode::Monitor,
        bypass_monitor_header: Some("x-px-block".into()),
        ..HumanConfig::default()
    };
    let s = Settings::new(&cfg);
    let mut req = web("", UA, "1.2.3.4");
    assert!(s.monitor(&req));
    req.headers
        .insert("x-px-block", HeaderValue::from_static("1"));
    assert!(!s.monitor(&req));
    let (_, b) = body_for(&req, &s);
    assert_eq!(b["additional"]["risk_mode"], "active_blocking");
}

// --- Risk API response validation (A4) ---

fn answer(status: u16, body: &str) -> Result<RiskAnswer, RiskError> {
    interpret(
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        body.as_bytes(),
    )
}

#[test]
fn valid_response_is_accepted() {
    let a = answer(
        200,
        r#"{"status":0,"uuid":"u-1","score":100,"action":"j","action_data":{"body":"<p>x</p>"}}"#,
    )
    .unwrap();
    assert_eq!(a.score, 100.0);
    assert_eq!(a.action, "j");
    assert_eq!(a.challenge_body.as_deref(), Some("<p>x</p>"));
}

#[test]
fn invalid_responses_are_errors_of_the_right_kind() {
    let bad = |status, body| match answer(status, body) {
        Err(RiskError::BadResponse(m)) => m,
        other => panic!("{status} {body}: {other:?}"),
    };
    assert!(bad(200, r#"{"status":-1,"message":"boom"}"#).starts_with("request_failed_on_server"));
    assert!(bad(200, r#"{"status":0,"action":"c"}"#).starts_with("invalid_response"));
    assert!(bad(200, r#"{"status":0,"score":5,"action":""}"#).starts_with("invalid_response"));
    assert!(bad(200, r#"{"status":0,"score":"5","action":"c"}"#).starts_with("invalid_response"));
    assert!(bad(200, "<html>").starts_with("invalid_response"));
    assert!(bad(400, "{}").starts_with("bad_request"));
    assert!(
        matches!(answer(503, ""), Err(RiskError::Unavailable(m)) if m.starts_with("server_error"))
    );
    let mut h = HeaderMap::new();
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
    assert_eq!(
        interpret(StatusCode::TOO_MANY_REQUESTS, &h, b"").unwrap_err(),
        RiskError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[test]
fn config_validation_reports_every_problem() {
    let cfg = HumanConfig {
        cookie_secrets: vec!["a".into(), "b".into(), "c".into()],
        min_iterations: 6000,
        base_url: Some("ftp://x".into()),
        ..HumanConfig::default()
    };
    let p = cfg.validate();
    for needle in [
        "app_id",
        "auth_token",
        "cookie_secrets",
        "min_iterations",
        "base_url",
    ] {
        assert!(p.iter().any(|m| m.starts_with(needle)), "{needle}: {p:?}");
    }
    let ok = HumanConfig {
        app_id: "PXabcd1234".into(),
        auth_token: "t".into(),
        ..HumanConfig::default()
    };
    assert!(ok.validate().is_empty());
    assert_eq!(ok.risk_api_base(), "https://sapi-pxabcd1234.perimeterx.net");
    assert_eq!(
        ok.collector_base(),
        "https://collector-pxabcd1234.perimeterx.net"
    );
}

#[test]
fn debug_output_hides_secrets() {
    let cfg = HumanConfig {
        app_id: "PXabcd1234".into(),
        auth_token: "super-secret-token".into(),
        cookie_secrets: vec!["cookie-secret".into()],
        ..HumanConfig::default()
    };
    let d = format!("{cfg:?}");
    assert!(!d.contains("super-secret-token") && !d.contains("cookie-secret"));
}
