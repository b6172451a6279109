//! The Entra native-auth error body (reference §4). Every answer otpgate gives itself, and
//! every error the Entra emulator returns, has this shape so the MSAL SDKs surface it cleanly.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};

/// An Entra error body. Field names and order follow reference §4.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub error: String,
    pub error_description: String,
    pub error_codes: Vec<u32>,
    pub timestamp: String,
    pub trace_id: String,
    pub correlation_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub suberror: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub continuation_token: Option<String>,
}

impl ErrorBody {
    /// A body for `error` with an `AADSTS{code}: {message}` description, as Entra writes it.
    ///
    /// `correlation_id` is the client's `client-request-id` when it sent one (MSAL matches on
    /// it), otherwise a fresh id.
    pub(crate) fn new(error: &str, code: u32, message: &str, correlation_id: Option<&str>) -> Self {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = correlation_id
            .filter(|c| is_plain_id(c))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let timestamp = entra_timestamp(time::OffsetDateTime::now_utc());
        let error_description = format!(
            "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        );
        Self {
            error: error.to_owned(),
            error_description,
            error_codes: vec![code],
            timestamp,
            trace_id,
            correlation_id,
            suberror: None,
            continuation_token: None,
        }
    }

    pub(crate) fn with_suberror(mut self, suberror: &str) -> Self {
        self.suberror = Some(suberror.to_owned());
        self
    }

    pub(crate) fn with_continuation_token(mut self, token: String) -> Self {
        self.continuation_token = Some(token);
        self
    }

    pub(crate) fn to_json(&self) -> Bytes {
        // Serializing a struct of strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The body as a JSON response with `status`, carrying `x-ms-request-id` like Entra does.
    pub(crate) fn into_response<B: From<Bytes>>(self, status: StatusCode) -> Response<B> {
        json_response(status, self.to_json(), Some(&self.trace_id))
    }
}

/// A JSON response with Entra's content type and, when given, the `x-ms-request-id` header.
pub(crate) fn json_response<B: From<Bytes>>(
    status: StatusCode,
    body: Bytes,
    request_id: Option<&str>,
) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert("x-ms-request-id", id);
    }
    response
}

/// Entra's `timestamp` format: `2024-05-01 10:15:00Z`.
pub(crate) fn entra_timestamp(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// A correlation id we are willing to echo: short, and only characters a GUID uses, so a
/// client cannot inject text into our bodies.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_every_field_msal_reads() {
        let body = ErrorBody::new("access_denied", 500_000, "blocked", Some("abc-123"))
            .with_suberror("provider_blocked_by_rep");
        let json: serde_json::Value = serde_json::from_slice(&body.to_json()).expect("valid json");
        assert_eq!(json["error"], "access_denied");
        assert_eq!(json["suberror"], "provider_blocked_by_rep");
        assert_eq!(json["error_codes"][0], 500_000);
        assert_eq!(json["correlation_id"], "abc-123");
        assert!(json["error_description"]
            .as_str()
            .expect("string")
            .starts_with("AADSTS500000: blocked"));
        assert!(json.get("continuation_token").is_none());
        let ts = json["timestamp"].as_str().expect("string");
        assert_eq!(ts.len(), "2024-05-01 10:15:00Z".len());
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn hostile_correlation_id_is_not_echoed() {
        let body = ErrorBody::new("invalid_request", 900_144, "bad", Some("x\"}<script>"));
        assert_ne!(body.correlation_id, "x\"}<script>");
        assert_eq!(body.correlation_id.len(), 36);
    }
}
