//! The five attacker classes. Each pumper is a campaign (its addresses, accounts, numbers,
//! a send rate, a time window) run by a few concurrent workers. Pumpers that know the
//! default rules (they are in the README) pace themselves under them: a campaign counts its
//! own sent codes per address, network, number range, country, account and number, in the
//! same windows, and sends only where it is under the published limit less one. What the
//! gateway answers then teaches it: a number range that is refused twice without ever
//! having sent is dropped, a throttled address rests for `Retry-After`, a challenged
//! address (for a pumper that does not solve proofs) rests for an hour and the range of the
//! number for half an hour; the number waits for another address. No attacker enters a
//! code, except the code-entering class, which reads them for the numbers it controls.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::driver::{between, send, Attempt, Job, Persistence, Verdict, World};
use super::flows::{self, AfterPassword, Client, PASSWORD_TYPES};
use super::network::{self, network_of};
use super::numbers::{self, Number, Range};
use super::report::{Class, SendKind};
use crate::emulate::entra::{UserSpec, DEMO_PASSWORD};

const HOUR: f64 = 3600.0;

/// High-cost destinations of low-and-slow pumping (about twenty).
const HIGH_COST: [&str; 20] = [
    "LV", "LT", "EE", "BY", "AZ", "UZ", "TJ", "KG", "PK", "BD", "LK", "MM", "KH", "NG", "GH", "SL",
    "GN", "SO", "CU", "IQ",
];
/// Where the IRSF pumper leases mobile number blocks.
const LEASED: [&str; 10] = ["LV", "LT", "SO", "SL", "GN", "TJ", "KG", "UZ", "AZ", "CU"];
/// Where it also tries premium-rate blocks.
const PREMIUM: [&str; 6] = ["GB", "LV", "LT", "DE", "AT", "FR"];

/// A limit a pumper believes in: sends allowed in the window.
#[derive(Debug, Clone, Copy)]
struct Limit {
    window: f64,
    allowed: usize,
}

const fn per_hour(allowed: usize) -> Option<Limit> {
    Some(Limit {
        window: HOUR,
        allowed,
    })
}

/// The limits a campaign paces under: the defaults' limits less one. `None`: not paced (a
/// pumper that pays for step-ups with CPU ignores the step-up rules).
#[derive(Debug, Clone, Copy)]
struct Belief {
    ip_minute: Option<Limit>,
    ip: Option<Limit>,
    network: Option<Limit>,
    prefix: Option<Limit>,
    country: Option<Limit>,
    account: Option<Limit>,
    phone: Option<Limit>,
    per_flow: usize,
}

/// Knows every default rule: 3/min per IP (throttle), 10/h per IP, 30/h per /24 or /64,
/// 20/h per 9-digit range, 500/h per country (step up), 10/h per user, 5/h per phone,
/// 3 per flow (deny).
const KNOWS_THE_DEFAULTS: Belief = Belief {
    ip_minute: Some(Limit {
        window: 60.0,
        allowed: 2,
    }),
    ip: per_hour(9),
    network: per_hour(29),
    prefix: per_hour(19),
    country: per_hour(490),
    account: per_hour(9),
    phone: per_hour(4),
    per_flow: 3,
};

