//! What a simulation counts, per traffic class: requests, send attempts and what became of
//! each, the codes Entra actually sent (from the emulator's outbox), legitimate journeys and
//! how they ended; the headline figures; the text table and the JSON.
//!
//! Definitions (SIMULATION.md has them in full):
//! * a *send attempt* is one distinct send a client wants: one challenge request that would
//!   make Entra send a code, together with its own retries (the same request again with a
//!   solved proof, or after a throttle's `Retry-After`). A resend, a new number, the same
//!   number from another address or in another flow is a new attempt;
//! * an attempt is *sent* when Entra sent its code; otherwise it is *stopped* when the last
//!   answer to it was the gateway's (deny, throttle, or a step-up not solved), and
//!   *not sent (other)* when it was Entra's (an expired token, say). Sent + stopped + other =
//!   attempts, by construction;
//! * *delivered* counts the codes in Entra's outbox that this class's requests caused: the
//!   ground truth, which must equal *sent*.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// A traffic class of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Class {
    Legitimate,
    IrsfPumper,
    LowAndSlow,
    OtpBomber,
    PowSolver,
    CodeEntering,
}

impl Class {
    pub(crate) const ALL: [Class; 6] = [
        Class::Legitimate,
        Class::IrsfPumper,
        Class::LowAndSlow,
        Class::OtpBomber,
        Class::PowSolver,
        Class::CodeEntering,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Legitimate => "legitimate",
            Class::IrsfPumper => "irsf-pumper",
            Class::LowAndSlow => "low-and-slow",
            Class::OtpBomber => "otp-bomber",
            Class::PowSolver => "pow-solver",
            Class::CodeEntering => "code-entering",
        }
    }

    pub(crate) fn is_fraud(self) -> bool {
        self != Class::Legitimate
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What kind of code a send asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum SendKind {
    /// `/oauth2/v2.0/challenge` with the id of an SMS method.
    SmsMfa,
    /// `/register/v1.0/challenge` to a phone number.
    SmsRegistration,
    /// `/oauth2/v2.0/challenge` without `id` for an email-OTP user.
    EmailSignIn,
    /// `/signup/v1.0/challenge`.
    EmailSignUp,
}

impl SendKind {
    pub(super) const ALL: [SendKind; 4] = [
        SendKind::SmsMfa,
        SendKind::SmsRegistration,
        SendKind::EmailSignIn,
        SendKind::EmailSignUp,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            SendKind::SmsMfa => "sms_mfa",
            SendKind::SmsRegistration => "sms_registration",
            SendKind::EmailSignIn => "email_sign_in",
            SendKind::EmailSignUp => "email_sign_up",
        }
    }

    pub(super) fn is_sms(self) -> bool {
        matches!(self, SendKind::SmsMfa | SendKind::SmsRegistration)
    }

    /// The kind of a code in the emulator's outbox, by its channel and endpoint.
    pub(super) fn of_outbox(channel: &str, endpoint: &str) -> Option<SendKind> {
        match (channel, endpoint) {
            ("sms", "/register/v1.0/challenge") => Some(SendKind::SmsRegistration),
            ("sms", _) => Some(SendKind::SmsMfa),
            ("email", "/signup/v1.0/challenge") => Some(SendKind::EmailSignUp),
            ("email", "/oauth2/v2.0/challenge") => Some(SendKind::EmailSignIn),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts of send attempts (see the module docs for the definitions).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct SendCounts {
    pub attempts: u64,
    /// Requests that would send a code, retries with a proof or after a throttle included.
    pub send_requests: u64,
    /// Attempts whose code Entra sent.
    pub sent: u64,
    /// Codes in Entra's outbox caused by this class's requests (ground truth).
    pub delivered: u64,
    pub stopped_denied: u64,
    pub stopped_throttled: u64,
    /// The last answer was a step-up the client did not (or could not) pass.
    pub stopped_challenged: u64,
    /// No code, and the last answer was Entra's, not the gateway's.
    pub not_sent_other: u64,
    /// Attempts that got a step-up at least once, passed or not.
    pub challenged: u64,
    /// Attempts denied at least once.
    pub denied: u64,
    /// Attempts throttled at least once.
    pub throttled: u64,
    /// Attempts challenged, throttled or denied at least once.
    pub hindered: u64,
}

impl SendCounts {
    pub(crate) fn stopped(&self) -> u64 {
        self.stopped_denied + self.stopped_throttled + self.stopped_challenged
    }

    /// 1 − sent / attempts: the share of attempts that did not become a code.
    pub(crate) fn not_sent_share(&self) -> f64 {
        share(self.attempts - self.sent.min(self.attempts), self.attempts)
    }

    fn add(&mut self, o: &SendCounts) {
        self.attempts += o.attempts;
        self.send_requests += o.send_requests;
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.stopped_denied += o.stopped_denied;
        self.stopped_throttled += o.stopped_throttled;
        self.stopped_challenged += o.stopped_challenged;
        self.not_sent_other += o.not_sent_other;
        self.challenged += o.challenged;
        self.denied += o.denied;
        self.throttled += o.throttled;
        self.hindered += o.hindered;
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// How a legitimate journey (a user's goal, their later retries included) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Completed,
    /// The user gave up of their own accord (the model's share who never enter the code).
    Abandoned,
    /// The gateway's answer (deny, throttle, step-up) stopped them, and they gave up.
    Blocked,
    /// Entra's answer stopped them (an expired token after a long wait, say).
    Failed,
}

/// Legitimate journeys of one goal.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct JourneyCounts {
    pub journeys: u64,
    pub completed: u64,
    pub abandoned: u64,
    /// Could not complete because of the gateway's answers.
    pub blocked: u64,
    /// Could not complete because of Entra's answers.
    pub failed: u64,
    /// Journeys with at least one send challenged, throttled or denied.
    pub hindered: u64,
    /// Journeys that took more than one try (a retry later, or the next day).
    pub retried: u64,
}

impl JourneyCounts {
    fn add(&mut self, o: &JourneyCounts) {
        self.journeys += o.journeys;
        self.completed += o.completed;
        self.abandoned += o.abandoned;
        self.blocked += o.blocked;
        self.failed += o.failed;
        self.hindered += o.hindered;
        self.retried += o.retried;
    }

    pub(crate) fn could_not_complete(&self) -> u64 {
        self.blocked + self.failed
    }
}

/// One class's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ClassReport {
    pub class: Class,
    pub requests: u64,
    pub sms: SendCounts,
    pub email: SendCounts,
    pub by_kind: BTreeMap<&'static str, SendCounts>,
    /// Legitimate users only: journeys, in total and by goal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journeys: Option<JourneyCounts>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub journeys_by_goal: BTreeMap<&'static str, JourneyCounts>,
}

/// The bombing victim's own sign-in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Victim {
    pub completed: bool,
    pub tries: u32,
}

/// The figures a reader wants first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Headline {
    /// SMS send attempts by every attacker class.
    pub fraud_sms_attempts: u64,
    /// SMS Entra sent for them (the outbox).
    pub fraud_sms_sent: u64,
    /// 1 − fraud_sms_sent / fraud_sms_attempts.
    pub fraud_sms_stopped_share: f64,
    pub legit_sms_attempts: u64,
    /// Legitimate SMS attempts challenged, throttled or denied at least once.
    pub legit_sms_hindered: u64,
    pub legit_sms_hindered_share: f64,
    pub legit_journeys: u64,
    /// Blocked (by the gateway) or failed (at Entra).
    pub legit_could_not_complete: u64,
    pub legit_could_not_complete_share: f64,
    pub legit_blocked_by_gateway: u64,
    pub legit_blocked_by_gateway_share: f64,
    pub victim: Option<Victim>,
}

