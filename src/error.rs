//! Faults the gateway answers itself, mapped to Entra-shaped responses by their source:
//! client → 400/405/413/431, upstream → 502/504, overload → 503, ours → 500. No internal
//! detail reaches a body; only unexpected faults are logged as errors.

use http::{HeaderValue, StatusCode};

use crate::entra::error::ErrorBody;
use crate::proxy::Body;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("unknown host")]
    UnknownHost,
    #[error("not from the configured Front Door")]
    NotFromFrontDoor,
    #[error("body too large")]
    BodyTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("unsupported charset")]
    UnsupportedCharset,
    #[error("overloaded")]
    Overloaded,
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// A short stable label for logs and metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::UnknownHost => "unknown_host",
            Self::NotFromFrontDoor => "not_from_front_door",
            Self::BodyTooLarge => "body_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnsupportedCharset => "unsupported_charset",
            Self::Overloaded => "overloaded",
            Self::UpstreamUnreachable(_) => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Internal(_) => "internal",
        }
    }

    /// The response a client gets for this fault. `correlation_id` is the client's
    /// `client-request-id`, echoed as Entra does.
    pub(crate) fn to_response(&self, correlation_id: Option<&str>) -> http::Response<Body> {
        // AADSTS codes: 900144 is Entra's "request body must contain the following
        // parameter" family of invalid_request; the others are gateway-chosen and stable.
        let (status, error, code, message) = match self {
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, "invalid_request", 900144, *why),
            Self::MethodNotAllowed(why) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                900144,
                *why,
            ),
            Self::UnknownHost => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request host is not served here.",
            ),
            Self::NotFromFrontDoor => (
                StatusCode::FORBIDDEN,
                "invalid_request",
                900144,
                "The request did not come through the expected front door.",
            ),
            Self::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                900144,
                "The request body is too large.",
            ),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                900144,
                "The request headers are too large.",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                900144,
                "The request body must be application/x-www-form-urlencoded.",
            ),
            Self::UnsupportedCharset => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                900144,
                "The request body must be encoded as UTF-8 (charset=utf-8).",
            ),
            Self::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                503,
                "The server is busy. Please try again.",
            ),
            Self::UpstreamUnreachable(_) => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                502,
                "The authentication service could not be reached.",
            ),
            Self::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                504,
                "The authentication service did not answer in time.",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                500,
                "An internal error occurred.",
            ),
        };
        match self {
            Self::Internal(detail) => tracing::error!(detail = %detail, "internal error"),
            Self::UpstreamUnreachable(detail) => {
                tracing::warn!(detail = %detail, "upstream unreachable")
            }
            _ => {}
        }
        let mut resp = ErrorBody::new(error, code, message, correlation_id)
            .into_response::<http_body_util::Full<bytes::Bytes>>(status)
            .map(crate::proxy::full);
        if matches!(self, Self::Overloaded) {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
