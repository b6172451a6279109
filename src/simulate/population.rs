//! The tenant's legitimate users and what they do during the day: who exists in the
//! directory (the emulator's users), where each connects from, and when each journey
//! starts. How a journey goes is in [`super::legit`].

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::network::{Access, CountryNet, Networks};
use super::numbers::{self, Number, Range};
use crate::emulate::entra::{Channel, MfaMethodSpec, UserSpec, DEMO_PASSWORD};

/// Daily volumes at scale 1.
pub(crate) const SMS_SIGN_INS: f64 = 5000.0;
pub(crate) const REGISTRATIONS_EXISTING: f64 = 300.0;
pub(crate) const SIGN_UPS: f64 = 200.0;
pub(crate) const EMAIL_SIGN_INS: f64 = 800.0;

/// Countries of the tenant's users and their shares (a European consumer service).
pub(crate) const HOME: [(&str, f64); 9] = [
    ("GB", 0.40),
    ("FR", 0.15),
    ("DE", 0.15),
    ("ES", 0.08),
    ("IT", 0.07),
    ("NL", 0.05),
    ("IE", 0.04),
    ("BE", 0.03),
    ("PL", 0.03),
];

/// Where travellers' and expatriates' foreign numbers come from.
const ABROAD: [&str; 8] = ["US", "AE", "AU", "CH", "PT", "ES", "FR", "GB"];

/// Share of users whose number is of another country than the one they live in.
const FOREIGN_NUMBER: f64 = 0.04;
/// Share of registrations to a VoIP number (where the country has VoIP ranges).
const VOIP_NUMBER: f64 = 0.02;
/// Share of SMS sign-ins by a user who signs in a second time that day.
const SECOND_SIGN_IN: f64 = 0.08;

/// How users connect: shares of carrier-grade NAT (mobile data), home IPv4, IPv6 and venue
/// Wi-Fi (SIMULATION.md).
const ACCESS_SHARES: [f64; 4] = [0.30, 0.40, 0.25, 0.05];

/// Relative traffic per hour of the day (local time): low at night, peaks at lunch and in
/// the evening.
pub(crate) const DIURNAL: [f64; 24] = [
    0.8, 0.5, 0.35, 0.3, 0.3, 0.5, 1.2, 2.6, 4.2, 5.0, 5.4, 5.6, 6.0, 5.8, 5.4, 5.3, 5.6, 6.2, 6.8,
    7.2, 7.0, 5.8, 4.0, 2.2,
];

/// When the bombing victim tries to sign in (seconds into the day).
pub(crate) const VICTIM_SIGN_IN: f64 = 10.75 * 3600.0;

/// A legitimate user.
#[derive(Debug)]
pub(crate) struct LegitUser {
    pub username: String,
    /// For SMS users, the number of their SMS method; for users who register, the number
    /// they register.
    pub phone: Option<Number>,
    pub access: Access,
}

/// What a journey is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    SmsSignIn,
    Register,
    EmailSignIn,
    /// Sign up with an email code, then register a phone (the tenant requires MFA).
    SignUp,
}

impl Goal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Goal::SmsSignIn => "sms_sign_in",
            Goal::Register => "registration",
            Goal::EmailSignIn => "email_sign_in",
            Goal::SignUp => "sign_up",
        }
    }
}

/// One user's goal for the day, and when they start on it.
#[derive(Debug)]
pub(crate) struct Journey {
    pub user: Arc<LegitUser>,
    pub goal: Goal,
    pub at: f64,
    pub seed: u64,
    pub victim: bool,
}

/// The legitimate side of a run.
pub(crate) struct Population {
    pub users: Vec<UserSpec>,
    pub journeys: Vec<Journey>,
    pub networks: Arc<Networks>,
    /// The username of the bombing victim, an SMS MFA user.
    pub victim: Option<String>,
}

/// A start time by the diurnal curve, in seconds into the day.
pub(crate) fn arrival(rng: &mut StdRng) -> f64 {
    let total: f64 = DIURNAL.iter().sum();
    let mut roll = rng.gen::<f64>() * total;
    for (hour, w) in DIURNAL.iter().enumerate() {
        if roll < *w {
            return (hour as f64 + roll / w) * 3600.0;
        }
        roll -= w;
    }
    23.99 * 3600.0
}

fn weighted<'a, T>(items: &'a [(T, f64)], rng: &mut StdRng) -> &'a T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen::<f64>() * total;
    for (item, w) in items {
        if roll < *w {
            return item;
        }
        roll -= w;
    }
    &items[items.len() - 1].0
}

