//! Which requests make Entra send a one-time passcode, and to where (the table in
//! README.md's "How a request is judged").
//!
//! The decision is in two steps: [`intent`] reads what the request itself says (pure), and
//! the gateway resolves an MFA method id to its channel from what it learned earlier.

use std::fmt;

use super::classify::EndpointKind;
use super::learn::{Channel, Flow, FlowBook};
use super::params::Params;

/// An OTP send a gated request would cause, as far as otpgate can tell.
#[derive(Debug, Clone)]
pub struct OtpSend {
    pub endpoint: EndpointKind,
    pub channel: Channel,
    pub target: Target,
    /// The MFA method id (`/oauth2/v2.0/challenge` with `id`).
    pub method_id: Option<String>,
    /// The masked label Entra showed for the method, when learned.
    pub label: Option<String>,
    /// Whether the channel was learned (`true`) or assumed per config (`false`).
    pub channel_known: bool,
}

/// A request refused because the send it would cause is ambiguous; the text is the
/// answer's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous(pub &'static str);

/// The send a request of `kind` with `params` in `flow` would cause: what the request says
/// ([`intent`]), an MFA method id resolved to its channel from what the flow book learned,
/// and `unknown` the channel assumed for an id never seen.
pub async fn label(
    kind: EndpointKind,
    params: &Params,
    flow: &Flow,
    flows: &FlowBook,
    unknown: Channel,
) -> Result<Option<OtpSend>, Ambiguous> {
    let account = |channel, channel_known, method_id, label| OtpSend {
        endpoint: kind,
        channel,
        target: Target::Account,
        method_id,
        label,
        channel_known,
    };
    Ok(match intent(kind, params) {
        Intent::None => None,
        Intent::EmptyMethodId => {
            return Err(Ambiguous(
                "The id parameter is empty: name an authentication method, or leave it out.",
            ))
        }
        // After `mfa_required`, a challenge without `id` may go to the default method,
        // whose channel is unknown: judged as an MFA send to a method never seen. Before
        // it, an email-OTP user gets a code and a password user a password prompt: judged
        // as the email it may be, and Entra's answer gives the slot back if it was
        // neither. Only a flow whose `initiate` left out `oob`, and whose challenge does
        // too or names no types, cannot get a code (whether Entra falls back to the types
        // of `initiate` when the challenge names others is not documented, so a challenge
        // without `oob` after an `initiate` with it is judged).
        Intent::FirstFactor { offers_code } => {
            if flow.mfa_required {
                Some(account(unknown, false, None, None))
            } else if offers_code == Some(true) || !flow.password_only {
                Some(account(Channel::Email, false, None, None))
            } else {
                None
            }
        }
        Intent::Direct { channel, target } => Some(OtpSend {
            endpoint: kind,
            channel,
            target,
            method_id: None,
            label: None,
            channel_known: true,
        }),
        Intent::MfaMethod { id } => Some(match flows.method_channel(&flow.id, &id).await {
            Some(info) => account(info.channel, true, Some(id), info.label),
            None => account(unknown, false, Some(id), None),
        }),
    })
}

/// What a request says about the code it would make Entra send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Sends nothing.
    None,
    /// Sends on a channel the request names, to a target it names (registration) or to the
    /// account's own address (sign-up, password reset).
    Direct { channel: Channel, target: Target },
    /// `/oauth2/v2.0/challenge` with `id`: MFA to the method `id` names; its channel is known
    /// only from an earlier introspect answer.
    MfaMethod { id: String },
    /// `/oauth2/v2.0/challenge` without `id`: an email code for an email-OTP user, nothing for
    /// a password user; after an `mfa_required` interrupt, possibly the default MFA method.
    /// `offers_code`: whether the request's `challenge_type` names `oob`; `None` when it
    /// has none (Entra then goes by the types of `initiate`).
    FirstFactor { offers_code: Option<bool> },
    /// `/oauth2/v2.0/challenge` with an empty or blank `id`: refused, since Entra might read
    /// it as no `id` (a first-factor code) or as a method, and no SDK sends it.
    EmptyMethodId,
}

/// Where a code goes. Phone numbers are kept as sent (normalised later, by the destination
/// policy) and never reach a log through `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A phone number chosen by the caller (`challenge_target` on registration).
    Phone(String),
    /// An email address chosen by the caller.
    Email(String),
    /// The account's own address, which the request does not carry.
    Account,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Phone(_) => f.write_str("Phone(<redacted>)"),
            Self::Email(_) => f.write_str("Email(<redacted>)"),
            Self::Account => f.write_str("Account"),
        }
    }
}

