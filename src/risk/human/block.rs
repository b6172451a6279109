//! HUMAN's block and challenge responses (reference A10): the captcha HTML page, the
//! Advanced Blocking Response JSON for XHR clients, and the mobile-SDK JSON. Status 403,
//! except action `r` (rate limit), which is 429.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;

use crate::risk::ProviderChallenge;

/// How the client should be answered, picked from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// A mobile-SDK client (`X-PX-AUTHORIZATION` present).
    Mobile,
    /// An XHR / fetch client (`Accept` or `Content-Type` names `application/json`).
    Json,
    Html,
}

/// What a block page needs to know.
#[derive(Debug, Clone)]
pub(super) struct Block<'a> {
    pub app_id: &'a str,
    /// The action letter (`c`, `b`, `j`, `r`, `hsc`, `cp`, …).
    pub action: &'a str,
    pub uuid: &'a str,
    pub vid: &'a str,
    /// Collector base URL the page's scripts talk to.
    pub collector_url: &'a str,
    pub custom_logo: Option<&'a str>,
    /// `action_data.body` of the Risk API response, served verbatim for action `j`.
    pub challenge_body: Option<&'a str>,
    /// A `Set-Cookie` value for `_pxhd`, when the Risk API sent one.
    pub set_pxhd: Option<HeaderValue>,
}

/// The word the mobile SDK expects for an action letter (NODE `pxutil.parseAction`).
pub(crate) fn action_word(action: &str) -> &'static str {
    match action {
        "b" => "block",
        "j" => "challenge",
        "r" => "ratelimit",
        _ => "captcha",
    }
}