/// Solves every proof: paces only under the throttle and the deny rules.
const PAYS_FOR_STEP_UPS: Belief = Belief {
    ip: None,
    network: None,
    prefix: None,
    country: None,
    ..KNOWS_THE_DEFAULTS
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    IpMinute(IpAddr),
    Ip(IpAddr),
    Network(u128),
    Prefix(String),
    Country(&'static str),
    Account(usize),
    Phone(String),
}

/// A campaign's own count of the codes it got sent, per key.
#[derive(Default)]
struct Pacer {
    sent: HashMap<Key, VecDeque<f64>>,
}

impl Pacer {
    fn under(&mut self, key: &Key, limit: Option<Limit>, now: f64) -> bool {
        let Some(limit) = limit else {
            return true;
        };
        let Some(times) = self.sent.get_mut(key) else {
            return true;
        };
        while times.front().is_some_and(|t| *t <= now - limit.window) {
            times.pop_front();
        }
        times.len() < limit.allowed
    }

    fn record(&mut self, key: Key, now: f64) {
        self.sent.entry(key).or_default().push_back(now);
    }
}

fn prefix_of(e164: &str) -> String {
    e164.trim_start_matches('+').chars().take(9).collect()
}

/// A number the campaign may send to.
struct Target {
    number: Number,
    prefix: String,
    block: usize,
    uses: u32,
}

#[derive(Default, Clone)]
struct BlockState {
    sent: u32,
    denies: u32,
    dead: bool,
}

struct Account {
    username: String,
    /// A number this account registered (the code-entering class completes some).
    registered: Option<String>,
    denies_in_a_row: u32,
}

/// What a flow is for.
enum FlowKind {
    Register,
    /// MFA sends to the number the account registered.
    Mfa,
}

struct Plan {
    ip: IpAddr,
    account: usize,
    kind: FlowKind,
    sends: usize,
}

/// The shared state of one pumping campaign.
struct Campaign {
    class: Class,
    end: f64,
    /// Seconds between sends, campaign-wide.
    interval: f64,
    next_send: f64,
    ips: Vec<IpAddr>,
    accounts: Vec<Account>,
    next_account: usize,
    targets: Vec<Target>,
    cursor: usize,
    /// Sends per number in all: 1 for walkers, more for numbers the pumper keeps.
    reuse: u32,
    blocks: Vec<BlockState>,
    pacer: Pacer,
    belief: Belief,
    resting: HashMap<Key, f64>,
    flow_sends: (usize, usize),
    /// Seconds between sends within a flow.
    gap: (f64, f64),
    persistence: Persistence,
    /// Share of sent codes the class enters (code-entering only).
    enters_codes: f64,
}

impl Campaign {
    fn rested(&self, key: &Key, now: f64) -> bool {
        self.resting.get(key).is_none_or(|until| *until <= now)
    }

    fn rest(&mut self, key: Key, until: f64) {
        let e = self.resting.entry(key).or_insert(until);
        *e = e.max(until);
    }

    fn ip_ok(&mut self, ip: IpAddr, now: f64) -> bool {
        let belief = self.belief;
        self.rested(&Key::Ip(ip), now)
            && self.rested(&Key::Network(network_of(ip)), now)
            && self.pacer.under(&Key::IpMinute(ip), belief.ip_minute, now)
            && self.pacer.under(&Key::Ip(ip), belief.ip, now)
            && self
                .pacer
                .under(&Key::Network(network_of(ip)), belief.network, now)
    }

    fn account_ok(&mut self, account: usize, now: f64) -> bool {
        let belief = self.belief;
        self.rested(&Key::Account(account), now)
            && self
                .pacer
                .under(&Key::Account(account), belief.account, now)
    }

    fn plan(&mut self, now: f64, sends: usize, rng: &mut StdRng) -> Option<Plan> {
        let picks: Vec<IpAddr> = (0..40)
            .map(|_| self.ips[rng.gen_range(0..self.ips.len())])
            .collect();
        let ip = picks.into_iter().find(|ip| self.ip_ok(*ip, now))?;
        let n = self.accounts.len();
        let from = self.next_account;
        let account = (0..n)
            .map(|i| (from + i) % n)
            .find(|a| self.account_ok(*a, now))?;
        self.next_account = (account + 1) % n;
        let kind = match &self.accounts[account].registered {
            Some(_) => FlowKind::Mfa,
            None => FlowKind::Register,
        };
        let sends = sends.min(self.belief.per_flow);
        Some(Plan {
            ip,
            account,
            kind,
            sends,
        })
    }

    /// Seconds to wait for the campaign's next flow of `sends` sends (and take its slots):
    /// the campaign's rate, spread over its workers.
    fn claim_slots(&mut self, sends: usize, now: f64, rng: &mut StdRng) -> f64 {
        let at = self.next_send.max(now);
        self.next_send = at + self.interval * sends as f64 * between(rng, (0.5, 1.5));
        at - now
    }

    fn target_ok(&mut self, t: usize, now: f64) -> bool {
        let belief = self.belief;
        let target = &self.targets[t];
        if target.uses >= self.reuse || self.blocks[target.block].dead {
            return false;
        }
        let (prefix, country, phone) = (
            Key::Prefix(target.prefix.clone()),
            Key::Country(target.number.region),
            Key::Phone(target.number.e164.clone()),
        );
        self.rested(&prefix, now)
            && self.pacer.under(&prefix, belief.prefix, now)
            && self.pacer.under(&country, belief.country, now)
            && self.pacer.under(&phone, belief.phone, now)
    }

    /// The next number to send to, walking the list from the cursor.
    fn pick_target(&mut self, now: f64) -> Option<usize> {
        let n = self.targets.len();
        let from = self.cursor;
        let found = (0..n.min(2000))
            .map(|i| (from + i) % n)
            .find(|t| self.target_ok(*t, now))?;
        self.cursor = (found + 1) % n;
        Some(found)
    }

    /// Whether the address and the account may still send now (checked before each send of
    /// a flow: other workers send meanwhile).
    fn may_send(&mut self, ip: IpAddr, account: usize, now: f64) -> bool {
        self.ip_ok(ip, now) && self.account_ok(account, now)
    }

    /// Learn from a verdict.
    fn learn(
        &mut self,
        now: f64,
        ip: IpAddr,
        account: usize,
        target: Option<usize>,
        verdict: &Verdict,
    ) {
        let target_keys = target.map(|t| {
            let tg = &self.targets[t];
            (
                tg.block,
                Key::Prefix(tg.prefix.clone()),
                Key::Country(tg.number.region),
                Key::Phone(tg.number.e164.clone()),
            )
        });
        match verdict {
            Verdict::Sent => {
                for key in [
                    Key::IpMinute(ip),
                    Key::Ip(ip),
                    Key::Network(network_of(ip)),
                    Key::Account(account),
                ] {
                    self.pacer.record(key, now);
                }
                if let (Some(t), Some((block, prefix, country, phone))) = (target, target_keys) {
                    self.targets[t].uses += 1;
                    self.blocks[block].sent += 1;
                    for key in [prefix, country, phone] {
                        self.pacer.record(key, now);
                    }
                }
                self.accounts[account].denies_in_a_row = 0;
            }
            Verdict::Denied => {
                if let (Some(t), Some((block, prefix, _, _))) = (target, target_keys) {
                    self.targets[t].uses += 1;
                    let b = &mut self.blocks[block];
                    b.denies += 1;
                    if b.sent == 0 && b.denies >= 2 {
                        b.dead = true;
                    } else {
                        self.rest(prefix, now + HOUR);
                    }
                }
                let a = &mut self.accounts[account];
                a.denies_in_a_row += 1;
                if a.denies_in_a_row >= 2 {
                    a.denies_in_a_row = 0;
                    self.rest(Key::Account(account), now + HOUR);
                }
            }
            Verdict::Throttled(secs) => self.rest(Key::Ip(ip), now + secs.max(1.0)),
            Verdict::Pow { .. } | Verdict::Challenged => {
                self.rest(Key::Ip(ip), now + HOUR);
                self.rest(Key::Network(network_of(ip)), now + HOUR / 2.0);
                if let Some((_, prefix, _, _)) = target_keys {
                    self.rest(prefix, now + HOUR / 2.0);
                }
            }
            Verdict::Other => {}
        }
    }
}

/// Attacker accounts, made before the day (SIMULATION.md: account creation is not modelled).
fn accounts(class: Class, n: usize, mfa_required: bool) -> (Vec<Account>, Vec<UserSpec>) {
    let tag = class.name();
    (0..n)
        .map(|i| {
            let username = format!("{tag}-{i}@inbox{}.example", i % 97);
            let spec = UserSpec {
                username: username.clone(),
                password: Some(DEMO_PASSWORD.to_owned()),
                display_name: None,
                mfa_required,
                mfa_methods: Vec::new(),
            };
            (
                Account {
                    username,
                    registered: None,
                    denies_in_a_row: 0,
                },
                spec,
            )
        })
        .unzip()
}

fn scaled(n: f64, scale: f64, min: usize) -> usize {
    ((n * scale).round() as usize).max(min)
}

/// Numbers in blocks, interleaved so that a walk advances in every block at once.
fn walk(blocks: Vec<Vec<Number>>) -> (Vec<Target>, Vec<BlockState>) {
    let longest = blocks.iter().map(Vec::len).max().unwrap_or(0);
    let states = vec![BlockState::default(); blocks.len()];
    let mut targets = Vec::new();
    for j in 0..longest {
        for (b, block) in blocks.iter().enumerate() {
            if let Some(number) = block.get(j) {
                targets.push(Target {
                    prefix: prefix_of(&number.e164),
                    number: number.clone(),
                    block: b,
                    uses: 0,
                });
            }
        }
    }
    (targets, states)
}

/// Numbers as one block each (fresh or owned numbers, not ranges walked).
fn loose(numbers: Vec<Number>, rng: &mut StdRng) -> (Vec<Target>, Vec<BlockState>) {
    let mut numbers = numbers;
    numbers.shuffle(rng);
    let states = vec![BlockState::default(); numbers.len()];
    let targets = numbers
        .into_iter()
        .enumerate()
        .map(|(i, number)| Target {
            prefix: prefix_of(&number.e164),
            number,
            block: i,
            uses: 0,
        })
        .collect();
    (targets, states)
}

/// What to run for one campaign: its workers, with their start times.
pub(crate) struct Attack {
    pub accounts: Vec<UserSpec>,
    jobs: Vec<(f64, u64, Kind)>,
}

enum Kind {
    Pump(Arc<Mutex<Campaign>>),
    Bomb(Arc<Bomber>),
}

impl Attack {
    /// Schedule the workers on `world`.
    pub(crate) fn schedule(self, world: &Arc<World>) {
        for (at, seed, kind) in self.jobs {
            let w = world.clone();
            let job: Job = match kind {
                Kind::Pump(c) => Box::new(move || Box::pin(pump_worker(w, c, seed))),
                Kind::Bomb(b) => Box::new(move || Box::pin(bomb(w, b, seed))),
            };
            world.spawn_at(at, job);
        }
    }
}

struct CampaignSpec {
    class: Class,
    start_h: f64,
    end_h: f64,
    rate: f64,
    workers: usize,
    ips: Vec<IpAddr>,
    accounts: usize,
    targets: (Vec<Target>, Vec<BlockState>),
    reuse: u32,
    belief: Belief,
    flow_sends: (usize, usize),
    gap: (f64, f64),
    persistence: Persistence,
    enters_codes: f64,
}

const NO_SOLVE: Persistence = Persistence {
    solve_pow: false,
    solve_secs: (0.0, 0.0),
    throttle_waits: 0,
    throttle_extra: (0.0, 0.0),
};

/// A GPU-less script solves the default difficulty in milliseconds.
const SOLVES: Persistence = Persistence {
    solve_pow: true,
    solve_secs: (0.02, 0.2),
    throttle_waits: 0,
    throttle_extra: (0.0, 0.0),
};

fn campaign(spec: CampaignSpec, scale: f64, hours: f64, rng: &mut StdRng) -> Attack {
    let (accounts, specs) = accounts(spec.class, spec.accounts, true);
    let start = spec.start_h * HOUR;
    let end = (spec.end_h * HOUR).min(hours * HOUR);
    let rate = spec.rate * scale;
    let (targets, blocks) = spec.targets;
    let c = Campaign {
        class: spec.class,
        end,
        interval: HOUR / rate.max(1e-6),
        next_send: start,
        ips: spec.ips,
        accounts,
        next_account: 0,
        targets,
        cursor: 0,
        reuse: spec.reuse,
        blocks,
        pacer: Pacer::default(),
        belief: spec.belief,
        resting: HashMap::new(),
        flow_sends: spec.flow_sends,
        gap: spec.gap,
        persistence: spec.persistence,
        enters_codes: spec.enters_codes,
    };
    let usable = start < end && !c.targets.is_empty() && !c.ips.is_empty();
    let shared = Arc::new(Mutex::new(c));
    let workers = if usable { spec.workers.max(1) } else { 0 };
    let jobs = (0..workers)
        .map(|_| {
            (
                start + rng.gen_range(0.0..60.0),
                rng.gen(),
                Kind::Pump(shared.clone()),
            )
        })
        .collect();
    Attack {
        accounts: specs,
        jobs,
    }
}

/// Every attacker of a run. `victim` is the bomber's target, a legitimate SMS user whose
/// password it has.
pub(crate) fn build(
    scale: f64,
    hours: f64,
    victim: Option<String>,
    rng: &mut StdRng,
) -> Vec<Attack> {
    let mut out = Vec::new();

    // (1) IRSF pumper: a burst at night through ~1,000 rotating proxies, walking leased
    // mobile blocks and premium-rate blocks through registration.
    let per_block = 100;
    let mut blocks = Vec::new();
    let leased_blocks = scaled(60.0, scale, 2);
    for i in 0..leased_blocks {
        blocks.push(numbers::block(
            LEASED[i % LEASED.len()],
            Range::Mobile,
            per_block,
            rng,
        ));
    }
    for i in 0..scaled(18.0, scale, 1) {
        blocks.push(numbers::block(
            PREMIUM[i % PREMIUM.len()],
            Range::PremiumRate,
            per_block,
            rng,
        ));
    }
    blocks.retain(|b| !b.is_empty());
    // Walk the blocks in a random order, premium ones among them.
    blocks.shuffle(rng);
    out.push(campaign(
        CampaignSpec {
            class: Class::IrsfPumper,
            start_h: 1.0,
            end_h: 7.0,
            rate: 1000.0,
            workers: scaled(40.0, scale, 1),
            ips: network::proxies(scaled(1000.0, scale, 10), rng),
            accounts: scaled(500.0, scale, 5),
            targets: walk(blocks),
            reuse: 1,
            belief: KNOWS_THE_DEFAULTS,
            flow_sends: (2, 3),
            gap: (31.0, 45.0),
            persistence: NO_SOLVE,
            enters_codes: 0.0,
        },
        scale,
        hours,
        rng,
    ));

    // (2) Low-and-slow: all day, ~3,000 addresses, 1-2 numbers per flow, ~20 countries.
    let per_country = scaled(150.0, scale, 3);
    let mut fresh = Vec::new();
    for region in HIGH_COST {
        fresh.extend(numbers::draw_many(region, Range::Mobile, per_country, rng));
    }
    out.push(campaign(
        CampaignSpec {
            class: Class::LowAndSlow,
            start_h: 0.0,
            end_h: 24.0,
            rate: 125.0,
            workers: scaled(6.0, scale, 1),
            ips: network::proxies(scaled(3000.0, scale, 10), rng),
            accounts: scaled(1500.0, scale, 5),
            targets: loose(fresh, rng),
            reuse: 2,
            belief: KNOWS_THE_DEFAULTS,
            flow_sends: (1, 2),
            gap: (31.0, 60.0),
            persistence: NO_SOLVE,
            enters_codes: 0.0,
        },
        scale,
        hours,
        rng,
    ));

    // (3) OTP bomber: one victim's SMS method, from three addresses, for three hours.
    if let Some(victim) = victim {
        let bomber = Arc::new(Bomber {
            victim,
            ips: network::pool_v4(3, 3, rng),
            end: (12.5 * HOUR).min(hours * HOUR),
        });
        let start = 9.5 * HOUR;
        let jobs = if start < bomber.end {
            vec![(start, rng.gen(), Kind::Bomb(bomber))]
        } else {
            Vec::new()
        };
        out.push(Attack {
            accounts: Vec::new(),
            jobs,
        });
    }

    // (4) Solves every proof of work: a few hosting ranges, paced only under the throttle
    // and the deny rules.
    let mut owned = Vec::new();
    for region in &HIGH_COST[..8] {
        owned.extend(numbers::draw_many(
            region,
            Range::Mobile,
            scaled(60.0, scale, 2),
            rng,
        ));
    }
    out.push(campaign(
        CampaignSpec {
            class: Class::PowSolver,
            start_h: 13.0,
            end_h: 21.0,
            rate: 400.0,
            workers: scaled(12.0, scale, 1),
            ips: network::pool_v4(scaled(16.0, scale, 3), 2, rng),
            accounts: scaled(300.0, scale, 5),
            targets: loose(owned, rng),
            reuse: u32::MAX,
            belief: PAYS_FOR_STEP_UPS,
            flow_sends: (3, 3),
            gap: (31.0, 40.0),
            persistence: SOLVES,
            enters_codes: 0.0,
        },
        scale,
        hours,
        rng,
    ));

    // (5) Enters some codes to look human (it controls the numbers), registers some of its
    // numbers for good and then pumps MFA sends to them; solves proofs; daytime only.
    let mut controlled = Vec::new();
    for region in &HIGH_COST[8..14] {
        controlled.extend(numbers::draw_many(
            region,
            Range::Mobile,
            scaled(15.0, scale, 2),
            rng,
        ));
    }
    out.push(campaign(
        CampaignSpec {
            class: Class::CodeEntering,
            start_h: 7.0,
            end_h: 23.0,
            rate: 100.0,
            workers: scaled(6.0, scale, 1),
            ips: network::proxies(scaled(400.0, scale, 10), rng),
            accounts: scaled(300.0, scale, 5),
            targets: loose(controlled, rng),
            reuse: u32::MAX,
            belief: KNOWS_THE_DEFAULTS,
            flow_sends: (1, 3),
            gap: (31.0, 60.0),
            persistence: SOLVES,
            enters_codes: 0.3,
        },
        scale,
        hours,
        rng,
    ));
    out
}

/// One worker of a pumping campaign: flow after flow until the campaign's window ends.
async fn pump_worker(world: Arc<World>, campaign: Arc<Mutex<Campaign>>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (end, class) = {
        let c = campaign.lock();
        (c.end, c.class)
    };
    while world.now() < end {
        // The campaign's rate first, then a plan for now: a flow's tokens live ten minutes.
        let (lo, hi) = campaign.lock().flow_sends;
        let sends = rng.gen_range(lo..=hi);
        let wait = campaign.lock().claim_slots(sends, world.now(), &mut rng);
        world.sleep(wait).await;
        if world.now() >= end {
            break;
        }
        let plan = campaign.lock().plan(world.now(), sends, &mut rng);
        let Some(plan) = plan else {
            world.sleep(between(&mut rng, (30.0, 90.0))).await;
            continue;
        };
        pump_flow(&world, &campaign, class, plan, &mut rng).await;
        world.sleep(between(&mut rng, (1.0, 10.0))).await;
    }
}

async fn pump_flow(
    world: &Arc<World>,
    campaign: &Arc<Mutex<Campaign>>,
    class: Class,
    plan: Plan,
    rng: &mut StdRng,
) {
    let (username, registered, end, gap, persistence, enters) = {
        let c = campaign.lock();
        let a = &c.accounts[plan.account];
        (
            a.username.clone(),
            a.registered.clone(),
            c.end,
            c.gap,
            c.persistence,
            c.enters_codes,
        )
    };
    let client = Client {
        world,
        class,
        ip: plan.ip,
    };
    let Some(ct) = client.initiate(&username, PASSWORD_TYPES).await else {
        return;
    };
    world.sleep(between(rng, (0.2, 1.0))).await;
    let Some(ct) = client.password_prompt(&ct).await else {
        return;
    };
    world.sleep(between(rng, (1.0, 3.0))).await;
    let after = client.password(&ct, DEMO_PASSWORD).await;
    world.sleep(between(rng, (0.2, 1.0))).await;
    let (mut ct, method) = match (plan.kind, after) {
        (FlowKind::Register, AfterPassword::Register(ct)) => {
            let Some(ct) = client.register_introspect(&ct).await else {
                return;
            };
            (ct, None)
        }
        (FlowKind::Mfa, AfterPassword::Mfa(ct)) => {
            let Some((ct, methods)) = client.introspect(&ct).await else {
                return;
            };
            let Some((id, _)) = methods.into_iter().find(|(_, ch)| ch == "sms") else {
                return;
            };
            (ct, Some(id))
        }
        _ => return,
    };
    // The code and number of the flow's last send that went out.
    let mut last: Option<(String, String)> = None;
    for i in 0..plan.sends {
        if i > 0 {
            world.sleep(between(rng, gap)).await;
        }
        let now = world.now();
        if now >= end {
            break;
        }
        let (target, phone) = {
            let mut c = campaign.lock();
            if !c.may_send(plan.ip, plan.account, now) {
                break;
            }
            match &method {
                Some(_) => {
                    let phone = registered.clone().unwrap_or_default();
                    let limit = c.belief.phone;
                    if !c.pacer.under(&Key::Phone(phone.clone()), limit, now) {
                        break;
                    }
                    (None, phone)
                }
                None => match c.pick_target(now) {
                    Some(t) => (Some(t), c.targets[t].number.e164.clone()),
                    None => break,
                },
            }
        };
        let (kind, form): (SendKind, Vec<(&str, &str)>) = match &method {
            Some(id) => (SendKind::SmsMfa, flows::mfa_form(&ct, id).to_vec()),
            None => (
                SendKind::SmsRegistration,
                flows::register_form(&ct, &phone).to_vec(),
            ),
        };
        let endpoint = match kind {
            SendKind::SmsMfa => "/oauth2/v2.0/challenge",
            _ => "/register/v1.0/challenge",
        };
        let mut attempt = Attempt::new(world, class, kind);
        let (verdict, answer) = send(
            world,
            &mut attempt,
            plan.ip,
            endpoint,
            &form,
            &persistence,
            rng,
        )
        .await;
        drop(attempt);
        {
            let mut c = campaign.lock();
            c.learn(world.now(), plan.ip, plan.account, target, &verdict);
            if method.is_some() {
                if let Verdict::Sent = verdict {
                    c.pacer.record(Key::Phone(phone.clone()), world.now());
                }
            }
        }
        match verdict {
            Verdict::Sent => {
                let Some(next) = answer.token() else {
                    return;
                };
                ct = next;
                last = answer.any_code().map(|code| (code, phone.clone()));
            }
            // The token is still good: the gateway answered, Entra never saw it.
            Verdict::Denied => continue,
            _ => break,
        }
    }
    // The code-entering class finishes some flows with the code it received.
    let Some((code, phone)) = last else {
        return;
    };
    if enters <= 0.0 || !rng.gen_bool(enters.min(1.0)) {
        return;
    }
    world.sleep(between(rng, (10.0, 40.0))).await;
    match method {
        Some(_) => {
            let _ = client.mfa_code(&ct, &code).await;
        }
        None => {
            let Some(next) = client.register_code(&ct, &code).await.token() else {
                return;
            };
            if matches!(client.redeem(&next).await, AfterPassword::Done) {
                // The number the flow last sent to is now the account's SMS method.
                campaign.lock().accounts[plan.account].registered = Some(phone);
            }
        }
    }
}

/// The OTP bomber: sign in as the victim (it has the password) and ask for the MFA code
/// again and again, three per flow, from a few addresses in turn.
struct Bomber {
    victim: String,
    ips: Vec<IpAddr>,
    end: f64,
}

async fn bomb(world: Arc<World>, bomber: Arc<Bomber>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut turn = 0usize;
    while world.now() < bomber.end {
        let ip = bomber.ips[turn % bomber.ips.len()];
        turn += 1;
        let client = Client {
            world: &world,
            class: Class::OtpBomber,
            ip,
        };
        let Some(ct) = client.initiate(&bomber.victim, PASSWORD_TYPES).await else {
            world.sleep(60.0).await;
            continue;
        };
        let Some(ct) = client.password_prompt(&ct).await else {
            world.sleep(60.0).await;
            continue;
        };
        let AfterPassword::Mfa(ct) = client.password(&ct, DEMO_PASSWORD).await else {
            world.sleep(60.0).await;
            continue;
        };
        let Some((mut ct, methods)) = client.introspect(&ct).await else {
            world.sleep(60.0).await;
            continue;
        };
        let Some((id, _)) = methods.into_iter().find(|(_, ch)| ch == "sms") else {
            return;
        };
        for _ in 0..3 {
            let form = flows::mfa_form(&ct, &id);
            let mut attempt = Attempt::new(&world, Class::OtpBomber, SendKind::SmsMfa);
            let (verdict, answer) = send(
                &world,
                &mut attempt,
                ip,
                "/oauth2/v2.0/challenge",
                &form,
                &NO_SOLVE,
                &mut rng,
            )
            .await;
            drop(attempt);
            if let (Verdict::Sent, Some(next)) = (&verdict, answer.token()) {
                ct = next;
            }
            world.sleep(between(&mut rng, (15.0, 25.0))).await;
        }
    }
}
