//! The enforcer's logic, without I/O: what a request's HUMAN token says on its own
//! (reference A6), the Risk API's request body (A2) and how its answer is read (A4).

use http::{header, HeaderMap, HeaderName, Version};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::config::{HumanConfig, Settings};
use super::token::{self, TokenError};
use super::{MOBILE_HEADER, ORIGINAL_TOKEN_HEADER, RISK_COOKIE};
use crate::risk::{retry_after, RiskError, RiskRequest};

/// Why the Risk API is called (`additional.s2s_call_reason`, reference A3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallReason {
    NoCookie,
    NoCookieWithVid,
    NoCookieKey,
    CookieExpired,
    CookieDecryptionFailed,
    CookieValidationFailed,
    SensitiveRoute,
    /// A mobile special value: 1 no token yet, 2 connection error, 3 pinning error,
    /// 4 bypass.
    MobileError(u8),
}

impl CallReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallReason::NoCookie => "no_cookie",
            CallReason::NoCookieWithVid => "no_cookie_w_vid",
            CallReason::NoCookieKey => "no_cookie_key",
            CallReason::CookieExpired => "cookie_expired",
            CallReason::CookieDecryptionFailed => "cookie_decryption_failed",
            CallReason::CookieValidationFailed => "cookie_validation_failed",
            CallReason::SensitiveRoute => "sensitive_route",
            CallReason::MobileError(1) => "mobile_error_1",
            CallReason::MobileError(2) => "mobile_error_2",
            CallReason::MobileError(3) => "mobile_error_3",
            CallReason::MobileError(_) => "mobile_error_4",
        }
    }
}

/// Where the token came from (`additional.cookie_origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieOrigin {
    /// The `_px3` cookie of a web client.
    Cookie,
    /// The `X-PX-AUTHORIZATION` header of a mobile-SDK client.
    Header,
}

impl CookieOrigin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CookieOrigin::Cookie => "cookie",
            CookieOrigin::Header => "header",
        }
    }
}

/// What the token alone decides (reference A6).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenOutcome {
    /// Valid, low score, not a sensitive route: pass without calling (`pass_reason: cookie`).
    Pass,
    /// Valid token with a score at or above the blocking score (`cookie_high_score`).
    Block { score: f64, action: String },
    /// Ask the Risk API.
    Call(CallReason),
}

/// The mobile `X-PX-ORIGINAL-TOKEN`, evaluated when the main header holds a special value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OriginalToken {
    pub raw: String,
    pub uuid: Option<String>,
    pub decoded: Option<String>,
    /// `decryption_failed` or `validation_failed` (NODE/PHP names).
    pub error: Option<&'static str>,
}

/// Everything read from the request's HUMAN cookies and headers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenState {
    pub outcome: TokenOutcome,
    pub origin: CookieOrigin,
    pub vid: Option<String>,
    /// `risk_cookie` or `vid_cookie`, when `vid` is known.
    pub vid_source: Option<&'static str>,
    pub uuid: Option<String>,
    pub pxhd: Option<String>,
    pub cookie_names: Vec<String>,
    /// The raw token, reported as `px_orig_cookie` when it was not decrypted: it cannot
    /// be, or its HMAC matched no secret and signed fields (see [`token`]).
    pub raw_token: Option<String>,
    /// The decrypted payload JSON and the token's HMAC, reported as `px_cookie` /
    /// `px_cookie_hmac`.
    pub decoded: Option<(String, String)>,
    pub original: Option<OriginalToken>,
}

pub(super) fn user_agent(req: &RiskRequest) -> &str {
    req.user_agent
        .as_deref()
        .or_else(|| req.header(header::USER_AGENT.as_str()))
        .unwrap_or("")
}