/// One simulation run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Report {
    pub seed: u64,
    pub hours: f64,
    pub scale: f64,
    /// What configuration was judged.
    pub config: String,
    pub classes: Vec<ClassReport>,
    pub headline: Headline,
    /// `EntraEmulator::sent_total` at the end: every code Entra sent in the run.
    pub emulator_sent_total: u64,
    /// Outbox entries read after each request, attributed to the class that sent it.
    pub outbox_codes_read: u64,
    /// Outbox entries whose channel and endpoint match no send kind (should be none).
    pub outbox_unattributed: u64,
    /// Virtual time of the last event: legitimate retries may run into the next day.
    pub simulated_until_hours: f64,
}

/// Running counts, filled by the driver.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    requests: [u64; 6],
    sends: [[SendCounts; 4]; 6],
    journeys: BTreeMap<&'static str, JourneyCounts>,
    pub victim: Option<Victim>,
    pub outbox_codes_read: u64,
    pub outbox_unattributed: u64,
}

/// How one attempt went, as the driver saw it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AttemptLog {
    pub requests: u64,
    pub sent: bool,
    pub challenged: bool,
    pub denied: bool,
    pub throttled: bool,
    pub last: Last,
}

/// The last answer an attempt got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Last {
    #[default]
    Nothing,
    Sent,
    Denied,
    Throttled,
    Challenged,
    Other,
}

