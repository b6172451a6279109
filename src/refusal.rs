//! Entra-shaped bodies for the answers the HTTP layer writes on its own.
//!
//! hyper answers a request head it cannot parse (a garbage request line, a malformed
//! header, a head over the buffer) itself, with an empty `400`, `414` or `431`, before any
//! service runs. Every other answer otpgate gives has Entra's error shape, so MSAL surfaces
//! it; these should too. The connection's writer recognises hyper's own refusal by its exact
//! bytes (`HTTP/1.1 431 Request Header Fields Too Large`, `connection: close`,
//! `content-length: 0`, `date`, nothing else) when no request of the connection is open, and
//! writes [`entra_refusal`] in its place. A response that merely looks like it (an empty
//! upstream 400 with no other header) would become an Entra-shaped 400 of the same status,
//! which is harmless.

use http::StatusCode;

use crate::entra::error::ErrorBody;

/// The status of hyper's automatic refusal if `bytes` are exactly one, and the `date`
/// value it carried.
pub(crate) fn hyper_refusal(bytes: &[u8]) -> Option<(StatusCode, Option<&str>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.strip_prefix("HTTP/1.1 ")?;
    let (code, reason) = status_line.split_once(' ')?;
    let status = match code {
        "400" => StatusCode::BAD_REQUEST,
        "414" => StatusCode::URI_TOO_LONG,
        "431" => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    if Some(reason) != status.canonical_reason() {
        return None;
    }
    let mut date = None;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        match name {
            "connection" if value == "close" => {}
            "content-length" if value == "0" => empty = true,
            "date" if date.is_none() && value.len() < 64 => date = Some(value),
            _ => return None,
        }
    }
    empty.then_some((status, date))
}

/// The Entra-shaped answer written in place of hyper's refusal: same status, JSON body,
/// `connection: close` (hyper closes the connection after it either way).
pub(crate) fn entra_refusal(status: StatusCode, date: Option<&str>) -> Vec<u8> {
    let message = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "The request headers are too large.",
        StatusCode::URI_TOO_LONG => "The request URI is too long.",
        _ => "The request could not be parsed as HTTP.",
    };
    let body = ErrorBody::new("invalid_request", 900144, message, None);
    let json = body.to_json();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json; charset=utf-8\r\n\
         cache-control: no-store, no-cache\r\nx-ms-request-id: {}\r\nconnection: close\r\n\
         content-length: {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        body.trace_id,
        json.len()
    );
    if let Some(date) = date {
        out.push_str("date: ");
        out.push_str(date);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&json);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Wed, 02 Dec 2026 04:19:30 GMT";

    #[test]
    fn hypers_own_refusals_are_recognised_exactly() {
        // What hyper 1 writes, byte for byte.
        let written = [
            ("HTTP/1.1 400 Bad Request", StatusCode::BAD_REQUEST),
            (
                "HTTP/1.1 431 Request Header Fields Too Large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            ("HTTP/1.1 414 URI Too Long", StatusCode::URI_TOO_LONG),
        ];
        for (line, status) in written {
            let bytes =
                format!("{line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n");
            assert_eq!(
                hyper_refusal(bytes.as_bytes()),
                Some((status, Some(DATE))),
                "{line}"
            );
        }
        let not_refusals = [
            // A body, another header, another status, another version, a second message.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\ndate: {DATE}\r\n\r\nok"),
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-ms-request-id: 1\r\n\r\n".to_owned(),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            "HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Nope\r\ncontent-length: 0\r\n\r\n".to_owned(),
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
                .to_owned(),
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n".to_owned(),
        ];
        for bytes in not_refusals {
            assert_eq!(hyper_refusal(bytes.as_bytes()), None, "{bytes:?}");
        }
    }

    #[test]
    fn the_refusal_written_instead_is_entra_shaped() {
        let bytes = entra_refusal(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Some(DATE));
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json; charset=utf-8"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert!(head.contains(&format!("\r\ndate: {DATE}")));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "invalid_request");
        assert!(json["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS900144: The request headers are too large."));
        for field in ["error_codes", "timestamp", "trace_id", "correlation_id"] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }
}
