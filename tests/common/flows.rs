//! Native-auth flows driven over HTTP against any base URL (a gateway process, or a load
//! balancer's pick of one), for tests that do not use the in-process [`super::entra::Env`].

use otpgate::emulate::entra::{DEMO_CLIENT_ID, DEMO_PASSWORD};

pub const TENANT_PATH: &str = "/contoso.onmicrosoft.com";

/// A JIT registration of `newphone@contoso.com` up to its introspect answer: the
/// continuation token for the SMS challenge, or an error text for anything that failed
/// along the way (a transport error, a 5xx, an answer without a continuation token). `base` is asked for the
/// URL of each step, so consecutive steps may go to different replicas.
pub async fn register_until_challenge(
    client: &reqwest::Client,
    base: impl Fn() -> String,
) -> Result<String, String> {
    let mut ct = String::new();
    for (path, form) in [
        (
            "/oauth2/v2.0/initiate",
            vec![
                ("username", "newphone@contoso.com".to_owned()),
                ("challenge_type", "password redirect".into()),
                ("capabilities", "mfa_required registration_required".into()),
            ],
        ),
        (
            "/oauth2/v2.0/challenge",
            vec![("challenge_type", "password redirect".into())],
        ),
        (
            "/oauth2/v2.0/token",
            vec![
                ("grant_type", "password".into()),
                ("password", DEMO_PASSWORD.into()),
                ("scope", "openid".into()),
            ],
        ),
        ("/register/v1.0/introspect", vec![]),
    ] {
        let mut fields = vec![("client_id", DEMO_CLIENT_ID.to_owned())];
        fields.extend(form);
        if !ct.is_empty() {
            fields.push(("continuation_token", ct.clone()));
        }
        let r = client
            .post(format!("{}{TENANT_PATH}{path}", base()))
            .form(&fields)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.map_err(|e| format!("{path}: {e}"))?;
        // The token step answers `400 registration_required` with the token to go on.
        if status != 200 && status != 400 {
            return Err(format!("{path}: {status} {body}"));
        }
        ct = body["continuation_token"]
            .as_str()
            .ok_or_else(|| format!("{path}: no continuation_token in {body}"))?
            .to_owned();
    }
    Ok(ct)
}

/// The registration's SMS challenge to `phone`, ready to send.
pub fn sms_challenge(
    client: &reqwest::Client,
    base: &str,
    ct: &str,
    phone: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}{TENANT_PATH}/register/v1.0/challenge"))
        .form(&[
            ("client_id", DEMO_CLIENT_ID),
            ("continuation_token", ct),
            ("challenge_type", "oob"),
            ("challenge_channel", "sms"),
            ("challenge_target", phone),
        ])
}
