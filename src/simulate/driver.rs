//! The event loop on paused tokio time, the clients' requests through
//! [`Gateway::handle`], the proof-of-work solver, and attribution of what Entra sent.
//!
//! Every actor (a legitimate journey, an attacker's worker) is a task that waits with
//! [`World::sleep`]. The loop wakes exactly one actor at a time, in order of virtual time
//! and then of scheduling, lets paused time move to that instant, and waits until the actor
//! sleeps again or ends. So one request runs at a time, what Entra sent during it (the
//! growth of the emulator's `sent_total`, and the outbox entries read then) belongs to the
//! actor that sent it, and the same seed gives the same run.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, Method, Request};
use http_body_util::{BodyExt as _, Full};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::report::{AttemptLog, Class, Last, SendKind, Tally};
use crate::emulate::entra::{EntraEmulator, OutboxEntry};
use crate::entra::answer::STEP_UP_SUBERROR;
use crate::gateway::Gateway;
use crate::proxy::ConnInfo;
use crate::stepup::AltchaChallenge;

/// Something to run at a virtual time.
pub(crate) type Job = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

enum Wake {
    Start(Job),
    Resume(oneshot::Sender<()>),
}

struct Entry {
    at_ms: u64,
    seq: u64,
    wake: Wake,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: `BinaryHeap` pops the greatest, and the earliest must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

/// Host the simulated clients address.
const HOST: &str = "login.contoso.example";

/// Everything actors share: the gateway, the emulator, the clock and the counts.
pub(crate) struct World {
    gateway: Gateway,
    emulator: EntraEmulator,
    /// `/contoso.onmicrosoft.com`.
    base: String,
    start: Instant,
    /// The virtual time of the turn running now, in milliseconds since the start.
    now_ms: Mutex<u64>,
    queue: Mutex<Queue>,
    turns: mpsc::UnboundedSender<()>,
    pub tally: Mutex<Tally>,
}

/// Tells the loop that the running actor's turn is over when dropped: when its task ends,
/// even by a panic.
struct TurnOver(mpsc::UnboundedSender<()>);

impl Drop for TurnOver {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl World {
    pub(crate) fn new(
        gateway: Gateway,
        emulator: EntraEmulator,
        tenant: &str,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<()>) {
        let (turns, rx) = mpsc::unbounded_channel();
        let world = Arc::new(Self {
            gateway,
            emulator,
            base: format!("/{tenant}"),
            start: Instant::now(),
            now_ms: Mutex::new(0),
            queue: Mutex::new(Queue::default()),
            turns,
            tally: Mutex::new(Tally::default()),
        });
        (world, rx)
    }

    pub(crate) fn emulator(&self) -> &EntraEmulator {
        &self.emulator
    }

    /// Virtual seconds since the start of the simulated day.
    pub(crate) fn now(&self) -> f64 {
        *self.now_ms.lock() as f64 / 1000.0
    }

    fn push(&self, at_secs: f64, wake: Wake) {
        let mut q = self.queue.lock();
        q.seq += 1;
        let entry = Entry {
            at_ms: (at_secs.max(0.0) * 1000.0).round() as u64,
            seq: q.seq,
            wake,
        };
        q.heap.push(entry);
    }

    /// Start `job` at `at_secs` of virtual time.
    pub(crate) fn spawn_at(&self, at_secs: f64, job: Job) {
        self.push(at_secs, Wake::Start(job));
    }

    /// Wait `secs` of virtual time; other actors run meanwhile.
    pub(crate) async fn sleep(&self, secs: f64) {
        let (tx, rx) = oneshot::channel();
        self.push(self.now() + secs.max(0.0), Wake::Resume(tx));
        let _ = self.turns.send(());
        let _ = rx.await;
    }

    /// Run every actor to its end: one turn at a time, in order of virtual time.
    pub(crate) async fn run(self: &Arc<Self>, mut turns: mpsc::UnboundedReceiver<()>) {
        loop {
            let next = self.queue.lock().heap.pop();
            let Some(entry) = next else {
                return;
            };
            tokio::time::sleep_until(self.start + Duration::from_millis(entry.at_ms)).await;
            {
                let mut now = self.now_ms.lock();
                *now = (*now).max(entry.at_ms);
            }
            match entry.wake {
                Wake::Start(job) => {
                    let over = TurnOver(self.turns.clone());
                    tokio::spawn(async move {
                        let _over = over;
                        job().await;
                    });
                }
                Wake::Resume(tx) => {
                    if tx.send(()).is_err() {
                        // The actor is gone: there is no turn to wait for.
                        continue;
                    }
                }
            }
            if turns.recv().await.is_none() {
                return;
            }
        }
    }

