//! Self-service password reset (reference §5.3): `start`, an email `challenge`, `continue`
//! with the code, `submit` of the new password, and `poll_completion`, which answers
//! `in_progress` once and then `succeeded` with a fresh token for `/oauth2/v2.0/token`.
//!
//! Polling follows what the SDKs do and what their fixtures show: every poll sends the
//! token `submit` answered (msal-browser `ResetPasswordClient.performPollCompletionRequest`
//! loops with the same `continuation_token`, iOS `retryPollCompletion(continuationToken:)`,
//! Android `resetPasswordPollCompletion`), so that token stays valid until the reset
//! succeeds; `in_progress` carries no `continuation_token` (msal-browser's
//! `ResetPassword.spec.ts` mocks `{"status":"in_progress"}`, iOS `SSPRPollInProgress`
//! asserts a nil token); only `succeeded` carries one, and that retires the submit token.
//! The emulator never answers `not_started` or `failed` (Android treats `not_started` as a
//! failure).
//!
//! `start` answers a redirect with a `redirect_reason` for an email-OTP user (no password
//! to reset) or a list without `oob`; an empty or non-email `username` is AADSTS90100
//! (msal-browser's `ResetPasswordError.isInvalidUsername()` recognises it; unknown users
//! stay `user_not_found`).

use serde_json::json;

use super::config::Channel;
use super::request::Cx;
use super::signup::check_password;
use super::state::{Step, User};
use super::wire::{mask_email, ChallengeTypes, Fault, RedirectReason, Reply};

/// Seconds between polls that `submit` asks for (the reference's example).
const POLL_INTERVAL_SECS: u64 = 2;
/// `continue`'s `expires_in` never exceeds this (reference §5.3).
const MAX_EXPIRES_IN_SECS: u64 = 600;
/// How many polls answer `in_progress` before one answers `succeeded`.
const IN_PROGRESS_POLLS: u32 = 1;

pub(crate) fn start(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let username = cx.params.username()?;
    let types = ChallengeTypes::parse(cx.params.required("challenge_type")?)?;
    let user = cx
        .state
        .users
        .get(username)
        .ok_or_else(Fault::user_not_found)?;
    // Only email+password accounts have a password to reset, and the code goes by email.
    let refusal = if user.password.is_none() {
        Some(RedirectReason::ResetWithoutPassword)
    } else if !types.oob {
        Some(RedirectReason::ResetNeedsOob)
    } else {
        None
    };
    if let Some(reason) = refusal {
        return Ok(Reply::Redirect { reason });
    }
    let step = Step::ResetStarted {
        user: user.username.clone(),
    };
    let flow = cx.new_flow(types);
    let token = cx.start(flow, step);
    Ok(Reply::Json(json!({ "continuation_token": token })))
}

pub(crate) fn challenge(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let types = ChallengeTypes::optional(cx.params, entry.flow.challenge_types)?;
    let username = match entry.step {
        Step::ResetStarted { user } | Step::ResetCodeSent { user, .. } => user,
        _ => return Err(Fault::token_for_other_endpoint()),
    };
    if !types.oob {
        return Ok(cx.redirect(&token, RedirectReason::ResetNeedsOob));
    }
    let user = cx.user(&username)?;
    let target = reset_address(&user);
    let code = cx.send_code(Channel::Email, &target);
    let next = cx.advance(
        &token,
        entry.flow,
        Step::ResetCodeSent {
            user: username,
            code,
        },
    );
    Ok(Reply::Json(cx.code_sent(
        next,
        Channel::Email,
        mask_email(&target),
    )))
}

/// The code goes to the strong-auth email when it differs from the account's, else to the
/// account email, also for SMS-MFA users (reference §5.3).
fn reset_address(user: &User) -> String {
    user.methods
        .iter()
        .find(|m| m.channel == Channel::Email)
        .map(|m| m.target.clone())
        .unwrap_or_else(|| user.username.clone())
}

pub(crate) fn continue_(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    if cx.params.required("grant_type")? != "oob" {
        return Err(Fault::grant_not_supported_here());
    }
    let (token, entry) = cx.entry()?;
    let Step::ResetCodeSent { user, code } = entry.step else {
        return Err(Fault::token_for_other_endpoint());
    };
    cx.check_code(&code)?;
    let next = cx.advance(&token, entry.flow, Step::ResetVerified { user });
    let expires_in = cx.state.flows.ttl().as_secs().min(MAX_EXPIRES_IN_SECS);
    Ok(Reply::Json(
        json!({ "expires_in": expires_in, "continuation_token": next }),
    ))
}

pub(crate) fn submit(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let Step::ResetVerified { user } = entry.step else {
        return Err(Fault::token_for_other_endpoint());
    };
    let new_password = cx.params.required_secret("new_password")?;
    let current = cx.user(&user)?.password;
    check_password(new_password, current.as_deref())?;
    if let Some(account) = cx.state.users.get_mut(&user) {
        account.password = Some(new_password.to_owned());
    }
    let next = cx.advance(&token, entry.flow, Step::ResetSubmitted { user, polls: 0 });
    Ok(Reply::Json(
        json!({ "continuation_token": next, "poll_interval": POLL_INTERVAL_SECS }),
    ))
}

pub(crate) fn poll_completion(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let Step::ResetSubmitted { user, polls } = entry.step else {
        return Err(Fault::token_for_other_endpoint());
    };
    // One `in_progress` first, so clients exercise their polling loop. It carries no
    // `continuation_token`, and the token `submit` gave stays valid for the next poll.
    if polls < IN_PROGRESS_POLLS {
        cx.stay(
            &token,
            Step::ResetSubmitted {
                user,
                polls: polls + 1,
            },
        );
        return Ok(Reply::Json(json!({ "status": "in_progress" })));
    }
    let next = cx.advance(
        &token,
        entry.flow,
        Step::ReadyForTokens {
            user,
            mfa_done: false,
        },
    );
    Ok(Reply::Json(
        json!({ "status": "succeeded", "continuation_token": next }),
    ))
}