fn count(daily: f64, scale: f64) -> usize {
    (daily * scale).round().max(0.0) as usize
}

/// Numbers drawn ahead, per region and range, so that each region's numbers are made in one
/// go (see [`super::numbers`]).
struct NumberPools {
    pools: HashMap<(&'static str, bool), Vec<Number>>,
}

impl NumberPools {
    fn new() -> Self {
        Self {
            pools: HashMap::new(),
        }
    }

    fn fill(&mut self, region: &'static str, voip: bool, n: usize, rng: &mut StdRng) {
        let range = if voip { Range::Voip } else { Range::Mobile };
        let numbers = numbers::draw_many(region, range, n, rng);
        self.pools
            .entry((region, voip))
            .or_default()
            .extend(numbers);
    }

    fn take(&mut self, region: &'static str, voip: bool) -> Option<Number> {
        self.pools.get_mut(&(region, voip)).and_then(Vec::pop)
    }
}

impl Population {
    pub(crate) fn build(rng: &mut StdRng, scale: f64, hours: f64) -> Self {
        let networks = Arc::new(Networks {
            countries: HOME.iter().map(|_| CountryNet::build(rng)).collect(),
        });
        let sign_ins = count(SMS_SIGN_INS, scale);
        let sms_users = ((sign_ins as f64) * (1.0 - SECOND_SIGN_IN)).round() as usize;
        let registering = count(REGISTRATIONS_EXISTING, scale);
        let sign_ups = count(SIGN_UPS, scale);
        let email = count(EMAIL_SIGN_INS, scale);
        let email_users = ((email as f64) * 0.95).round().max(1.0) as usize;

        // Who lives where, and who has a foreign or VoIP number, decided first; then the
        // numbers, one region at a time.
        let phone_users = sms_users + 1 + registering + sign_ups;
        let plans: Vec<(usize, &'static str, bool)> = (0..phone_users)
            .map(|i| {
                let home = rng.gen_range(0.0..1.0);
                let country = HOME
                    .iter()
                    .scan(0.0, |acc, (_, share)| {
                        *acc += share;
                        Some(*acc)
                    })
                    .position(|edge| home < edge)
                    .unwrap_or(0);
                let registers = i > sms_users;
                let voip = registers && rng.gen_bool(VOIP_NUMBER);
                let region = if rng.gen_bool(FOREIGN_NUMBER) {
                    *ABROAD.choose(rng).unwrap_or(&"US")
                } else {
                    HOME[country].0
                };
                (country, region, voip)
            })
            .collect();
        let mut pools = NumberPools::new();
        let mut needed: Vec<((&'static str, bool), usize)> = Vec::new();
        for (_, region, voip) in &plans {
            match needed.iter_mut().find(|(k, _)| *k == (*region, *voip)) {
                Some((_, n)) => *n += 1,
                None => needed.push(((*region, *voip), 1)),
            }
        }
        for ((region, voip), n) in needed {
            pools.fill(region, voip, n, rng);
        }

        let mut users = Vec::new();
        let mut legit: Vec<Arc<LegitUser>> = Vec::with_capacity(phone_users);
        for (i, (country, region, voip)) in plans.iter().enumerate() {
            let phone = pools
                .take(region, *voip)
                .or_else(|| pools.take(region, false));
            let access = draw_access(*country, &networks, rng);
            let username = format!("u{i}@{}", mail_domain(*country));
            legit.push(Arc::new(LegitUser {
                username,
                phone,
                access,
            }));
        }
        // Directory entries: SMS users (a few with email MFA too), the victim (an SMS user),
        // users who must register, email-OTP users. Sign-ups are not in it yet.
        for (i, user) in legit.iter().enumerate() {
            if i > sms_users + registering {
                break;
            }
            let mut spec = UserSpec {
                username: user.username.clone(),
                password: Some(DEMO_PASSWORD.to_owned()),
                display_name: None,
                mfa_required: false,
                mfa_methods: Vec::new(),
            };
            if i <= sms_users {
                if rng.gen_bool(0.05) {
                    spec.mfa_methods.push(MfaMethodSpec {
                        channel: Channel::Email,
                        target: user.username.clone(),
                    });
                }
                if let Some(phone) = &user.phone {
                    spec.mfa_methods.push(MfaMethodSpec {
                        channel: Channel::Sms,
                        target: phone.e164.clone(),
                    });
                }
            } else {
                spec.mfa_required = true;
            }
            users.push(spec);
        }
        let mut email_people = Vec::with_capacity(email_users);
        for i in 0..email_users {
            let country = rng.gen_range(0..HOME.len());
            let user = Arc::new(LegitUser {
                username: format!("e{i}@{}", mail_domain(country)),
                phone: None,
                access: draw_access(country, &networks, rng),
            });
            users.push(UserSpec {
                username: user.username.clone(),
                password: None,
                display_name: None,
                mfa_required: false,
                mfa_methods: Vec::new(),
            });
            email_people.push(user);
        }

        let mut journeys = Vec::new();
        let mut journey =
            |user: Arc<LegitUser>, goal: Goal, at: f64, victim: bool, rng: &mut StdRng| {
                if at < hours * 3600.0 {
                    journeys.push(Journey {
                        user,
                        goal,
                        at,
                        seed: rng.gen(),
                        victim,
                    });
                }
            };
        for user in legit.iter().take(sms_users) {
            let at = arrival(rng);
            journey(user.clone(), Goal::SmsSignIn, at, false, rng);
        }
        for _ in sms_users..sign_ins {
            if sms_users == 0 {
                break;
            }
            let user = legit[rng.gen_range(0..sms_users)].clone();
            let at = arrival(rng);
            journey(user, Goal::SmsSignIn, at, false, rng);
        }
        let victim = legit.get(sms_users).cloned();
        if let Some(v) = &victim {
            journey(v.clone(), Goal::SmsSignIn, VICTIM_SIGN_IN, true, rng);
        }
        for user in legit.iter().skip(sms_users + 1).take(registering) {
            let at = arrival(rng);
            journey(user.clone(), Goal::Register, at, false, rng);
        }
        for user in legit
            .iter()
            .skip(sms_users + 1 + registering)
            .take(sign_ups)
        {
            let at = arrival(rng);
            journey(user.clone(), Goal::SignUp, at, false, rng);
        }
        for i in 0..email {
            let user = email_people[i % email_people.len()].clone();
            let at = arrival(rng);
            journey(user, Goal::EmailSignIn, at, false, rng);
        }
        Self {
            users,
            journeys,
            networks,
            victim: victim
                .filter(|_| VICTIM_SIGN_IN < hours * 3600.0)
                .map(|v| v.username.clone()),
        }
    }
}

fn mail_domain(country: usize) -> &'static str {
    match HOME.get(country).map(|(c, _)| *c) {
        Some("GB") => "mail.example.co.uk",
        Some("FR") => "courriel.example.fr",
        Some("DE") => "post.example.de",
        _ => "mail.example.com",
    }
}

fn draw_access(country: usize, networks: &Networks, rng: &mut StdRng) -> Access {
    let net = &networks.countries[country];
    let kinds = [
        (0usize, ACCESS_SHARES[0]),
        (1, ACCESS_SHARES[1]),
        (2, ACCESS_SHARES[2]),
        (3, ACCESS_SHARES[3]),
    ];
    match weighted(&kinds, rng) {
        0 => Access::Cgnat {
            country,
            carrier: net.pick_carrier(rng),
        },
        1 => Access::Home(net.home_address(rng)),
        2 => Access::V6(super::network::public_net64(rng)),
        _ => Access::Venue {
            country,
            venue: net.pick_venue(rng),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn arrivals_follow_the_curve() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut night = 0;
        let mut evening = 0;
        for _ in 0..10_000 {
            let h = (arrival(&mut rng) / 3600.0) as usize;
            if h < 5 {
                night += 1;
            }
            if (18..21).contains(&h) {
                evening += 1;
            }
        }
        assert!(night < evening / 4, "{night} {evening}");
    }

    #[test]
    fn the_population_has_its_journeys() {
        let mut rng = StdRng::seed_from_u64(2);
        let pop = Population::build(&mut rng, 0.1, 24.0);
        let of = |g: Goal| pop.journeys.iter().filter(|j| j.goal == g).count();
        assert_eq!(of(Goal::SmsSignIn), 501);
        assert_eq!(of(Goal::Register), 30);
        assert_eq!(of(Goal::SignUp), 20);
        assert_eq!(of(Goal::EmailSignIn), 80);
        assert!(pop.victim.is_some());
        assert!(pop
            .journeys
            .iter()
            .filter(|j| j.goal == Goal::SmsSignIn)
            .all(|j| j.user.phone.is_some()));
    }
}