    /// POST a form to a native-auth endpoint through the gateway, from `ip`, and see what
    /// Entra sent meanwhile.
    pub(crate) async fn post(
        &self,
        class: Class,
        ip: IpAddr,
        endpoint: &str,
        form: &[(&str, &str)],
        proof: Option<(&str, &str)>,
    ) -> Answer {
        self.tally.lock().request(class);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{endpoint}", self.base))
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((name, value)) = proof {
            builder = builder.header(name, value);
        }
        let Ok(req) = builder.body(Full::new(Bytes::from(body))) else {
            return Answer::default();
        };
        let before = self.emulator.sent_total();
        let conn = ConnInfo {
            peer: SocketAddr::new(ip, 443),
            tls: true,
        };
        let resp = self.gateway.handle(req, conn).await;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let codes = if self.emulator.sent_total() > before {
            let codes = self.emulator.outbox();
            self.emulator.clear_outbox();
            codes
        } else {
            Vec::new()
        };
        {
            let mut tally = self.tally.lock();
            for code in &codes {
                tally.delivered(class, &code.channel, &code.endpoint);
            }
        }
        Answer {
            status,
            body,
            retry_after,
            codes,
        }
    }
}

/// An answer as the client sees it, with the codes Entra sent while making it.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<f64>,
    pub codes: Vec<OutboxEntry>,
}

impl Answer {
    pub(crate) fn token(&self) -> Option<String> {
        self.body
            .get("continuation_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub(crate) fn suberror(&self) -> Option<&str> {
        self.body.get("suberror").and_then(Value::as_str)
    }

    pub(crate) fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    /// Tokens issued: the sign-in is complete.
    pub(crate) fn signed_in(&self) -> bool {
        self.status == 200 && self.body.get("access_token").is_some()
    }

    /// The code sent to `target`, if one was.
    pub(crate) fn code_for(&self, target: &str) -> Option<String> {
        self.codes
            .iter()
            .rev()
            .find(|c| c.target.eq_ignore_ascii_case(target))
            .map(|c| c.code.clone())
    }

    /// The newest code sent, wherever it went.
    pub(crate) fn any_code(&self) -> Option<String> {
        self.codes.last().map(|c| c.code.clone())
    }

    /// What the answer to a send means for the client.
    pub(crate) fn verdict(&self) -> Verdict {
        if !self.codes.is_empty() {
            return Verdict::Sent;
        }
        if self.status == 429 {
            return Verdict::Throttled(self.retry_after.unwrap_or(60.0));
        }
        let fraud_redirect = self.status == 200
            && self.body.get("challenge_type").and_then(Value::as_str) == Some("redirect")
            && self.body.get("redirect_reason").and_then(Value::as_str)
                == Some("The request was blocked by fraud protection.");
        if fraud_redirect
            || (self.error() == Some("access_denied")
                && self.suberror() == Some("provider_blocked_by_rep"))
        {
            return Verdict::Denied;
        }
        if self.suberror() == Some(STEP_UP_SUBERROR) {
            let challenge = self.body.get("otpgate_challenge");
            let pow = challenge
                .filter(|c| c.get("type").and_then(Value::as_str) == Some("pow"))
                .and_then(|c| {
                    let header = c.get("header")?.as_str()?.to_owned();
                    let altcha: AltchaChallenge =
                        serde_json::from_value(c.get("altcha")?.clone()).ok()?;
                    Some((altcha, header))
                });
            return match pow {
                Some((altcha, header)) => Verdict::Pow { altcha, header },
                None => Verdict::Challenged,
            };
        }
        Verdict::Other
    }
}

/// What became of one send request.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    Sent,
    Denied,
    /// Seconds to wait, from `Retry-After`.
    Throttled(f64),
    /// The built-in proof of work: solve it and repeat the request with the proof.
    Pow {
        altcha: AltchaChallenge,
        header: String,
    },
    /// A step-up the client cannot pass (a provider's own).
    Challenged,
    /// No code and not the gateway: an Entra error, a password prompt, a redirect.
    Other,
}

impl Verdict {
    pub(crate) fn is_stop(&self) -> bool {
        !matches!(self, Verdict::Sent | Verdict::Other)
    }
}

/// One send attempt (see [`super::report`]): its counts go to the tally when it is dropped.
pub(crate) struct Attempt {
    world: Arc<World>,
    class: Class,
    kind: SendKind,
    log: AttemptLog,
}

impl Attempt {
    pub(crate) fn new(world: &Arc<World>, class: Class, kind: SendKind) -> Self {
        Self {
            world: world.clone(),
            class,
            kind,
            log: AttemptLog::default(),
        }
    }

