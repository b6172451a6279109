//! Sign-in (reference §5.1, §6.1): `initiate`, first-factor and MFA `challenge`,
//! `introspect`, and every grant of `token`, including the MFA and registration interrupts.
//!
//! A client whose `challenge_type` list lacks the user's first factor, or whose flow lacks
//! the capability an interrupt needs, gets a redirect with its `redirect_reason`
//! ([`RedirectReason`]). `initiate` answers an empty or non-email `username` with
//! AADSTS90100 ("username parameter is empty or not valid", which msal-browser's
//! `SignInError.isInvalidUsername()` recognises) and an unknown one with `user_not_found`.

use serde_json::json;

use super::config::Channel;
use super::request::Cx;
use super::state::{FlowCtx, Step, User};
use super::tokens::{self, Scopes};
use super::wire::{mask_email, mask_phone, ChallengeTypes, Fault, RedirectReason, Reply};

pub(crate) fn initiate(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let username = cx.params.username()?;
    let types = ChallengeTypes::parse(cx.params.required("challenge_type")?)?;
    let user = cx
        .state
        .users
        .get(username)
        .ok_or_else(Fault::user_not_found)?;
    if !first_factor_supported(user, types) {
        return Ok(Reply::Redirect {
            reason: RedirectReason::UserChallengeTypeUnsupported,
        });
    }
    let step = Step::SignInStarted {
        user: user.username.clone(),
    };
    let flow = cx.new_flow(types);
    let token = cx.start(flow, step);
    Ok(Reply::Json(json!({ "continuation_token": token })))
}

/// Users sign in with the method they signed up with: a password, or an email code.
fn first_factor_supported(user: &User, types: ChallengeTypes) -> bool {
    if user.password.is_some() {
        types.password
    } else {
        types.oob
    }
}

pub(crate) fn challenge(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let types = ChallengeTypes::optional(cx.params, entry.flow.challenge_types)?;
    match entry.step {
        Step::SignInStarted { user }
        | Step::PasswordRequested { user }
        | Step::SignInCodeSent { user, .. } => first_factor(cx, &token, entry.flow, &user, types),
        // Method ids are stable per user, so a client may skip introspect and challenge
        // straight after `mfa_required`; the emulator allows it so a gateway's handling of
        // ids it never saw gets exercised.
        Step::MfaRequired { user }
        | Step::MfaMethodsListed { user }
        | Step::MfaCodeSent { user, .. } => second_factor(cx, &token, entry.flow, &user),
        _ => Err(Fault::token_for_other_endpoint()),
    }
}

/// Password users get `challenge_type=password`; email-OTP users get a code by email.
/// Repeating this with the latest token resends, and the new code replaces the old.
fn first_factor(
    cx: &mut Cx<'_>,
    token: &str,
    flow: FlowCtx,
    username: &str,
    types: ChallengeTypes,
) -> Result<Reply, Fault> {
    let user = cx.user(username)?;
    if !first_factor_supported(&user, types) {
        return Ok(cx.redirect(token, RedirectReason::UserChallengeTypeUnsupported));
    }
    if user.password.is_some() {
        let step = Step::PasswordRequested {
            user: user.username.clone(),
        };
        let next = cx.advance(token, flow, step);
        return Ok(Reply::Json(
            json!({ "continuation_token": next, "challenge_type": "password" }),
        ));
    }
    let code = cx.send_code(Channel::Email, &user.username);
    let step = Step::SignInCodeSent {
        user: user.username.clone(),
        code,
    };
    let next = cx.advance(token, flow, step);
    Ok(Reply::Json(cx.code_sent(
        next,
        Channel::Email,
        mask_email(&user.username),
    )))
}

/// The MFA challenge with `id`: sends the code over the method's channel (reference §6.1
/// step 5, the request a gateway gates). Any `challenge_type` list is accepted here because
/// SDKs send their first-factor list, which need not name `oob`.
fn second_factor(
    cx: &mut Cx<'_>,
    token: &str,
    flow: FlowCtx,
    username: &str,
) -> Result<Reply, Fault> {
    let id = cx.params.required("id")?;
    let user = cx.user(username)?;
    let method = user
        .methods
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(id))
        .ok_or_else(Fault::unknown_method)?;
    let label = mask_target(method.channel, &method.target);
    let channel = method.channel;
    let code = cx.send_code(channel, &method.target);
    let step = Step::MfaCodeSent {
        user: user.username.clone(),
        code,
    };
    let next = cx.advance(token, flow, step);
    Ok(Reply::Json(cx.code_sent(next, channel, label)))
}

