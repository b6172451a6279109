//! The native-auth steps as a client (an MSAL SDK, or a script that copies one) makes them:
//! the requests every actor sends on the way to a code, shared by the legitimate users and
//! the attackers.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use super::driver::{Answer, World};
use super::report::Class;
use crate::emulate::entra::DEMO_CLIENT_ID;

/// What every SDK advertises: it can do the MFA and registration loops natively.
pub(crate) const CAPABILITIES: &str = "mfa_required registration_required";
pub(crate) const SCOPE: &str = "openid offline_access";
/// The first-factor types of a password app and of an email-code app.
pub(crate) const PASSWORD_TYPES: &str = "password redirect";
pub(crate) const OOB_TYPES: &str = "oob redirect";
pub(crate) const SIGNUP_TYPES: &str = "oob password redirect";

/// One client at one address.
pub(crate) struct Client<'a> {
    pub world: &'a Arc<World>,
    pub class: Class,
    pub ip: IpAddr,
}

/// What a sign-in's first factor led to.
pub(crate) enum AfterPassword {
    /// `mfa_required`: the token to introspect with.
    Mfa(String),
    /// `registration_required`: the token to register with.
    Register(String),
    /// Signed in without a second factor.
    Done,
    /// Anything else (a wrong password, an error).
    Refused,
}

impl Client<'_> {
    pub(crate) async fn post(&self, endpoint: &str, form: &[(&str, &str)]) -> Answer {
        let mut full = Vec::with_capacity(form.len() + 1);
        full.push(("client_id", DEMO_CLIENT_ID));
        full.extend_from_slice(form);
        self.world
            .post(self.class, self.ip, endpoint, &full, None)
            .await
    }

    /// `initiate`: the flow's first token.
    pub(crate) async fn initiate(&self, username: &str, types: &str) -> Option<String> {
        self.post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", username),
                ("challenge_type", types),
                ("capabilities", CAPABILITIES),
            ],
        )
        .await
        .token()
    }

    /// The first-factor challenge of a password user: Entra asks for the password.
    pub(crate) async fn password_prompt(&self, ct: &str) -> Option<String> {
        let answer = self
            .post(
                "/oauth2/v2.0/challenge",
                &[
                    ("continuation_token", ct),
                    ("challenge_type", PASSWORD_TYPES),
                ],
            )
            .await;
        (answer.body.get("challenge_type").and_then(Value::as_str) == Some("password"))
            .then(|| answer.token())
            .flatten()
    }

    /// The password grant, and what it led to.
    pub(crate) async fn password(&self, ct: &str, password: &str) -> AfterPassword {
        let answer = self
            .post(
                "/oauth2/v2.0/token",
                &[
                    ("continuation_token", ct),
                    ("grant_type", "password"),
                    ("password", password),
                    ("scope", SCOPE),
                ],
            )
            .await;
        after_first_factor(answer)
    }

    /// `introspect` after `mfa_required`: the next token and the methods as (id, channel).
    pub(crate) async fn introspect(&self, ct: &str) -> Option<(String, Vec<(String, String)>)> {
        let answer = self
            .post("/oauth2/v2.0/introspect", &[("continuation_token", ct)])
            .await;
        let methods = answer
            .body
            .get("methods")?
            .as_array()?
            .iter()
            .filter_map(|m| {
                Some((
                    m.get("id")?.as_str()?.to_owned(),
                    m.get("challenge_channel")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        Some((answer.token()?, methods))
    }

    /// `/register/v1.0/introspect`: the methods a user may register; the next token.
    pub(crate) async fn register_introspect(&self, ct: &str) -> Option<String> {
        self.post("/register/v1.0/introspect", &[("continuation_token", ct)])
            .await
            .token()
    }

    /// A token grant with an MFA code.
    pub(crate) async fn mfa_code(&self, ct: &str, code: &str) -> Answer {
        self.post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", ct),
                ("grant_type", "mfa_oob"),
                ("oob", code),
                ("scope", SCOPE),
            ],
        )
        .await
    }

    /// A token grant with a first-factor email code.
    pub(crate) async fn email_code(&self, ct: &str, code: &str) -> Answer {
        self.post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", ct),
                ("grant_type", "oob"),
                ("oob", code),
                ("scope", SCOPE),
            ],
        )
        .await
    }

    /// `/register/v1.0/continue` with the code sent to the new number.
    pub(crate) async fn register_code(&self, ct: &str, code: &str) -> Answer {
        self.post(
            "/register/v1.0/continue",
            &[
                ("continuation_token", ct),
                ("grant_type", "oob"),
                ("oob", code),
            ],
        )
        .await
    }

    /// The token grant that ends a flow whose last step gave only a token (registration,
    /// sign-up).
    pub(crate) async fn redeem(&self, ct: &str) -> AfterPassword {
        let answer = self
            .post(
                "/oauth2/v2.0/token",
                &[
                    ("continuation_token", ct),
                    ("grant_type", "continuation_token"),
                    ("scope", SCOPE),
                ],
            )
            .await;
        after_first_factor(answer)
    }
}

fn after_first_factor(answer: Answer) -> AfterPassword {
    if answer.signed_in() {
        return AfterPassword::Done;
    }
    match (answer.suberror(), answer.token()) {
        (Some("mfa_required"), Some(ct)) => AfterPassword::Mfa(ct),
        (Some("registration_required"), Some(ct)) => AfterPassword::Register(ct),
        _ => AfterPassword::Refused,
    }
}

/// The form of a registration challenge to `phone`.
pub(crate) fn register_form<'a>(ct: &'a str, phone: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("client_id", DEMO_CLIENT_ID),
        ("continuation_token", ct),
        ("challenge_type", "oob"),
        ("challenge_channel", "sms"),
        ("challenge_target", phone),
    ]
}

/// The form of an MFA challenge to the method `id`.
pub(crate) fn mfa_form<'a>(ct: &'a str, id: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("client_id", DEMO_CLIENT_ID),
        ("continuation_token", ct),
        ("id", id),
        ("challenge_type", OOB_TYPES),
    ]
}

/// A code with one digit changed: a typing slip.
pub(crate) fn mistyped(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == '0' { '1' } else { '0' };
    }
    chars.into_iter().collect()
}
