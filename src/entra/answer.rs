//! The answers otpgate gives instead of forwarding an OTP send: deny, throttle and step-up,
//! each in a shape the MSAL SDKs handle (reference §4, §9.4).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::error::{json_response, ErrorBody};
use crate::config::DenyStyle;

/// AADSTS code on our `access_denied` answers. Entra documents none for
/// `provider_blocked_by_rep`; this one is stable so analysts can search for it.
pub(crate) const DENY_CODE: u32 = 500_571;
/// AADSTS code on our step-up answers (gateway-chosen, stable).
pub(crate) const STEP_UP_CODE: u32 = 500_572;

/// A denied send. `AccessDenied` is `400 access_denied` with suberror
/// `provider_blocked_by_rep`, which MSAL reports as a blocked verification contact
/// (`isVerificationContactBlocked()`); `Redirect` is Entra's own answer when it blocks a
/// risky SMS: `200 {"challenge_type":"redirect"}` (web fallback), with the
/// `redirect_reason` every MSAL SDK reads (msal-browser shows it as the error text).
pub fn deny(style: DenyStyle, correlation_id: Option<&str>) -> Response<Full<Bytes>> {
    match style {
        DenyStyle::AccessDenied => ErrorBody::new(
            "access_denied",
            DENY_CODE,
            "The verification contact was blocked.",
            correlation_id,
        )
        .with_suberror("provider_blocked_by_rep")
        .into_response(StatusCode::BAD_REQUEST),
        DenyStyle::Redirect => json_response(
            StatusCode::OK,
            Bytes::from_static(
                br#"{"challenge_type":"redirect","redirect_reason":"The request was blocked by fraud protection."}"#,
            ),
            None,
        ),
    }
}

/// Too many sends: `429 temporarily_unavailable` with `Retry-After` in whole seconds
/// (at least 1), as Entra throttles. Entra documents no AADSTS code for its 429; 50196 (its
/// "request loop" throttle) is the closest and is what we send.
pub fn throttle(retry_after: Duration, correlation_id: Option<&str>) -> Response<Full<Bytes>> {
    let mut resp = ErrorBody::new(
        "temporarily_unavailable",
        50_196,
        "The server has terminated the request due to excessive request rate. Please wait a few seconds and try again.",
        correlation_id,
    )
    .into_response(StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    resp
}

/// The body of a step-up answer: an Entra error (`400 access_denied`, suberror
/// `challenge_required`) with one extra object, `otpgate_challenge`, describing what the
/// client must solve before retrying the same request with the proof.
#[derive(Debug, Serialize)]
pub(crate) struct StepUpBody<C: Serialize> {
    #[serde(flatten)]
    pub error: ErrorBody,
    pub otpgate_challenge: C,
}

/// Suberror of a step-up answer.
pub(crate) const STEP_UP_SUBERROR: &str = "challenge_required";

pub fn step_up<C: Serialize>(challenge: C, correlation_id: Option<&str>) -> Response<Full<Bytes>> {
    let error = ErrorBody::new(
        "access_denied",
        STEP_UP_CODE,
        "Additional verification is required before a code can be sent.",
        correlation_id,
    )
    .with_suberror(STEP_UP_SUBERROR);
    let trace = error.trace_id.clone();
    let body = StepUpBody {
        error,
        otpgate_challenge: challenge,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    json_response(StatusCode::BAD_REQUEST, Bytes::from(bytes), Some(&trace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn json(resp: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn deny_styles() {
        let resp = deny(DenyStyle::AccessDenied, Some("c-1"));
        assert_eq!(resp.status(), 400);
        let j = json(resp).await;
        assert_eq!(j["error"], "access_denied");
        assert_eq!(j["suberror"], "provider_blocked_by_rep");
        assert_eq!(j["correlation_id"], "c-1");

        let resp = deny(DenyStyle::Redirect, None);
        assert_eq!(resp.status(), 200);
        assert_eq!(
            json(resp).await,
            serde_json::json!({
                "challenge_type": "redirect",
                "redirect_reason": "The request was blocked by fraud protection."
            })
        );
    }

    #[tokio::test]
    async fn throttle_rounds_retry_after_up() {
        let resp = throttle(Duration::from_millis(1500), None);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(json(resp).await["error"], "temporarily_unavailable");
        assert_eq!(throttle(Duration::ZERO, None).headers()["retry-after"], "1");
    }

    #[tokio::test]
    async fn step_up_is_an_entra_error_with_a_challenge() {
        let resp = step_up(serde_json::json!({"type": "altcha", "salt": "s"}), None);
        assert_eq!(resp.status(), 400);
        let j = json(resp).await;
        assert_eq!(j["error"], "access_denied");
        assert_eq!(j["suberror"], STEP_UP_SUBERROR);
        assert_eq!(j["otpgate_challenge"]["type"], "altcha");
        assert!(j["trace_id"].is_string());
    }
}
