//! `otpgate simulate`: a seeded, time-compressed day of traffic through the real gateway in
//! front of the embedded Entra emulator, all in one process, on paused tokio time, so that a
//! security team can judge a config before deploying it. The model, its assumptions and
//! its limits are in SIMULATION.md.
//!
//! The gateway is built from the config the normal way ([`crate::config::load_with_env`],
//! [`Gateway::with_upstream`]) and reaches the emulator through [`Upstream::in_process`]:
//! nothing waits on a socket, so paused time can jump from one event to the next and a day
//! takes seconds. Legitimate users and five attacker classes send their requests through
//! [`Gateway::handle`]; what Entra sent is read from the emulator's outbox after every
//! request and counted for the class that sent it.
//!
//! * [`numbers`]: valid numbers of a country's mobile, VoIP or premium-rate ranges.
//! * [`network`]: client addresses: carrier-grade NAT pools, home IPv4, IPv6 /64s, venues,
//!   proxy pools.
//! * [`population`]: the tenant's users and when their journeys start.
//! * [`legit`]: how a legitimate user's journey goes.
//! * [`attackers`]: the five attacker classes.
//! * [`flows`]: the native-auth steps every client makes.
//! * [`driver`]: the event loop, the requests, proofs of work, attribution.
//! * [`report`]: per-class counts, headline figures, the table and the JSON.

mod attackers;
mod driver;
mod flows;
mod legit;
mod network;
mod numbers;
mod population;
mod report;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use rand::rngs::StdRng;
use rand::SeedableRng;

pub(crate) use report::{render, Report};

use crate::config::{self, ProviderChoice, Settings, StoreBackend};
use crate::emulate::entra::{EntraConfig, EntraEmulator, SignUpPolicy};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::store::MemoryStore;
use crate::upstream::InProcessHandler;