/// `name=value` pairs from `Cookie` headers and the custom cookie header, in order.
pub(super) fn cookies(headers: &HeaderMap, custom: Option<&HeaderName>) -> Vec<(String, String)> {
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .chain(custom.into_iter().flat_map(|h| headers.get_all(h).iter()));
    let mut out = Vec::new();
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, v)) = pair.split_once('=') {
                out.push((name.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

/// A v1–v5 UUID in lower-case canonical form, the only `_pxvid` values accepted.
pub(super) fn is_vid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && (b'1'..=b'5').contains(&b[14])
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// [`read_token`] under the settings `cfg` builds: the fuzz checks compare it with the
/// token functions.
pub(crate) fn read_token_with(cfg: &HumanConfig, req: &RiskRequest, now_ms: f64) -> TokenState {
    read_token(req, &Settings::new(cfg), now_ms)
}

/// Reads the request's HUMAN token and decides what it alone says (reference A6, with the
/// HMAC checked before decryption and again right after it: see [`token`]). `now_ms` is
/// the wall clock in epoch ms.
pub(super) fn read_token(req: &RiskRequest, s: &Settings, now_ms: f64) -> TokenState {
    let jar = cookies(&req.headers, s.custom_cookie_header.as_ref());
    let find = |name: &str| jar.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let pxhd = find("_pxhd");
    let mut st = TokenState {
        outcome: TokenOutcome::Call(CallReason::NoCookie),
        origin: CookieOrigin::Cookie,
        vid: None,
        vid_source: None,
        uuid: None,
        pxhd: pxhd.clone(),
        cookie_names: jar.iter().map(|(n, _)| n.clone()).collect(),
        raw_token: None,
        decoded: None,
        original: None,
    };
    let socket_ip = req.client_ip.to_string();
    let ua = user_agent(req);

    let (raw, mobile) = if let Some(value) = req.headers.get(MOBILE_HEADER) {
        st.origin = CookieOrigin::Header;
        st.cookie_names.clear();
        let value = value.to_str().unwrap_or("");
        if let [digit @ b'1'..=b'4'] = value.as_bytes() {
            st.outcome = TokenOutcome::Call(CallReason::MobileError(digit - b'0'));
            if let Some(orig) = req
                .headers
                .get(ORIGINAL_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                let original = read_original(orig, s, now_ms);
                if original.error.is_none() {
                    if let Some((plain, _)) = &original.decoded {
                        if let Ok(p) = serde_json::from_str::<token::Payload>(plain) {
                            st.vid = Some(p.v);
                            st.vid_source = Some("risk_cookie");
                        }
                    }
                }
                st.original = Some(OriginalToken {
                    raw: original.raw,
                    uuid: original.uuid,
                    decoded: original.decoded.map(|(plain, _)| plain),
                    error: original.error,
                });
            }
            return st;
        }
        match value.strip_prefix("3:") {
            Some(t) => (t.to_owned(), true),
            None => {
                st.raw_token = Some(value.to_owned());
                st.outcome = TokenOutcome::Call(CallReason::CookieDecryptionFailed);
                return st;
            }
        }
    } else {
        if let Some(vid) = find("_pxvid")
            .or_else(|| find("pxvid"))
            .filter(|v| is_vid(v))
        {
            st.vid = Some(vid);
            st.vid_source = Some("vid_cookie");
        }
        match find(RISK_COOKIE) {
            Some(raw) => {
                let raw = percent_encoding::percent_decode_str(&raw)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .unwrap_or(raw);
                (raw, false)
            }
            None => {
                let reason = if pxhd.is_some() {
                    CallReason::NoCookieWithVid
                } else {
                    CallReason::NoCookie
                };
                st.outcome = TokenOutcome::Call(reason);
                return st;
            }
        }
    };

    if s.secrets.is_empty() {
        st.outcome = TokenOutcome::Call(CallReason::NoCookieKey);
        return st;
    }
    let verified = token::verify_cached(
        &raw, &s.secrets, &s.limits, mobile, ua, &socket_ip, &s.tokens, now_ms,
    );
    let hmac = raw.split(':').next().unwrap_or("").to_owned();
    let (decrypted, hmac_ok) = match verified {
        Err(error) => {
            st.raw_token = Some(raw);
            st.outcome = TokenOutcome::Call(match error {
                TokenError::Decryption => CallReason::CookieDecryptionFailed,
                TokenError::Validation => CallReason::CookieValidationFailed,
            });
            return st;
        }
        Ok(v) => v,
    };
    st.decoded = Some((decrypted.plaintext.clone(), hmac));
    if !hmac_ok {
        st.outcome = TokenOutcome::Call(CallReason::CookieValidationFailed);
        return st;
    }
    let payload = decrypted.payload;
    st.vid = Some(payload.v.clone());
    st.vid_source = Some("risk_cookie");
    st.uuid = Some(payload.u.clone());
    st.outcome = if payload.t < now_ms {
        TokenOutcome::Call(CallReason::CookieExpired)
    } else if payload.s >= s.blocking_score {
        TokenOutcome::Block {
            score: payload.s,
            action: payload.a,
        }
    } else if s.sensitive_route {
        TokenOutcome::Call(CallReason::SensitiveRoute)
    } else {
        TokenOutcome::Pass
    };
    st
}

pub(super) struct OriginalRead {
    pub(super) raw: String,
    pub(super) uuid: Option<String>,
    pub(super) decoded: Option<(String, String)>,
    pub(super) error: Option<&'static str>,
}

pub(super) fn read_original(value: &str, s: &Settings, now_ms: f64) -> OriginalRead {
    let mut out = OriginalRead {
        raw: value.to_owned(),
        uuid: None,
        decoded: None,
        error: Some("decryption_failed"),
    };
    let Some(raw) = value.strip_prefix("3:") else {
        return out;
    };
    match token::verify_cached(raw, &s.secrets, &s.limits, true, "", "", &s.tokens, now_ms) {
        Ok((d, ok)) => {
            let hmac = raw.split(':').next().unwrap_or("").to_owned();
            out.error = if ok { None } else { Some("validation_failed") };
            if ok {
                out.uuid = Some(d.payload.u.clone());
            }
            out.decoded = Some((d.plaintext, hmac));
        }
        Err(TokenError::Validation) => out.error = Some("validation_failed"),
        Err(TokenError::Decryption) => {}
    }
    out
}

pub(super) fn http_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `[{name, value}]`, one entry per value, minus the sensitive headers; the user agent is
/// added when the request carries it only as a field.
pub(super) fn header_list(req: &RiskRequest, s: &Settings) -> Vec<Value> {
    let mut out: Vec<Value> = req
        .headers
        .iter()
        .filter(|(name, _)| !s.sensitive_headers.contains(name))
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some(json!({"name": name.as_str(), "value": value}))
        })
        .collect();
    if !req.headers.contains_key(header::USER_AGENT) {
        if let Some(ua) = &req.user_agent {
            out.push(json!({"name": "user-agent", "value": ua}));
        }
    }
    out
}

/// Per-request facts shared by the Risk API body and the activities.
pub(super) struct Call<'a> {
    pub(super) req: &'a RiskRequest,
    pub(super) st: &'a TokenState,
    pub(super) monitor: bool,
    pub(super) request_id: String,
    pub(super) enforcer_start: u64,
}

