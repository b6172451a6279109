//! Sign-up (reference §5.2): `start`, `challenge` (email code or password), and `continue`
//! with a code, a password or attributes, until the account exists and a continuation token
//! can be redeemed at `/oauth2/v2.0/token`.
//!
//! `start` answers an empty or non-email `username` with `400 invalid_request`,
//! `error_codes` `[90100]`, "AADSTS90100: username parameter is empty or not valid." (the
//! body all three SDKs map to an invalid username: iOS `MSALNativeAuthSignUpResponseValidator`
//! and Android `SignUpStartApiResponse` key on `error_codes[0] == 90100`, iOS also on
//! `invalid_request`, iOS and msal-browser on the case-sensitive text). A list without
//! `oob`, or without `password` when a password is asked for, is a redirect with its
//! `redirect_reason`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::config::Channel;
use super::request::Cx;
use super::state::{FlowCtx, SignUpDraft, Step};
use super::wire::{mask_email, ChallengeTypes, Fault, RedirectReason, Reply};

/// Seconds a client should wait before asking for another sign-up code (reference §10).
const RESEND_INTERVAL_SECS: u64 = 300;

pub(crate) fn start(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let username = cx.params.username()?;
    let types = ChallengeTypes::parse(cx.params.required("challenge_type")?)?;
    if cx.state.users.get(username).is_some() {
        return Err(Fault::user_already_exists());
    }
    // Every sign-up proves the address with an email code first.
    if !types.oob {
        return Ok(Reply::Redirect {
            reason: RedirectReason::SignUpNeedsOob,
        });
    }
    let password = cx.params.secret("password");
    if let Some(password) = password {
        check_password(password, None)?;
    }
    let attributes = match cx.params.get("attributes") {
        Some(raw) => parse_attributes(raw)?,
        None => BTreeMap::new(),
    };
    let draft = SignUpDraft {
        username: username.to_owned(),
        password: password.map(str::to_owned),
        wants_password: types.password || password.is_some(),
        attributes,
    };
    let flow = cx.new_flow(types);
    let token = cx.start(flow, Step::SignUpStarted { draft });
    Ok(Reply::Json(json!({ "continuation_token": token })))
}

pub(crate) fn challenge(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let types = ChallengeTypes::optional(cx.params, entry.flow.challenge_types)?;
    match entry.step {
        Step::SignUpStarted { draft } | Step::SignUpCodeSent { draft, .. } => {
            if !types.oob {
                return Ok(cx.redirect(&token, RedirectReason::SignUpNeedsOob));
            }
            let code = cx.send_code(Channel::Email, &draft.username);
            let label = mask_email(&draft.username);
            let next = cx.advance(&token, entry.flow, Step::SignUpCodeSent { draft, code });
            let mut body = cx.code_sent(next, Channel::Email, label);
            if let Value::Object(map) = &mut body {
                map.insert("interval".to_owned(), json!(RESEND_INTERVAL_SECS));
            }
            Ok(Reply::Json(body))
        }
        Step::SignUpCredentialRequired { draft } | Step::SignUpPasswordRequested { draft } => {
            if !types.password {
                return Ok(cx.redirect(&token, RedirectReason::SignUpNeedsPassword));
            }
            let next = cx.advance(&token, entry.flow, Step::SignUpPasswordRequested { draft });
            Ok(Reply::Json(
                json!({ "challenge_type": "password", "continuation_token": next }),
            ))
        }
        _ => Err(Fault::token_for_other_endpoint()),
    }
}

pub(crate) fn continue_(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let grant = cx.params.required("grant_type")?;
    if !matches!(grant, "oob" | "password" | "attributes") {
        return Err(Fault::grant_not_supported_here());
    }
    let (token, mut entry) = cx.entry()?;
    let draft = match (grant, entry.step) {
        ("oob", Step::SignUpCodeSent { draft, code }) => {
            cx.check_code(&code)?;
            entry.flow.verified_email = Some(draft.username.clone());
            draft
        }
        ("password", Step::SignUpPasswordRequested { mut draft })
        | ("password", Step::SignUpCredentialRequired { mut draft }) => {
            let password = cx.params.required_secret("password")?;
            check_password(password, None)?;
            draft.password = Some(password.to_owned());
            draft
        }
        ("attributes", Step::SignUpAttributesRequired { mut draft }) => {
            let more = parse_attributes(cx.params.required("attributes")?)?;
            draft.attributes.extend(more);
            draft
        }
        _ => return Err(Fault::token_for_other_endpoint()),
    };
    finish_draft(cx, &token, entry.flow, draft)
}

/// After a verified email: ask for what is still missing, or create the account.
fn finish_draft(
    cx: &mut Cx<'_>,
    token: &str,
    flow: FlowCtx,
    draft: SignUpDraft,
) -> Result<Reply, Fault> {
    if draft.wants_password && draft.password.is_none() {
        let next = cx.advance(token, flow, Step::SignUpCredentialRequired { draft });
        return Err(Fault::credential_required(next));
    }
    let missing: Vec<String> = cx
        .tenant
        .signup
        .required_attributes
        .iter()
        .filter(|name| !draft.attributes.contains_key(name.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let next = cx.advance(token, flow, Step::SignUpAttributesRequired { draft });
        return Err(Fault::attributes_required(next, &missing));
    }
    cx.state
        .users
        .create(&draft, cx.tenant.signup.mfa_required)?;
    let step = Step::ReadyForTokens {
        user: draft.username,
        mfa_done: false,
    };
    let next = cx.advance(token, flow, step);
    Ok(Reply::Json(json!({ "continuation_token": next })))
}

/// `attributes` is a string holding a JSON object (reference §5.2).
fn parse_attributes(raw: &str) -> Result<BTreeMap<String, Value>, Fault> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        _ => Err(Fault::malformed_attributes()),
    }
}

/// The tenant's password rules, in the order Entra reports them (reference §5.2, §10):
/// 8 to 256 characters, three of four character classes, no "password", and not the
/// current password.
pub(crate) fn check_password(password: &str, current: Option<&str>) -> Result<(), Fault> {
    let length = password.chars().count();
    if length < 8 {
        return Err(Fault::password_rejected("password_too_short"));
    }
    if length > 256 {
        return Err(Fault::password_rejected("password_too_long"));
    }
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    if classes.iter().filter(|present| **present).count() < 3 {
        return Err(Fault::password_rejected("password_too_weak"));
    }
    if password.to_lowercase().contains("password") {
        return Err(Fault::password_rejected("password_banned"));
    }
    if current == Some(password) {
        return Err(Fault::password_rejected("password_recently_used"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        let cases = [
            ("Sh0rt!", None, Some("password_too_short")),
            ("alllowercase", None, Some("password_too_weak")),
            ("MyPassword1!", None, Some("password_banned")),
            (
                "Passw0rd!",
                Some("Passw0rd!"),
                Some("password_recently_used"),
            ),
            ("Passw0rd!", None, None),
            ("Tr0ub4dor&3", Some("Passw0rd!"), None),
        ];
        for (password, current, expected) in cases {
            let got = check_password(password, current)
                .err()
                .map(|f| f.suberror_name());
            assert_eq!(got, expected.map(Some), "{password}");
        }
        let long = "Aa1!".repeat(65);
        assert!(check_password(&long, None).is_err());
    }
}