fn mask_target(channel: Channel, target: &str) -> String {
    match channel {
        Channel::Sms => mask_phone(target),
        Channel::Email => mask_email(target),
    }
}

/// Lists the user's registered methods with their opaque ids (reference §5.1).
pub(crate) fn introspect(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let username = match entry.step {
        Step::MfaRequired { user }
        | Step::MfaMethodsListed { user }
        | Step::MfaCodeSent { user, .. } => user,
        _ => return Err(Fault::token_for_other_endpoint()),
    };
    let user = cx.user(&username)?;
    let methods: Vec<_> = user
        .methods
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "challenge_type": "oob",
                "challenge_channel": m.channel.as_str(),
                "login_hint": mask_target(m.channel, &m.target),
            })
        })
        .collect();
    let next = cx.advance(
        &token,
        entry.flow,
        Step::MfaMethodsListed { user: username },
    );
    Ok(Reply::Json(
        json!({ "continuation_token": next, "methods": methods }),
    ))
}

pub(crate) fn token(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let grant = cx.params.required("grant_type")?;
    if !matches!(
        grant,
        "password" | "oob" | "mfa_oob" | "continuation_token" | "refresh_token"
    ) {
        return Err(Fault::unsupported_grant_type());
    }
    let scopes = Scopes::parse(cx.params.required("scope")?)?;
    if grant == "refresh_token" {
        return refresh(cx, &scopes);
    }
    let (token, mut entry) = cx.entry()?;
    let (username, mfa_done) = match (grant, entry.step) {
        ("password", Step::PasswordRequested { user }) => {
            let password = cx.params.required_secret("password")?;
            if cx.user(&user)?.password.as_deref() != Some(password) {
                return Err(Fault::wrong_password());
            }
            (user, false)
        }
        ("oob", Step::SignInCodeSent { user, code }) => {
            cx.check_code(&code)?;
            entry.flow.verified_email = Some(user.clone());
            (user, false)
        }
        ("mfa_oob", Step::MfaCodeSent { user, code }) => {
            cx.check_code(&code)?;
            (user, true)
        }
        ("continuation_token", Step::ReadyForTokens { user, mfa_done }) => (user, mfa_done),
        _ => return Err(Fault::token_for_other_endpoint()),
    };
    let user = cx.user(&username)?;
    if user.needs_mfa() && !mfa_done {
        return interrupt_for_mfa(cx, &token, entry.flow, &user);
    }
    cx.state.flows.finish(&token);
    Ok(tokens::issue(cx, &user, &scopes))
}

/// The first factor passed but the user needs a second one: ask for it when the client
/// said it can do the loop, otherwise send it to the browser (reference §2, §5.1).
fn interrupt_for_mfa(
    cx: &mut Cx<'_>,
    token: &str,
    flow: FlowCtx,
    user: &User,
) -> Result<Reply, Fault> {
    let username = user.username.clone();
    if user.methods.is_empty() {
        if !flow.capabilities.registration_required {
            return Ok(cx.redirect(token, RedirectReason::MissingRegistrationCapability));
        }
        let next = cx.advance(token, flow, Step::RegistrationRequired { user: username });
        return Err(Fault::registration_required(next));
    }
    if !flow.capabilities.mfa_required {
        return Ok(cx.redirect(token, RedirectReason::MissingMfaCapability));
    }
    let next = cx.advance(token, flow, Step::MfaRequired { user: username });
    Err(Fault::mfa_required(next))
}

fn refresh(cx: &mut Cx<'_>, scopes: &Scopes) -> Result<Reply, Fault> {
    let presented = cx.params.required("refresh_token")?;
    let grant = cx
        .state
        .refresh
        .get(presented, &cx.client_id, cx.now)
        .ok_or_else(Fault::bad_refresh_token)?;
    let user = cx
        .state
        .users
        .get(&grant.user)
        .cloned()
        .ok_or_else(Fault::bad_refresh_token)?;
    Ok(tokens::issue(cx, &user, scopes))
}
