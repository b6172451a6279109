//! How a legitimate user goes about a journey: the requests their app sends, how long they
//! take between steps, and the messy parts (late SMS and resends, mistyped codes and
//! numbers, giving up, coming back later or the next day). Their app solves the built-in
//! proof of work when asked (it integrates the ALTCHA widget, as otpgate's step-up needs)
//! and waits out a throttle once.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::driver::{between, send, Attempt, Persistence, Verdict, World};
use super::flows::{self, AfterPassword, Client, OOB_TYPES, PASSWORD_TYPES, SIGNUP_TYPES};
use super::network::Networks;
use super::numbers;
use super::population::{Goal, Journey};
use super::report::{Class, Ending, SendKind, Victim};
use crate::emulate::entra::{DEMO_CLIENT_ID, DEMO_PASSWORD};

const LEGIT: Persistence = Persistence {
    solve_pow: true,
    // The ALTCHA widget on a phone: about a second for the default difficulty.
    solve_secs: (0.5, 3.0),
    throttle_waits: 1,
    throttle_extra: (2.0, 30.0),
};

/// The messy parts of one try, drawn at its start.
struct Traits {
    /// Resends because the SMS was late (0, 1 or 2).
    resends: u32,
    code_typo: bool,
    /// Gives up without entering the code.
    abandon: bool,
    password_typo: bool,
    /// Types the number to register with a digit missing first.
    phone_typo: bool,
}

impl Traits {
    fn draw(rng: &mut StdRng, calm: bool) -> Self {
        if calm {
            return Self {
                resends: 0,
                code_typo: false,
                abandon: false,
                password_typo: false,
                phone_typo: false,
            };
        }
        let roll: f64 = rng.gen();
        Self {
            resends: if roll < 0.02 {
                2
            } else if roll < 0.10 {
                1
            } else {
                0
            },
            code_typo: rng.gen_bool(0.05),
            abandon: rng.gen_bool(0.03),
            password_typo: rng.gen_bool(0.03),
            phone_typo: rng.gen_bool(0.04),
        }
    }
}

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Try {
    Completed,
    Abandoned,
    Blocked,
    Failed,
}

/// One try's context.
struct Cx<'a> {
    client: Client<'a>,
    rng: &'a mut StdRng,
    traits: Traits,
    hindered: bool,
}

impl Cx<'_> {
    async fn think(&mut self, range: (f64, f64)) {
        let secs = between(self.rng, range);
        self.client.world.sleep(secs).await;
    }

    /// One send attempt; the attempt's counts go to the tally here.
    async fn send(
        &mut self,
        kind: SendKind,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> (Verdict, super::driver::Answer) {
        let world = self.client.world;
        let mut attempt = Attempt::new(world, Class::Legitimate, kind);
        let out = send(
            world,
            &mut attempt,
            self.client.ip,
            endpoint,
            form,
            &LEGIT,
            self.rng,
        )
        .await;
        self.hindered |= attempt.hindered();
        out
    }
}

/// Run one journey to its end, retries included, and count it.
pub(crate) async fn run(world: Arc<World>, networks: Arc<Networks>, journey: Journey) {
    let mut rng = StdRng::seed_from_u64(journey.seed);
    let mut tries = 0u32;
    let mut hindered = false;
    let mut goal = journey.goal;
    let ending = loop {
        tries += 1;
        let ip = networks.session_address(&journey.user.access, &mut rng);
        let traits = Traits::draw(&mut rng, journey.victim);
        let mut cx = Cx {
            client: Client {
                world: &world,
                class: Class::Legitimate,
                ip,
            },
            rng: &mut rng,
            traits,
            hindered: false,
        };
        let (outcome, next_goal) = match goal {
            Goal::SmsSignIn => (sms_sign_in(&mut cx, &journey).await, goal),
            Goal::Register => (register(&mut cx, &journey, None).await, goal),
            Goal::EmailSignIn => (email_sign_in(&mut cx, &journey).await, goal),
            Goal::SignUp => sign_up(&mut cx, &journey).await,
        };
        goal = next_goal;
        hindered |= cx.hindered;
        let ending = match outcome {
            Try::Completed => break Ending::Completed,
            Try::Abandoned => Ending::Abandoned,
            Try::Blocked => Ending::Blocked,
            Try::Failed => Ending::Failed,
        };
        if tries >= 4 {
            break ending;
        }
        // Coming back: soon, the next day, or never.
        let roll: f64 = rng.gen();
        let wait = match (outcome, journey.victim) {
            (_, true) => Some(between(&mut rng, (1800.0, 2700.0))),
            (Try::Blocked, _) if roll < 0.50 => Some(between(&mut rng, (600.0, 3600.0))),
            (Try::Blocked, _) if roll < 0.75 => Some(between(&mut rng, (72_000.0, 100_800.0))),
            (Try::Abandoned, _) if roll < 0.30 && tries == 1 => {
                Some(between(&mut rng, (72_000.0, 100_800.0)))
            }
            (Try::Failed, _) if roll < 0.50 => Some(between(&mut rng, (60.0, 600.0))),
            _ => None,
        };
        match wait {
            Some(secs) => world.sleep(secs).await,
            None => break ending,
        }
    };
    let mut tally = world.tally.lock();
    tally.journey(journey.goal.name(), ending, hindered, tries);
    if journey.victim {
        tally.victim = Some(Victim {
            completed: ending == Ending::Completed,
            tries,
        });
    }
}

