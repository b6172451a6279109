//! Just-in-time strong-auth registration (reference §5.4, §6.2): `introspect` offers email
//! and SMS, `challenge` sends a code to a target the caller chooses (the IRSF hot spot),
//! `continue` verifies it and stores the method on the user, so the next sign-in gets MFA
//! over it. The `challenge` answer names the target in `challenge_target` and
//! `challenge_target_label`, a phone masked (see [`challenge`]).

use serde_json::json;

use super::config::{Channel, MfaMethodSpec};
use super::request::Cx;
use super::state::Step;
use super::wire::{is_email, mask_email, mask_phone, normalize_phone, Fault, Reply};

pub(crate) fn introspect(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let username = registering_user(entry.step)?;
    let user = cx.user(&username)?;
    let methods = json!([
        {
            "id": "email",
            "challenge_type": "oob",
            "challenge_channel": "email",
            "login_hint": user.username,
        },
        { "id": "sms", "challenge_type": "oob", "challenge_channel": "sms" },
    ]);
    let next = cx.advance(
        &token,
        entry.flow,
        Step::RegistrationMethodsListed { user: username },
    );
    Ok(Reply::Json(
        json!({ "continuation_token": next, "methods": methods }),
    ))
}

/// Any step of a registration. Going back is allowed, as MSAL does when the user changes
/// the number, and so is skipping `introspect`: the method is named in the request.
fn registering_user(step: Step) -> Result<String, Fault> {
    match step {
        Step::RegistrationRequired { user }
        | Step::RegistrationMethodsListed { user }
        | Step::RegistrationCodeSent { user, .. }
        | Step::RegistrationPreverified { user, .. } => Ok(user),
        _ => Err(Fault::token_for_other_endpoint()),
    }
}

/// Sends a code to `challenge_target`. Repeating it with the latest token resends, or
/// switches to another target; the previous code stops working either way.
///
/// The answer names the target in `challenge_target`, the field every SDK reads (iOS
/// `MSALNativeAuthJITChallengeResponse.challengeTarget`, Android `JITChallengeApiResponse`
/// `@SerializedName("challenge_target")`, msal-browser `RegisterChallengeResponse`), and
/// again in `challenge_target_label`, the field of the other challenge answers, since the
/// sources disagree and a client may read either. A phone is masked in both
/// ([`mask_phone`], as for MFA labels; iOS's mock server answers `"+3538331***"`); an
/// email address is echoed as given in `challenge_target` (the SDK fixtures echo it) and
/// masked in `challenge_target_label`.
pub(crate) fn challenge(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let (token, entry) = cx.entry()?;
    let username = registering_user(entry.step)?;
    // SDKs copy the method's `challenge_type` ("oob") here, without `redirect`.
    let challenge_type = cx.params.required("challenge_type")?;
    if !challenge_type.split_ascii_whitespace().any(|t| t == "oob") {
        return Err(Fault::bad_registration_choice());
    }
    let target = cx.params.required("challenge_target")?.to_owned();
    let channel = match cx.params.get("challenge_channel") {
        Some(c) if c.eq_ignore_ascii_case("sms") => Channel::Sms,
        Some(c) if c.eq_ignore_ascii_case("email") => Channel::Email,
        Some(_) => return Err(Fault::bad_registration_choice()),
        None if target.contains('@') => Channel::Email,
        None => Channel::Sms,
    };
    let method = match channel {
        Channel::Sms => MfaMethodSpec {
            channel,
            target: normalize_phone(&target).ok_or_else(Fault::bad_challenge_target)?,
        },
        Channel::Email if is_email(&target) => MfaMethodSpec {
            channel,
            target: target.clone(),
        },
        Channel::Email => return Err(Fault::bad_challenge_target()),
    };
    let preverified = channel == Channel::Email
        && entry
            .flow
            .verified_email
            .as_deref()
            .is_some_and(|verified| verified.eq_ignore_ascii_case(&target));
    if preverified {
        let step = Step::RegistrationPreverified {
            user: username,
            method,
        };
        let next = cx.advance(&token, entry.flow, step);
        return Ok(Reply::Json(
            json!({ "continuation_token": next, "challenge_type": "preverified" }),
        ));
    }
    let (shown_target, label) = match channel {
        Channel::Sms => {
            let masked = mask_phone(&method.target);
            (masked.clone(), masked)
        }
        Channel::Email => (target.clone(), mask_email(&target)),
    };
    let code = cx.send_code(channel, &method.target);
    let step = Step::RegistrationCodeSent {
        user: username,
        method,
        code,
    };
    let next = cx.advance(&token, entry.flow, step);
    Ok(Reply::Json(json!({
        "continuation_token": next,
        "challenge_type": "oob",
        "binding_method": "prompt",
        "challenge_target": shown_target,
        "challenge_target_label": label,
        "challenge_channel": channel.as_str(),
        "code_length": cx.tenant.code_length,
    })))
}

pub(crate) fn continue_(cx: &mut Cx<'_>) -> Result<Reply, Fault> {
    let grant = cx.params.required("grant_type")?;
    if !matches!(grant, "oob" | "continuation_token") {
        return Err(Fault::grant_not_supported_here());
    }
    let (token, entry) = cx.entry()?;
    let (username, method) = match (grant, entry.step) {
        ("oob", Step::RegistrationCodeSent { user, method, code }) => {
            cx.check_code(&code)?;
            (user, method)
        }
        ("continuation_token", Step::RegistrationPreverified { user, method }) => (user, method),
        _ => return Err(Fault::token_for_other_endpoint()),
    };
    match cx.state.users.get_mut(&username) {
        Some(user) => user.register(&method),
        None => return Err(Fault::bad_token(cx.endpoint)),
    }
    let step = Step::ReadyForTokens {
        user: username,
        mfa_done: true,
    };
    let next = cx.advance(&token, entry.flow, step);
    Ok(Reply::Json(json!({ "continuation_token": next })))
}