/// What to simulate.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The config judged; `None`: the shipped defaults.
    pub config: Option<PathBuf>,
    pub seed: u64,
    /// Hours of the day simulated, from midnight (at most 24).
    pub hours: f64,
    /// Multiplies every volume: users, attackers' rates and resources.
    pub scale: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: None,
            seed: 1,
            hours: 24.0,
            scale: 1.0,
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimulateError {
    #[error("invalid configuration ({what}):\n{problems}")]
    Config { what: String, problems: String },
    #[error(
        "routes.{route} asks {provider}, which the simulation cannot reach: it runs in one \
         process on paused time, and HUMAN and Prove would need their emulators over \
         sockets. Simulate with provider = \"none\" or \"mock\" on that route"
    )]
    UnsupportedProvider {
        route: &'static str,
        provider: &'static str,
    },
    #[error("{0}")]
    Options(String),
    #[error("cannot build the gateway: {0}")]
    Build(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Host the upstream URL names; never dialled (the upstream is in-process).
const UPSTREAM_URL: &str = "http://entra.simulate.invalid";

/// Load the config judged: the file (or the defaults), the environment's `OTPGATE__*`
/// overrides, and the simulation's own: the upstream (in-process) and no audit log.
fn load_settings(path: Option<&Path>) -> Result<(Settings, String), SimulateError> {
    let env = std::env::vars()
        .filter(|(k, _)| k != "OTPGATE__UPSTREAM__URL" && k != "OTPGATE__AUDIT__OUTPUT")
        .chain([
            ("OTPGATE__UPSTREAM__URL".to_owned(), UPSTREAM_URL.to_owned()),
            ("OTPGATE__AUDIT__OUTPUT".to_owned(), "off".to_owned()),
        ]);
    let (raw, mut settings) =
        config::load_with_env(path, env).map_err(|problems| SimulateError::Config {
            what: path.map_or("the defaults".to_owned(), |p| p.display().to_string()),
            problems: problems.to_string(),
        })?;
    for (route, r) in [
        ("sms", &settings.routes.sms),
        ("email", &settings.routes.email),
    ] {
        let provider = match r.provider {
            ProviderChoice::Human => "HUMAN",
            ProviderChoice::Prove => "Prove",
            ProviderChoice::None | ProviderChoice::Mock => continue,
        };
        return Err(SimulateError::UnsupportedProvider { route, provider });
    }
    settings.audit_sink = crate::audit::AuditSink::Off;
    let velocity = match &raw.defense.velocity {
        None => "built-in velocity defaults".to_owned(),
        Some(rules) if rules.is_empty() => "velocity = []".to_owned(),
        Some(rules) => format!("{} velocity rules", rules.len()),
    };
    let provider = |p: ProviderChoice| match p {
        ProviderChoice::Mock => "mock",
        _ => "none",
    };
    let mut description = format!(
        "{} ({velocity}, providers sms={} email={})",
        path.map_or("shipped defaults".to_owned(), |p| p.display().to_string()),
        provider(settings.routes.sms.provider),
        provider(settings.routes.email.provider),
    );
    if settings.store.backend == StoreBackend::Redis {
        description.push_str("; store.backend = redis replaced by the memory store");
    }
    Ok((settings, description))
}

/// Run one simulation: its own current-thread runtime with paused time.
pub(crate) fn run(options: &Options) -> Result<Report, SimulateError> {
    if !(options.hours > 0.0 && options.hours <= 24.0) {
        return Err(SimulateError::Options(
            "--hours must be more than 0 and at most 24".into(),
        ));
    }
    if !(options.scale > 0.0 && options.scale <= 100.0) {
        return Err(SimulateError::Options(
            "--scale must be more than 0 and at most 100".into(),
        ));
    }
    let (settings, description) = load_settings(options.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    runtime.block_on(simulate(settings, description, options))
}

async fn simulate(
    settings: Settings,
    description: String,
    options: &Options,
) -> Result<Report, SimulateError> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let population = population::Population::build(&mut rng, options.scale, options.hours);
    let attacks = attackers::build(
        options.scale,
        options.hours,
        population.victim.clone(),
        &mut rng,
    );
    let mut users = population.users.clone();
    for attack in &attacks {
        users.extend(attack.accounts.iter().cloned());
    }
    let entra = EntraConfig {
        users,
        // The tenant requires MFA: a new account registers a phone at its first sign-in.
        signup: SignUpPolicy {
            required_attributes: Vec::new(),
            mfa_required: true,
        },
        ..EntraConfig::default()
    };
    let tenant = format!("{}.onmicrosoft.com", entra.tenant_name);
    let emulator = EntraEmulator::new(entra);
    let upstream = Upstream::in_process(&settings.upstream, emulator_handler(&emulator))
        .map_err(|e| SimulateError::Build(e.to_string()))?;
    let store = Arc::new(MemoryStore::new(settings.store.max_entries));
    let gateway = Gateway::with_upstream(Arc::new(settings), Metrics::new(), store, upstream)
        .map_err(|e| SimulateError::Build(e.to_string()))?;
    let (world, turns) = driver::World::new(gateway, emulator, &tenant);

    let networks = population.networks.clone();
    for journey in population.journeys {
        let (w, n) = (world.clone(), networks.clone());
        let at = journey.at;
        world.spawn_at(at, Box::new(move || Box::pin(legit::run(w, n, journey))));
    }
    for attack in attacks {
        attack.schedule(&world);
    }
    world.run(turns).await;

    let sent_total = world.emulator().sent_total();
    let until = world.now() / 3600.0;
    let report = world.tally.lock().report(
        options.seed,
        options.hours,
        options.scale,
        description,
        sent_total,
        until,
    );
    Ok(report)
}

/// The emulator as the gateway's upstream: [`EntraEmulator::handle`] called directly.
pub(crate) fn emulator_handler(emulator: &EntraEmulator) -> InProcessHandler {
    let emulator = emulator.clone();
    Arc::new(move |req: http::Request<Bytes>| {
        let emulator = emulator.clone();
        Box::pin(async move {
            let req = req.map(http_body_util::Full::new);
            let (parts, body) = emulator.handle(req).await.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            http::Response::from_parts(parts, body)
        })
    })
}