/// Password, then SMS MFA.
async fn sms_sign_in(cx: &mut Cx<'_>, journey: &Journey) -> Try {
    let Some(phone) = journey.user.phone.as_ref() else {
        return Try::Failed;
    };
    let ct = match password_first_factor(cx, &journey.user.username).await {
        Ok(AfterPassword::Mfa(ct)) => ct,
        Ok(AfterPassword::Done) => return Try::Completed,
        _ => return Try::Failed,
    };
    cx.think((0.2, 1.0)).await;
    let Some((ct, methods)) = cx.client.introspect(&ct).await else {
        return Try::Failed;
    };
    let Some((id, _)) = methods.iter().find(|(_, channel)| channel == "sms") else {
        return Try::Failed;
    };
    cx.think((1.0, 4.0)).await;
    let mut ct = ct;
    let mut code = None;
    for n in 0..=cx.traits.resends {
        if n > 0 {
            // The SMS is late: the user asks for another.
            cx.think((30.0, 90.0)).await;
        }
        let form = flows::mfa_form(&ct, id);
        let (verdict, answer) = cx
            .send(SendKind::SmsMfa, "/oauth2/v2.0/challenge", &form)
            .await;
        match verdict {
            Verdict::Sent => {
                if let Some(next) = answer.token() {
                    ct = next;
                }
                code = answer.code_for(&phone.e164).or(code);
            }
            // A refused resend leaves the code already sent valid: the user enters that.
            v if code.is_some() && v.is_stop() => break,
            v if v.is_stop() => return Try::Blocked,
            _ => return Try::Failed,
        }
    }
    let Some(code) = code else {
        return Try::Failed;
    };
    if cx.traits.abandon {
        return Try::Abandoned;
    }
    cx.think((15.0, 45.0)).await;
    if cx.traits.code_typo {
        let _ = cx.client.mfa_code(&ct, &flows::mistyped(&code)).await;
        cx.think((4.0, 12.0)).await;
    }
    if cx.client.mfa_code(&ct, &code).await.signed_in() {
        Try::Completed
    } else {
        Try::Failed
    }
}

/// `initiate`, the password prompt and the password (typed wrong once by some).
async fn password_first_factor(cx: &mut Cx<'_>, username: &str) -> Result<AfterPassword, ()> {
    let ct = cx
        .client
        .initiate(username, PASSWORD_TYPES)
        .await
        .ok_or(())?;
    cx.think((0.1, 0.5)).await;
    let ct = cx.client.password_prompt(&ct).await.ok_or(())?;
    cx.think((4.0, 15.0)).await;
    if cx.traits.password_typo {
        let _ = cx.client.password(&ct, "Passw0rd?").await;
        cx.think((4.0, 10.0)).await;
    }
    Ok(cx.client.password(&ct, DEMO_PASSWORD).await)
}

/// A phone registration, from `registration_required` (after a password sign-in, or with
/// `ct` already there after a sign-up).
async fn register(cx: &mut Cx<'_>, journey: &Journey, ct: Option<String>) -> Try {
    let Some(phone) = journey.user.phone.as_ref() else {
        return Try::Failed;
    };
    let ct = match ct {
        Some(ct) => ct,
        None => match password_first_factor(cx, &journey.user.username).await {
            Ok(AfterPassword::Register(ct)) => ct,
            // Registered on an earlier try: the sign-in now asks for MFA, which is done.
            Ok(AfterPassword::Mfa(_)) | Ok(AfterPassword::Done) => return Try::Completed,
            _ => return Try::Failed,
        },
    };
    cx.think((0.2, 1.0)).await;
    let Some(ct) = cx.client.register_introspect(&ct).await else {
        return Try::Failed;
    };
    cx.think((8.0, 25.0)).await;
    let mut ct = ct;
    let mut targets = Vec::new();
    if cx.traits.phone_typo {
        targets.push(numbers::slip(&phone.e164, cx.rng));
    }
    targets.push(phone.e164.clone());
    for n in 0..cx.traits.resends {
        let _ = n;
        targets.push(phone.e164.clone());
    }
    let mut code = None;
    for (i, target) in targets.iter().enumerate() {
        if i > 0 {
            // A wrong number is noticed when no SMS comes, or at once when refused; a late
            // SMS is asked for again.
            cx.think((20.0, 90.0)).await;
        }
        let form = flows::register_form(&ct, target);
        let (verdict, answer) = cx
            .send(SendKind::SmsRegistration, "/register/v1.0/challenge", &form)
            .await;
        let right_number = *target == phone.e164;
        match verdict {
            Verdict::Sent => {
                if let Some(next) = answer.token() {
                    ct = next;
                }
                if right_number {
                    code = answer.code_for(&phone.e164);
                }
            }
            v if v.is_stop() && !right_number => continue,
            v if v.is_stop() && code.is_some() => break,
            v if v.is_stop() => return Try::Blocked,
            _ if !right_number => continue,
            _ => return Try::Failed,
        }
    }
    let Some(code) = code else {
        return Try::Failed;
    };
    if cx.traits.abandon {
        return Try::Abandoned;
    }
    cx.think((15.0, 45.0)).await;
    if cx.traits.code_typo {
        let _ = cx.client.register_code(&ct, &flows::mistyped(&code)).await;
        cx.think((4.0, 12.0)).await;
    }
    let Some(ct) = cx.client.register_code(&ct, &code).await.token() else {
        return Try::Failed;
    };
    match cx.client.redeem(&ct).await {
        AfterPassword::Done => Try::Completed,
        _ => Try::Failed,
    }
}