impl Block<'_> {
    fn status(&self) -> StatusCode {
        if self.action == "r" {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::FORBIDDEN
        }
    }

    fn query(&self, mobile: bool) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!(
            "a={}&u={}&v={}&m={}",
            enc(self.action),
            enc(self.uuid),
            enc(self.vid),
            u8::from(mobile)
        )
    }

    fn block_script(&self, mobile: bool) -> String {
        format!(
            "//captcha.px-cdn.net/{}/captcha.js?{}",
            self.app_id,
            self.query(mobile)
        )
    }

    fn alt_block_script(&self, mobile: bool) -> String {
        format!(
            "https://captcha.px-cloud.net/{}/captcha.js?{}",
            self.app_id,
            self.query(mobile)
        )
    }

    fn js_client_src(&self) -> String {
        format!("//client.perimeterx.net/{}/main.min.js", self.app_id)
    }

    /// The response for a client of the given format.
    pub(super) fn render(&self, format: Format) -> ProviderChallenge {
        let (content_type, body) = match format {
            Format::Mobile => ("application/json", self.mobile_json()),
            // The rate-limit page is never served as the XHR JSON (A10 §2).
            Format::Json if self.action != "r" => ("application/json", self.abr_json()),
            Format::Json | Format::Html => ("text/html", self.html(false)),
        };
        let mut headers = HeaderMap::new();
        if let Some(cookie) = &self.set_pxhd {
            headers.insert(header::SET_COOKIE, cookie.clone());
        }
        ProviderChallenge {
            status: self.status(),
            content_type: content_type.to_owned(),
            body: Bytes::from(body),
            headers,
        }
    }

    fn mobile_json(&self) -> String {
        json!({
            "action": action_word(self.action),
            "uuid": self.uuid,
            "vid": self.vid,
            "appId": self.app_id,
            "page": B64.encode(self.html(true)),
            "collectorUrl": self.collector_url,
        })
        .to_string()
    }

    fn abr_json(&self) -> String {
        json!({
            "appId": self.app_id,
            "jsClientSrc": self.js_client_src(),
            "firstPartyEnabled": false,
            "vid": self.vid,
            "uuid": self.uuid,
            "hostUrl": self.collector_url,
            "blockScript": self.block_script(false),
            "altBlockScript": self.alt_block_script(false),
            "customLogo": self.custom_logo.unwrap_or(""),
        })
        .to_string()
    }

    fn html(&self, mobile: bool) -> String {
        match (self.action, self.challenge_body) {
            ("j", Some(body)) => body.to_owned(),
            ("r", _) => RATE_LIMIT_PAGE.to_owned(),
            _ => self.captcha_page(mobile),
        }
    }

    fn captcha_page(&self, mobile: bool) -> String {
        let logo = match self.custom_logo {
            Some(src) => format!(r#"<img class="px-logo" src="{}" alt="">"#, html_escape(src)),
            None => String::new(),
        };
        format!(
            r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>Access to this page has been denied</title>
<style>
body{{margin:0;font-family:Arial,Helvetica,sans-serif;color:#3c3c3c;background:#fff}}
.px-container{{max-width:480px;margin:10vh auto;padding:24px;text-align:center}}
.px-logo{{max-height:48px;margin-bottom:24px}}
.px-ref{{margin-top:24px;font-size:12px;color:#888}}
</style>
<script>
window._pxVid = {vid};
window._pxUuid = {uuid};
window._pxAppId = {app_id};
window._pxHostUrl = {host_url};
window._pxCustomLogo = {logo_js};
window._pxJsClientSrc = {js_client};
window._pxMobile = {mobile};
window._pxFirstPartyEnabled = false;
window._pxBlockScript = {block_script};
window._pxAltBlockScript = {alt_block_script};
</script>
</head>
<body>
<div class="px-container">
{logo}
<div id="px-captcha"></div>
<p>Press &amp; Hold to confirm you are a human (and not a bot).</p>
<p class="px-ref">Reference ID {uuid_text}</p>
</div>
<script>
(function () {{
  function load(src, onError) {{
    var s = document.createElement("script");
    s.src = src;
    if (onError) s.onerror = onError;
    document.head.appendChild(s);
  }}
  var fallback = setTimeout(function () {{ load(window._pxAltBlockScript); }}, 5000);
  load(window._pxBlockScript, function () {{
    clearTimeout(fallback);
    load(window._pxAltBlockScript);
  }});
}})();
</script>
</body>
</html>
"#,
            vid = js_string(self.vid),
            uuid = js_string(self.uuid),
            app_id = js_string(self.app_id),
            host_url = js_string(self.collector_url),
            logo_js = js_string(self.custom_logo.unwrap_or("")),
            js_client = js_string(&self.js_client_src()),
            mobile = mobile,
            block_script = js_string(&self.block_script(mobile)),
            alt_block_script = js_string(&self.alt_block_script(mobile)),
            uuid_text = html_escape(self.uuid),
        )
    }
}

const RATE_LIMIT_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Too Many Requests</title></head>
<body><h1>Too Many Requests</h1><p>Reached the maximum number of requests. Please try again later.</p></body>
</html>
"#;

/// A JSON string literal safe inside an HTML `<script>` element.
fn js_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned())
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn block(action: &'static str) -> Block<'static> {
        Block {
            app_id: "PXtest1234",
            action,
            uuid: "8f1f0000-0000-4000-8000-000000000000",
            vid: "a0b1c2d3-0e97-11e6-80b6-095df820282c",
            collector_url: "https://collector-pxtest1234.perimeterx.net",
            custom_logo: None,
            challenge_body: Some("<html>js challenge</html>"),
            set_pxhd: None,
        }
    }

    #[test]
    fn mobile_json_carries_the_action_word_and_a_base64_page() {
        let c = block("c").render(Format::Mobile);
        assert_eq!(c.status, StatusCode::FORBIDDEN);
        assert_eq!(c.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(v["action"], "captcha");
        assert_eq!(v["appId"], "PXtest1234");
        assert_eq!(
            v["collectorUrl"],
            "https://collector-pxtest1234.perimeterx.net"
        );
        let page = String::from_utf8(B64.decode(v["page"].as_str().unwrap()).unwrap()).unwrap();
        assert!(page.contains("Access to this page has been denied"));
        assert!(page.contains("m=1"));
    }

    #[test]
    fn rate_limit_is_429_and_never_the_xhr_json() {
        let c = block("r").render(Format::Json);
        assert_eq!(c.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(c.content_type, "text/html");
        assert!(String::from_utf8_lossy(&c.body).contains("Too Many Requests"));
    }

    #[test]
    fn xhr_json_has_the_abr_fields() {
        let c = block("c").render(Format::Json);
        let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        for key in [
            "appId",
            "jsClientSrc",
            "firstPartyEnabled",
            "vid",
            "uuid",
            "hostUrl",
            "blockScript",
            "altBlockScript",
            "customLogo",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert!(v["blockScript"]
            .as_str()
            .unwrap()
            .starts_with("//captcha.px-cdn.net/PXtest1234/captcha.js?a=c&u="));
    }

    #[test]
    fn js_challenge_serves_the_risk_api_body_verbatim() {
        let c = block("j").render(Format::Html);
        assert_eq!(&c.body[..], b"<html>js challenge</html>");
    }

    #[test]
    fn hostile_values_cannot_break_out_of_the_script() {
        let mut b = block("c");
        b.vid = "</script><script>alert(1)</script>";
        let page = b.captcha_page(false);
        assert!(!page.contains("</script><script>alert"));
    }
}