/// What `kind` with `params` would make Entra send.
pub(crate) fn intent(kind: EndpointKind, params: &Params) -> Intent {
    match kind {
        EndpointKind::SignInChallenge => match params.get("id") {
            Some(id) if id.trim().is_empty() => Intent::EmptyMethodId,
            Some(id) => Intent::MfaMethod { id: id.to_owned() },
            None => Intent::FirstFactor {
                offers_code: params.get("challenge_type").map(|types| {
                    types
                        .split_ascii_whitespace()
                        .any(|t| t.eq_ignore_ascii_case("oob"))
                }),
            },
        },
        EndpointKind::SignUpChallenge | EndpointKind::ResetPasswordChallenge => Intent::Direct {
            channel: Channel::Email,
            target: Target::Account,
        },
        EndpointKind::RegisterChallenge => {
            let target = params.get("challenge_target").unwrap_or_default().trim();
            // The channel is optional (reference §5.4); without it, judge by the target, and
            // when the two disagree believe the one that can cost money.
            let named = params.get("challenge_channel").and_then(Channel::parse);
            let looks_like_email = target.contains('@');
            let channel = match named {
                Some(Channel::Sms) => Channel::Sms,
                Some(Channel::Email) if looks_like_email => Channel::Email,
                Some(Channel::Email) => Channel::Sms,
                None if looks_like_email => Channel::Email,
                None => Channel::Sms,
            };
            let target = match channel {
                Channel::Sms => Target::Phone(target.to_owned()),
                Channel::Email => Target::Email(target.to_owned()),
            };
            Intent::Direct { channel, target }
        }
        _ => Intent::None,
    }
}

/// Whether Entra's `status` to a request of `kind` with `params` accepts a one-time code:
/// a 2xx to `/oauth2/v2.0/token` with `grant_type=mfa_oob` or `oob`, or to a `continue`
/// of registration, sign-up or password reset with `grant_type=oob`. A wrong code is a 4xx
/// (`invalid_oob_value`): an attempt, not a verification. Only Entra's answer counts.
pub fn verifies(kind: EndpointKind, params: &Params, status: u16) -> bool {
    if !(200..300).contains(&status) {
        return false;
    }
    let grant = params.get("grant_type").unwrap_or_default();
    match kind {
        EndpointKind::Token => grant == "mfa_oob" || grant == "oob",
        EndpointKind::RegisterContinue
        | EndpointKind::SignUpContinue
        | EndpointKind::ResetPasswordContinue => grant == "oob",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::params::parse;

    fn p(body: &str) -> Params {
        parse(None, body.as_bytes()).unwrap()
    }

    #[test]
    fn intent_table() {
        use EndpointKind::*;
        let sms = |t: &str| Intent::Direct {
            channel: Channel::Sms,
            target: Target::Phone(t.into()),
        };
        let cases: Vec<(EndpointKind, &str, Intent)> = vec![
            (SignInInitiate, "username=a", Intent::None),
            (Token, "grant_type=password", Intent::None),
            (
                SignInChallenge,
                "id=abc",
                Intent::MfaMethod { id: "abc".into() },
            ),
            (
                SignInChallenge,
                "continuation_token=x",
                Intent::FirstFactor { offers_code: None },
            ),
            (
                SignInChallenge,
                "challenge_type=oob+password+redirect",
                Intent::FirstFactor {
                    offers_code: Some(true),
                },
            ),
            (
                SignInChallenge,
                "challenge_type=OOB",
                Intent::FirstFactor {
                    offers_code: Some(true),
                },
            ),
            (
                SignInChallenge,
                "challenge_type=password+redirect",
                Intent::FirstFactor {
                    offers_code: Some(false),
                },
            ),
            (SignInChallenge, "id=", Intent::EmptyMethodId),
            (SignInChallenge, "id=+", Intent::EmptyMethodId),
            (SignInChallenge, "id=%09", Intent::EmptyMethodId),
            (
                SignUpChallenge,
                "",
                Intent::Direct {
                    channel: Channel::Email,
                    target: Target::Account,
                },
            ),
            (
                ResetPasswordChallenge,
                "",
                Intent::Direct {
                    channel: Channel::Email,
                    target: Target::Account,
                },
            ),
            (
                RegisterChallenge,
                "challenge_channel=sms&challenge_target=%2B447400123456",
                sms("+447400123456"),
            ),
            (
                RegisterChallenge,
                "challenge_target=%2B447400123456",
                sms("+447400123456"),
            ),
            (
                RegisterChallenge,
                "challenge_channel=SMS&challenge_target=+44+7700",
                sms("44 7700"),
            ),
            // An "email" send to something that is not an address is treated as SMS.
            (
                RegisterChallenge,
                "challenge_channel=email&challenge_target=%2B4477",
                sms("+4477"),
            ),
            (
                RegisterChallenge,
                "challenge_channel=email&challenge_target=a%40b.c",
                Intent::Direct {
                    channel: Channel::Email,
                    target: Target::Email("a@b.c".into()),
                },
            ),
            (RegisterIntrospect, "", Intent::None),
            (RegisterContinue, "oob=1234", Intent::None),
        ];
        for (kind, body, want) in cases {
            assert_eq!(intent(kind, &p(body)), want, "{kind:?} {body}");
        }
    }

    #[test]
    fn targets_never_print() {
        let t = Target::Phone("+447400123456".into());
        assert!(!format!("{t:?}").contains("7700"));
    }
}