impl AttemptLog {
    pub(crate) fn hindered(&self) -> bool {
        self.challenged || self.denied || self.throttled
    }
}

impl Tally {
    pub(crate) fn request(&mut self, class: Class) {
        self.requests[class.index()] += 1;
    }

    pub(crate) fn delivered(&mut self, class: Class, channel: &str, endpoint: &str) {
        self.outbox_codes_read += 1;
        match SendKind::of_outbox(channel, endpoint) {
            Some(kind) => self.sends[class.index()][kind.index()].delivered += 1,
            None => self.outbox_unattributed += 1,
        }
    }

    pub(crate) fn attempt(&mut self, class: Class, kind: SendKind, log: &AttemptLog) {
        if log.requests == 0 {
            return;
        }
        let c = &mut self.sends[class.index()][kind.index()];
        c.attempts += 1;
        c.send_requests += log.requests;
        c.challenged += u64::from(log.challenged);
        c.denied += u64::from(log.denied);
        c.throttled += u64::from(log.throttled);
        c.hindered += u64::from(log.hindered());
        if log.sent {
            c.sent += 1;
            return;
        }
        match log.last {
            Last::Denied => c.stopped_denied += 1,
            Last::Throttled => c.stopped_throttled += 1,
            Last::Challenged => c.stopped_challenged += 1,
            Last::Sent | Last::Other | Last::Nothing => c.not_sent_other += 1,
        }
    }

    pub(crate) fn journey(
        &mut self,
        goal: &'static str,
        ending: Ending,
        hindered: bool,
        tries: u32,
    ) {
        let j = self.journeys.entry(goal).or_default();
        j.journeys += 1;
        match ending {
            Ending::Completed => j.completed += 1,
            Ending::Abandoned => j.abandoned += 1,
            Ending::Blocked => j.blocked += 1,
            Ending::Failed => j.failed += 1,
        }
        j.hindered += u64::from(hindered);
        j.retried += u64::from(tries > 1);
    }