/// An email one-time code as the first factor.
async fn email_sign_in(cx: &mut Cx<'_>, journey: &Journey) -> Try {
    let username = journey.user.username.clone();
    let Some(ct) = cx.client.initiate(&username, OOB_TYPES).await else {
        return Try::Failed;
    };
    cx.think((0.1, 0.5)).await;
    let mut ct = ct;
    let mut code = None;
    for n in 0..=cx.traits.resends {
        if n > 0 {
            cx.think((30.0, 90.0)).await;
        }
        let form = [
            ("client_id", DEMO_CLIENT_ID),
            ("continuation_token", ct.as_str()),
            ("challenge_type", OOB_TYPES),
        ];
        let (verdict, answer) = cx
            .send(SendKind::EmailSignIn, "/oauth2/v2.0/challenge", &form)
            .await;
        match verdict {
            Verdict::Sent => {
                if let Some(next) = answer.token() {
                    ct = next;
                }
                code = answer.code_for(&username).or(code);
            }
            v if code.is_some() && v.is_stop() => break,
            v if v.is_stop() => return Try::Blocked,
            _ => return Try::Failed,
        }
    }
    let Some(code) = code else {
        return Try::Failed;
    };
    if cx.traits.abandon {
        return Try::Abandoned;
    }
    cx.think((15.0, 60.0)).await;
    if cx.traits.code_typo {
        let _ = cx.client.email_code(&ct, &flows::mistyped(&code)).await;
        cx.think((4.0, 12.0)).await;
    }
    if cx.client.email_code(&ct, &code).await.signed_in() {
        Try::Completed
    } else {
        Try::Failed
    }
}

/// Sign up with an email code and a password, then register a phone. Returns the goal for
/// a later try: once the account exists, coming back is a sign-in that registers.
async fn sign_up(cx: &mut Cx<'_>, journey: &Journey) -> (Try, Goal) {
    let username = journey.user.username.clone();
    let start = cx
        .client
        .post(
            "/signup/v1.0/start",
            &[
                ("username", username.as_str()),
                ("challenge_type", SIGNUP_TYPES),
                ("password", DEMO_PASSWORD),
                ("capabilities", flows::CAPABILITIES),
            ],
        )
        .await;
    if start.error() == Some("user_already_exists") {
        return (register(cx, journey, None).await, Goal::Register);
    }
    let Some(ct) = start.token() else {
        return (Try::Failed, Goal::SignUp);
    };
    cx.think((0.1, 0.5)).await;
    let mut ct = ct;
    let mut code = None;
    for n in 0..=cx.traits.resends.min(1) {
        if n > 0 {
            cx.think((30.0, 90.0)).await;
        }
        let form = [
            ("client_id", DEMO_CLIENT_ID),
            ("continuation_token", ct.as_str()),
            ("challenge_type", SIGNUP_TYPES),
        ];
        let (verdict, answer) = cx
            .send(SendKind::EmailSignUp, "/signup/v1.0/challenge", &form)
            .await;
        match verdict {
            Verdict::Sent => {
                if let Some(next) = answer.token() {
                    ct = next;
                }
                code = answer.code_for(&username).or(code);
            }
            v if code.is_some() && v.is_stop() => break,
            v if v.is_stop() => return (Try::Blocked, Goal::SignUp),
            _ => return (Try::Failed, Goal::SignUp),
        }
    }
    let Some(code) = code else {
        return (Try::Failed, Goal::SignUp);
    };
    cx.think((15.0, 60.0)).await;
    let done = cx
        .client
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", ct.as_str()),
                ("grant_type", "oob"),
                ("oob", code.as_str()),
            ],
        )
        .await;
    let Some(ct) = done.token() else {
        return (Try::Failed, Goal::SignUp);
    };
    // The account exists from here on: a later try signs in and registers.
    match cx.client.redeem(&ct).await {
        AfterPassword::Register(ct) => (register(cx, journey, Some(ct)).await, Goal::Register),
        AfterPassword::Done => (Try::Completed, Goal::Register),
        _ => (Try::Failed, Goal::Register),
    }
}