impl Call<'_> {
    pub(super) fn risk_mode(&self) -> &'static str {
        if self.monitor {
            "monitor"
        } else {
            "active_blocking"
        }
    }
}

/// The Risk API request body (reference A2). Sends `request.socket_ip` (newest cores) and
/// the NODE field names elsewhere; the vid source goes in both places the cores use.
pub(super) fn risk_body(c: &Call<'_>, s: &Settings, reason: CallReason, risk_start: u64) -> Value {
    let req = c.req;
    let st = c.st;
    let mut additional = Map::new();
    let mut put = |k: &str, v: Value| {
        additional.insert(k.to_owned(), v);
    };
    put("s2s_call_reason", json!(reason.as_str()));
    put("http_version", json!(http_version(req.http_version)));
    put("http_method", json!(req.method.as_str()));
    put("risk_mode", json!(c.risk_mode()));
    put("module_version", json!(s.module_version));
    put("cookie_origin", json!(st.origin.as_str()));
    put("request_cookie_names", json!(st.cookie_names));
    put("request_id", json!(c.request_id));
    put(
        "enforcer_vid_source",
        json!(st.vid_source.unwrap_or("none")),
    );
    put("enforcer_start_time", json!(c.enforcer_start));
    put("risk_start_time", json!(risk_start));
    match reason {
        CallReason::CookieDecryptionFailed => {
            if let Some(raw) = &st.raw_token {
                put("px_orig_cookie", json!(raw));
            }
        }
        CallReason::CookieExpired
        | CallReason::CookieValidationFailed
        | CallReason::SensitiveRoute => {
            if let Some((plain, hmac)) = &st.decoded {
                put("px_cookie", json!(plain));
                put("px_cookie_hmac", json!(hmac));
            } else if let Some(raw) = &st.raw_token {
                // Refused before decryption (its HMAC matched nothing): sent as received.
                put("px_orig_cookie", json!(raw));
            }
        }
        _ => {}
    }
    if let Some(orig) = &st.original {
        put("original_token", json!(orig.raw));
        if let Some(u) = &orig.uuid {
            put("original_uuid", json!(u));
        }
        if let Some(d) = &orig.decoded {
            put("px_decoded_original_token", json!(d));
        }
        if let Some(e) = orig.error {
            put("original_token_error", json!(e));
        }
    }
    let mut body = json!({
        "request": {
            "socket_ip": req.client_ip.to_string(),
            "headers": header_list(req, s),
            "url": req.url,
        },
        "additional": additional,
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(vid) = &st.vid {
            obj.insert("vid".into(), json!(vid));
        }
        if let Some(src) = st.vid_source {
            obj.insert("vid_source".into(), json!(src));
        }
        if let Some(uuid) = &st.uuid {
            obj.insert("client_uuid".into(), json!(uuid));
        }
        if let Some(pxhd) = &st.pxhd {
            obj.insert("pxhd".into(), json!(pxhd));
        }
    }
    body
}

/// A Risk API response (reference A4).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct RiskResponse {
    pub(super) status: Option<i64>,
    pub(super) uuid: Option<String>,
    pub(super) score: Option<f64>,
    pub(super) action: Option<String>,
    pub(super) pxhd: Option<String>,
    pub(super) action_data: Option<ActionData>,
    pub(super) message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ActionData {
    pub(super) body: Option<String>,
}

/// A response that passed validation: success status, numeric score, an action.
#[derive(Debug, Clone)]
pub(super) struct RiskAnswer {
    pub(super) uuid: Option<String>,
    pub(super) score: f64,
    pub(super) action: String,
    pub(super) pxhd: Option<String>,
    pub(super) challenge_body: Option<String>,
}

/// Maps the HTTP answer of the Risk API to a validated response or an error (A4).
pub(super) fn interpret(
    status: http::StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<RiskAnswer, RiskError> {
    if status == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(RiskError::RateLimited {
            retry_after: retry_after(headers),
        });
    }
    if status.is_server_error() {
        return Err(RiskError::Unavailable(format!(
            "server_error: http {}",
            status.as_u16()
        )));
    }
    if status.is_client_error() {
        return Err(RiskError::BadResponse(format!(
            "bad_request: http {}",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(RiskError::Unavailable(format!(
            "unknown_error: http {}",
            status.as_u16()
        )));
    }
    let r: RiskResponse = serde_json::from_slice(body)
        .map_err(|_| RiskError::BadResponse("invalid_response: not a risk response".into()))?;
    if r.status != Some(0) {
        let message = r.message.unwrap_or_default();
        let message: String = message.chars().take(200).collect();
        return Err(RiskError::BadResponse(format!(
            "request_failed_on_server: {message}"
        )));
    }
    match (r.score, r.action) {
        (Some(score), Some(action)) if !action.is_empty() && (0.0..=100.0).contains(&score) => {
            Ok(RiskAnswer {
                uuid: r.uuid,
                score,
                action,
                pxhd: r.pxhd,
                challenge_body: r.action_data.and_then(|d| d.body),
            })
        }
        _ => Err(RiskError::BadResponse(
            "invalid_response: score or action missing".into(),
        )),
    }
}