    pub(crate) fn report(
        &self,
        seed: u64,
        hours: f64,
        scale: f64,
        config: String,
        emulator_sent_total: u64,
        simulated_until_hours: f64,
    ) -> Report {
        let classes: Vec<ClassReport> = Class::ALL
            .iter()
            .map(|&class| {
                let mut sms = SendCounts::default();
                let mut email = SendCounts::default();
                let mut by_kind = BTreeMap::new();
                for kind in SendKind::ALL {
                    let c = &self.sends[class.index()][kind.index()];
                    if kind.is_sms() {
                        sms.add(c);
                    } else {
                        email.add(c);
                    }
                    by_kind.insert(kind.name(), c.clone());
                }
                let (journeys, journeys_by_goal) = if class == Class::Legitimate {
                    let mut total = JourneyCounts::default();
                    for j in self.journeys.values() {
                        total.add(j);
                    }
                    (Some(total), self.journeys.clone())
                } else {
                    (None, BTreeMap::new())
                };
                ClassReport {
                    class,
                    requests: self.requests[class.index()],
                    sms,
                    email,
                    by_kind,
                    journeys,
                    journeys_by_goal,
                }
            })
            .collect();
        let mut fraud = SendCounts::default();
        for c in classes.iter().filter(|c| c.class.is_fraud()) {
            fraud.add(&c.sms);
        }
        let legit = classes
            .iter()
            .find(|c| c.class == Class::Legitimate)
            .map(|c| (c.sms.clone(), c.journeys.clone().unwrap_or_default()))
            .unwrap_or_default();
        let (legit_sms, legit_journeys) = legit;
        let headline = Headline {
            fraud_sms_attempts: fraud.attempts,
            fraud_sms_sent: fraud.delivered,
            fraud_sms_stopped_share: share(
                fraud.attempts - fraud.delivered.min(fraud.attempts),
                fraud.attempts,
            ),
            legit_sms_attempts: legit_sms.attempts,
            legit_sms_hindered: legit_sms.hindered,
            legit_sms_hindered_share: share(legit_sms.hindered, legit_sms.attempts),
            legit_journeys: legit_journeys.journeys,
            legit_could_not_complete: legit_journeys.could_not_complete(),
            legit_could_not_complete_share: share(
                legit_journeys.could_not_complete(),
                legit_journeys.journeys,
            ),
            legit_blocked_by_gateway: legit_journeys.blocked,
            legit_blocked_by_gateway_share: share(legit_journeys.blocked, legit_journeys.journeys),
            victim: self.victim.clone(),
        };
        Report {
            seed,
            hours,
            scale,
            config,
            classes,
            headline,
            emulator_sent_total,
            outbox_codes_read: self.outbox_codes_read,
            outbox_unattributed: self.outbox_unattributed,
            simulated_until_hours,
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The report as a table for people.
pub(crate) fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "otpgate simulate: seed {}, {} h, scale {}; config: {}",
        r.seed, r.hours, r.scale, r.config
    );
    let _ = writeln!(
        out,
        "{:<14} {:>8} {:>9} {:>8} {:>8} {:>7} {:>10} {:>10} {:>9} {:>8} {:>10}",
        "class",
        "requests",
        "SMS tried",
        "SMS sent",
        "stopped",
        "share",
        "challenged",
        "mail tried",
        "mail sent",
        "stopped",
        "challenged"
    );
    for c in &r.classes {
        let _ = writeln!(
            out,
            "{:<14} {:>8} {:>9} {:>8} {:>8} {:>7} {:>10} {:>10} {:>9} {:>8} {:>10}",
            c.class.name(),
            c.requests,
            c.sms.attempts,
            c.sms.delivered,
            c.sms.stopped(),
            pct(c.sms.not_sent_share()),
            c.sms.challenged,
            c.email.attempts,
            c.email.delivered,
            c.email.stopped(),
            c.email.challenged,
        );
    }
    let _ = writeln!(
        out,
        "  (stopped = denied + throttled + challenged and not passed; share = 1 - sent/tried; \
         challenged = attempts stepped up at least once, passed or not)"
    );
    for c in &r.classes {
        let s = &c.sms;
        if s.attempts > 0 {
            let _ = writeln!(
                out,
                "  {:<13} SMS: denied {}, throttled {}, challenge not passed {}, other {}; \
                 registration {} tried / {} sent, MFA {} tried / {} sent",
                c.class.name(),
                s.stopped_denied,
                s.stopped_throttled,
                s.stopped_challenged,
                s.not_sent_other,
                c.by_kind.get("sms_registration").map_or(0, |k| k.attempts),
                c.by_kind.get("sms_registration").map_or(0, |k| k.delivered),
                c.by_kind.get("sms_mfa").map_or(0, |k| k.attempts),
                c.by_kind.get("sms_mfa").map_or(0, |k| k.delivered),
            );
        }
    }
    if let Some(legit) = r.classes.iter().find(|c| c.class == Class::Legitimate) {
        if let Some(j) = &legit.journeys {
            let _ = writeln!(
                out,
                "legitimate journeys: {} ({} completed, {} abandoned by choice, {} blocked by the \
                 gateway, {} failed at Entra; {} needed a retry)",
                j.journeys, j.completed, j.abandoned, j.blocked, j.failed, j.retried
            );
            for (goal, g) in &legit.journeys_by_goal {
                let _ = writeln!(
                    out,
                    "  {:<13} {} journeys: {} completed, {} abandoned, {} blocked, {} failed, {} hindered",
                    goal, g.journeys, g.completed, g.abandoned, g.blocked, g.failed, g.hindered
                );
            }
        }
    }
    let h = &r.headline;
    let _ = writeln!(
        out,
        "fraudulent SMS stopped: {} ({} of {} attempts sent)",
        pct(h.fraud_sms_stopped_share),
        h.fraud_sms_sent,
        h.fraud_sms_attempts
    );
    let _ = writeln!(
        out,
        "legitimate SMS sends challenged, throttled or denied: {} ({} of {})",
        pct(h.legit_sms_hindered_share),
        h.legit_sms_hindered,
        h.legit_sms_attempts
    );
    let _ = writeln!(
        out,
        "legitimate users who could not complete: {} ({} of {}; {} because of the gateway)",
        pct(h.legit_could_not_complete_share),
        h.legit_could_not_complete,
        h.legit_journeys,
        h.legit_blocked_by_gateway
    );
    if let Some(v) = &h.victim {
        let _ = writeln!(
            out,
            "bombing victim's own sign-in: {} after {} tries",
            if v.completed {
                "completed"
            } else {
                "never completed"
            },
            v.tries
        );
    }
    let _ = writeln!(
        out,
        "Entra sent {} codes in all (outbox entries read: {}); simulated until {:.1} h",
        r.emulator_sent_total, r.outbox_codes_read, r.simulated_until_hours
    );
    out
}