    fn note(&mut self, verdict: &Verdict) {
        self.log.requests += 1;
        self.log.last = match verdict {
            Verdict::Sent => {
                self.log.sent = true;
                Last::Sent
            }
            Verdict::Denied => {
                self.log.denied = true;
                Last::Denied
            }
            Verdict::Throttled(_) => {
                self.log.throttled = true;
                Last::Throttled
            }
            Verdict::Pow { .. } | Verdict::Challenged => {
                self.log.challenged = true;
                Last::Challenged
            }
            Verdict::Other => Last::Other,
        };
    }

    pub(crate) fn hindered(&self) -> bool {
        self.log.hindered()
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.world
            .tally
            .lock()
            .attempt(self.class, self.kind, &self.log);
    }
}

/// How a client handles the gateway's answers to a send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Persistence {
    /// Solve the built-in proof of work and repeat the request with it.
    pub solve_pow: bool,
    /// Virtual seconds a solve takes (drawn uniformly), not the real time it took: the run
    /// must not depend on how fast the machine is.
    pub solve_secs: (f64, f64),
    /// How many throttles to wait out (`Retry-After` plus `throttle_extra`) before giving up.
    pub throttle_waits: u32,
    pub throttle_extra: (f64, f64),
}

pub(crate) fn between(rng: &mut StdRng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

/// Send one attempt's request, and repeat it as `how` says after a proof of work or a
/// throttle. Returns the last verdict and answer.
pub(crate) async fn send(
    world: &Arc<World>,
    attempt: &mut Attempt,
    ip: IpAddr,
    endpoint: &str,
    form: &[(&str, &str)],
    how: &Persistence,
    rng: &mut StdRng,
) -> (Verdict, Answer) {
    let mut proof: Option<(String, String)> = None;
    let mut solves = 0;
    let mut waits = 0;
    loop {
        let answer = world
            .post(
                attempt.class,
                ip,
                endpoint,
                form,
                proof.as_ref().map(|(h, p)| (h.as_str(), p.as_str())),
            )
            .await;
        let verdict = answer.verdict();
        attempt.note(&verdict);
        match &verdict {
            Verdict::Pow { altcha, header } if how.solve_pow && solves < 2 => {
                solves += 1;
                let Some(payload) = solve(altcha) else {
                    return (verdict, answer);
                };
                world.sleep(between(rng, how.solve_secs)).await;
                proof = Some((header.clone(), payload));
            }
            Verdict::Throttled(secs) if waits < how.throttle_waits => {
                waits += 1;
                let wait = *secs + between(rng, how.throttle_extra);
                world.sleep(wait).await;
                proof = None;
            }
            _ => return (verdict, answer),
        }
    }
}

/// Solve an ALTCHA challenge as altcha-lib does: try every number up to `maxnumber` until
/// SHA-256(salt + number) is the challenge. Returns the base64 payload for the proof header.
pub(crate) fn solve(challenge: &AltchaChallenge) -> Option<String> {
    let target = hex::decode(&challenge.challenge).ok()?;
    let mut salted = Sha256::new();
    salted.update(challenge.salt.as_bytes());
    let mut digits = itoa_buf();
    let number = (0..=challenge.max_number).find(|&n| {
        let mut h = salted.clone();
        h.update(format_u64(n, &mut digits));
        h.finalize().as_slice() == target.as_slice()
    })?;
    let payload = serde_json::json!({
        "algorithm": challenge.algorithm,
        "challenge": challenge.challenge,
        "number": number,
        "salt": challenge.salt,
        "signature": challenge.signature,
    });
    Some(BASE64.encode(payload.to_string()))
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// `n` in decimal, written into `buf`.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stepup::{Binding, Pow};
    use crate::store::MemoryStore;

    #[test]
    fn decimal_digits() {
        let mut b = itoa_buf();
        assert_eq!(format_u64(0, &mut b), b"0");
        assert_eq!(format_u64(50_000, &mut b), b"50000");
        assert_eq!(
            format_u64(u64::MAX, &mut b),
            u64::MAX.to_string().as_bytes()
        );
    }

    #[tokio::test]
    async fn solved_challenges_verify() {
        let pow = Pow::new(&[7u8; 32], Duration::from_secs(300), 5_000);
        let binding = Binding {
            flow: "flow-1",
            target_hash: "t",
            level: 1,
        };
        let store = MemoryStore::new(1000);
        for _ in 0..5 {
            let challenge = pow.challenge(&binding);
            let payload = solve(&challenge).expect("solvable");
            pow.verify(&payload, &binding, &store).await.expect("valid");
        }
    }
}
