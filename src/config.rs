//! Typed configuration: a TOML file layered over built-in defaults and overridden by
//! `OTPGATE__SECTION__KEY` environment variables, parsed into strong types, and validated
//! with every problem reported at once, each naming its key.
//!
//! `config/otpgate.toml` documents every key with its default; it is the config reference.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod source;

pub use crate::problem::{Checker, Problem, Problems, Secret};
pub use source::Dropped;

/// The configuration as written: each section deserialized on its own so that a mistake in
/// one does not hide mistakes in another.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub entra: EntraConfig,
    pub policy: PolicyConfig,
    pub routes: RoutesConfig,
    #[serde(skip_serializing)]
    pub providers: ProvidersConfig,
    /// `[stepup]`: the built-in proof of work (ALTCHA format).
    pub stepup: crate::stepup::PowConfig,
    pub store: StoreConfig,
    pub audit: AuditConfig,
    pub cors: CorsConfig,
    pub defense: DefenseConfig,
    /// Array elements refused while reading, so later problems name elements as written.
    #[serde(skip)]
    pub dropped: Dropped,
}

impl RawConfig {
    /// Read every section of `root`. A value serde refuses is reported with its full key
    /// and left at its default, so one mistake hides neither another in the same section
    /// nor the checks of the values around it.
    fn read(root: serde_json::Map<String, serde_json::Value>, check: &mut Checker) -> Self {
        fn read<T: DeserializeOwned>(
            target: &mut T,
            name: &str,
            value: serde_json::Value,
            dropped: &mut Dropped,
            check: &mut Checker,
        ) {
            if let Some(read) = source::read_lenient(name, value, dropped, check) {
                *target = read;
            }
        }
        let mut raw = RawConfig::default();
        let mut dropped = Dropped::default();
        for (name, value) in root {
            let d = &mut dropped;
            match name.as_str() {
                "server" => read(&mut raw.server, &name, value, d, check),
                "tls" => read(&mut raw.tls, &name, value, d, check),
                "upstream" => read(&mut raw.upstream, &name, value, d, check),
                "admin" => read(&mut raw.admin, &name, value, d, check),
                "log" => read(&mut raw.log, &name, value, d, check),
                "entra" => read(&mut raw.entra, &name, value, d, check),
                "policy" => read(&mut raw.policy, &name, value, d, check),
                "routes" => read(&mut raw.routes, &name, value, d, check),
                "providers" => read(&mut raw.providers, &name, value, d, check),
                "stepup" => read(&mut raw.stepup, &name, value, d, check),
                "store" => read(&mut raw.store, &name, value, d, check),
                "audit" => read(&mut raw.audit, &name, value, d, check),
                "cors" => read(&mut raw.cors, &name, value, d, check),
                "defense" => read(&mut raw.defense, &name, value, d, check),
                _ => check.problem(
                    &name,
                    "unknown section (expected server, tls, upstream, admin, log, entra, policy, \
                     routes, providers, stepup, store, audit, cors or defense)",
                ),
            }
        }
        raw.dropped = dropped;
        raw
    }

    /// The key of element `index` of the list at `key`, as the user wrote it.
    pub fn element_key(&self, key: &str, index: usize) -> String {
        format!("{key}[{}]", self.dropped.written_index(key, index))
    }

    /// What every key defaults to, for typing environment overrides (the providers'
    /// defaults hold no secret).
    fn shape() -> serde_json::Value {
        let mut shape = serde_json::to_value(RawConfig::default()).unwrap_or_default();
        if let Some(map) = shape.as_object_mut() {
            map.insert(
                "providers".into(),
                serde_json::to_value(ProvidersConfig::default()).unwrap_or_default(),
            );
        }
        shape
    }
}

/// `[policy]`: global decision settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Monitor mode for everything: decisions are computed, counted and audited as
    /// "would deny/step up", and every request is forwarded.
    pub monitor: bool,
}

/// `[routes]`: how OTP sends are judged, per channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Sends by SMS: MFA challenges to SMS methods, phone registration.
    pub sms: RouteConfig,
    /// Sends by email: sign-up, password reset, email MFA, email-OTP sign-in.
    pub email: RouteConfig,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            sms: RouteConfig::default(),
            email: RouteConfig {
                provider: ProviderChoice::None,
                ..RouteConfig::default()
            },
        }
    }
}

/// One route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Risk provider asked before a send: `none`, `mock`, `human` or `prove` (configured
    /// under `[providers.*]`).
    pub provider: ProviderChoice,
    /// What a provider failure (timeout, error, 5xx, 429, malformed answer, open circuit)
    /// means: `open` (send), `closed` (deny), `step_up` (built-in proof of work).
    pub fail_mode: crate::risk::FailMode,
    /// Longest the provider may take before the fail mode applies.
    pub budget: String,
    /// Monitor mode for this route only.
    pub monitor: bool,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            provider: ProviderChoice::None,
            fail_mode: crate::risk::FailMode::StepUp,
            budget: "300ms".into(),
            monitor: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderChoice {
    None,
    Mock,
    Human,
    Prove,
}

/// `[providers]`: adapter settings; only the ones a route names are built.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// HUMAN Security (Risk API, `_px3` / mobile token v3).
    pub human: crate::risk::HumanConfig,
    /// Prove (Unify possession + reputation).
    pub prove: crate::risk::ProveConfig,
    /// Verdicts from rules, for demos and tests.
    pub mock: crate::risk::MockConfig,
    /// Circuit breaker shared by the settings of every provider.
    pub circuit: CircuitConfig,
}

impl fmt::Debug for ProvidersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProvidersConfig { .. }")
    }
}

/// `[providers.circuit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit (the fail mode then applies at once).
    pub failure_threshold: u32,
    /// How long an open circuit stays open before one probe call is let through.
    pub open_for: String,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: "30s".into(),
        }
    }
}

/// `[defense]`: local defenses, needing no provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefenseConfig {
    /// `[defense.destination]`: where SMS codes may go.
    pub destination: crate::defense::DestinationConfig,
    /// `[[defense.velocity]]`: sliding-window rules. Absent: the built-in defaults
    /// (`defense::velocity::default_rules`); `velocity = []` turns them all off.
    pub velocity: Option<Vec<crate::defense::VelocityRule>>,
}

/// `[cors]`: SPA proxy mode for msal-browser's `customAuth.authApiProxyUrl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins allowed to call through the gateway from a browser, e.g.
    /// `https://app.example`. Empty = no CORS. No wildcard.
    pub allowed_origins: Vec<String>,
    /// Extra request headers allowed in preflights besides MSAL's own (`x-client-*`,
    /// `client-request-id`, …): the `x-` headers your fraud SDK's interceptor adds.
    pub allow_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age: String,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, e.g. HUMAN's `_px3`).
    pub allow_credentials: bool,
    /// A path prefix mapped onto the tenant: with `path_prefix = "/api/auth"` and
    /// `tenant = "contoso.onmicrosoft.com"`, `/api/auth/oauth2/v2.0/initiate` is served as
    /// `/contoso.onmicrosoft.com/oauth2/v2.0/initiate`. Set `authApiProxyUrl` to
    /// `https://<gateway>/api/auth`.
    pub path_prefix: String,
    /// The tenant segment the prefix maps to (tenant id or `{name}.onmicrosoft.com`).
    pub tenant: String,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_headers: Vec::new(),
            max_age: "10m".into(),
            allow_credentials: false,
            path_prefix: String::new(),
            tenant: String::new(),
        }
    }
}

/// `[audit]`: one JSON line per gated request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `stdout` (with the logs; every audit line has `"type":"audit"`), `stderr` (apart from
    /// the logs, which go to stdout), `file` or `off`.
    pub output: AuditOutput,
    /// The file, when `output = "file"`; reopened on SIGUSR1.
    pub path: Option<PathBuf>,
    /// Rotate the file when it passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`).
    pub keep: usize,
    /// Key of the HMAC-SHA256 over phone numbers (secret; or `hmac_key_file`). Set it, and
    /// keep it across restarts and replicas, so hashes correlate.
    pub hmac_key: Secret,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            output: AuditOutput::Stdout,
            path: None,
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
            hmac_key: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutput {
    Stdout,
    Stderr,
    File,
    Off,
}

/// `[store]`: where shared state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` (this process only) or `redis` (shared by replicas; memory as fallback).
    pub backend: StoreBackend,
    /// Most keys the memory store holds before it evicts.
    pub max_entries: usize,
    /// Key of the HMAC-SHA256 that turns phone numbers, IPs, continuation tokens and
    /// method ids into store keys (secret; or `key_secret_file`), so reading Redis does not
    /// reveal them. Every replica needs the same one. Empty: a random key per process with
    /// the memory backend; with Redis, plain SHA-256 (a warning: phone numbers can be
    /// recovered from it by trying them all).
    pub key_secret: Secret,
    pub redis: RedisConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            max_entries: 1_000_000,
            key_secret: Secret::default(),
            redis: RedisConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Memory,
    Redis,
}

/// `[store.redis]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:6379/0`, or `rediss://` for TLS. A username and password may also be
    /// given in the URL (`redis://user:password@host`); `username` and `password` below
    /// win over them.
    pub url: String,
    /// ACL user for `AUTH username password` (Redis 6+, managed Redis ACL users); empty:
    /// the URL's, or the `default` user.
    pub username: String,
    /// AUTH password (secret; or `password_file`).
    pub password: Secret,
    /// PEM CA certificates trusted for `rediss://` instead of the public roots (a private
    /// CA, a self-run Redis with TLS).
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key otpgate writes.
    pub key_prefix: String,
    /// Longest one store operation may take before the fallback answers.
    pub timeout: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            username: String::new(),
            password: Secret::default(),
            ca_file: None,
            key_prefix: "otpgate:".into(),
            timeout: "50ms".into(),
        }
    }
}

/// `[server]`: the public listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gateway listens on.
    pub listen: String,
    /// Host names (without port) the gateway answers for; empty = any. Others get 400.
    pub hosts: Vec<String>,
    /// Peers (CIDRs) whose `X-Forwarded-For` is trusted, e.g. a load balancer.
    pub trusted_proxies: Vec<String>,
    /// Time a client has to send its request headers (also bounds the TLS handshake, a new
    /// connection's first request and a gated request's body).
    pub header_read_timeout: String,
    /// Time without an open request before a connection is closed; an open request that
    /// moves no byte for this long is asked to finish, and cut off after as long again.
    pub idle_timeout: String,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most client connections open at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// Most requests in flight at once; excess gets a fast 503.
    pub max_in_flight: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: String,
    /// Threads that run requests: 0 = `TOKIO_WORKER_THREADS` when set, else one per CPU
    /// the process may use. With 1, one thread runs everything (no work-stealing queues).
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            header_read_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_in_flight: 4096,
            shutdown_grace: "30s".into(),
            worker_threads: 0,
        }
    }
}

/// `[tls]`: TLS on the public listener; off when both files are empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// `[upstream]`: the Entra host otpgate protects.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL: `https://{tenant}.ciamlogin.com`, a custom URL domain, or a local emulator.
    pub url: String,
    /// Extra PEM CA certificates trusted for the upstream, besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Time allowed to open a connection to the upstream.
    pub connect_timeout: String,
    /// Time allowed for the upstream's response headers.
    pub response_timeout: String,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: String,
    /// Most idle pooled connections kept to the upstream.
    pub pool_max_idle: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: None,
            connect_timeout: "2s".into(),
            response_timeout: "15s".into(),
            pool_idle_timeout: "90s".into(),
            pool_max_idle: 256,
        }
    }
}

/// `[admin]`: liveness, readiness and metrics, on their own port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener; keep it off the public network.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `otpgate=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[entra]`: native-auth handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntraConfig {
    /// V2 (experimental) native-auth endpoints: `block` or `pass`.
    pub v2: V2Mode,
    /// Largest form body accepted on a gated endpoint, in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Channel assumed for an MFA method id that was never seen in an introspect answer.
    pub unknown_method_channel: UnknownChannel,
    /// How long learned flows and method channels are kept.
    pub flow_ttl: String,
    /// How a denied OTP send is answered: `access_denied` (400, suberror
    /// `provider_blocked_by_rep`) or `redirect` (200 `{"challenge_type":"redirect"}`).
    pub deny_style: DenyStyle,
}

impl Default for EntraConfig {
    fn default() -> Self {
        Self {
            v2: V2Mode::Block,
            max_body_bytes: 16 * 1024,
            unknown_method_channel: UnknownChannel::Sms,
            flow_ttl: "15m".into(),
            deny_style: DenyStyle::AccessDenied,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum V2Mode {
    Block,
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownChannel {
    Sms,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyStyle {
    AccessDenied,
    Redirect,
}

/// Load a config file (or only defaults when `path` is `None`) with env overrides, and
/// validate it. Every problem found is returned at once.
pub fn load(path: Option<&Path>) -> Result<(RawConfig, Settings), Problems> {
    load_with_env(path, std::env::vars())
}

/// The effective configuration as `check-config --print` shows it: every section with its
/// defaults filled in, the velocity rules in force (the built-in ones when none are
/// configured), secrets as `***` (passwords inside URLs included), and `providers` named
/// but not shown (its settings hold tokens and secrets in plain fields).
pub fn effective_json(raw: &RawConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(raw).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "providers".into(),
            serde_json::Value::String(PROVIDERS_NOT_PRINTED.into()),
        );
    }
    if raw.defense.velocity.is_none() {
        let rules = crate::defense::velocity::default_rules();
        if let (Some(defense), Ok(rules)) = (
            value.get_mut("defense").and_then(|d| d.as_object_mut()),
            serde_json::to_value(rules),
        ) {
            defense.insert("velocity".into(), rules);
        }
    }
    source::redact_url_secrets(&mut value);
    value
}

/// What [`effective_json`] shows for `providers`.
pub const PROVIDERS_NOT_PRINTED: &str = "<configured; not printed: holds secrets>";

/// Keys whose value is a secret: each may instead be given as `<key>_file`, a path whose
/// contents (without the trailing newline) become the value.
pub const SECRET_KEYS: &[&str] = &[
    "providers.human.auth_token",
    "providers.human.cookie_secrets",
    "providers.prove.client_secret",
    "stepup.key",
    "store.key_secret",
    "store.redis.password",
    "audit.hmac_key",
];

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(RawConfig, Settings), Problems> {
    let source = path.map(|p| {
        config::File::from(p.to_path_buf())
            .format(config::FileFormat::Toml)
            .required(true)
    });
    load_source(source, path, env)
}

/// Load from TOML text (a built-in config such as the demo's) with env overrides.
pub fn load_toml(
    toml: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(RawConfig, Settings), Problems> {
    let source = config::File::from_str(toml, config::FileFormat::Toml);
    load_source(Some(source), None, env)
}

fn load_source<S>(
    source: Option<S>,
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(RawConfig, Settings), Problems>
where
    S: config::Source + Send + Sync + 'static,
{
    let mut check = Checker::default();
    let mut builder = config::Config::builder();
    if let Some(source) = source {
        builder = builder.add_source(source);
    }
    let file = match builder
        .build()
        .and_then(|c| c.try_deserialize::<serde_json::Value>())
    {
        Ok(value @ serde_json::Value::Object(_)) => value,
        Ok(_) => serde_json::Value::Object(serde_json::Map::new()),
        Err(e) => {
            let key = path.map(|p| p.display().to_string()).unwrap_or_default();
            check.problem(&key, e.to_string());
            return Err(check.into_problems());
        }
    };
    let shape = source::merged(&RawConfig::shape(), &file);
    let mut root = file;
    source::apply_env(&mut root, &shape, env, &mut check);
    resolve_secret_files(&mut root, "", &mut check);
    check_placeholders(&root, &mut check);

    let root = match root {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let raw = RawConfig::read(root, &mut check);
    let settings = Settings::from_raw(&raw, &mut check);
    check.finish()?;
    match settings {
        Some(s) => Ok((raw, s)),
        None => Err(Problems(vec![Problem {
            key: String::new(),
            message: "invalid configuration".into(),
        }])),
    }
}

/// What the example configs and Secrets put where a secret goes: accepted as a value, it
/// would run with a key anyone can read in this repository.
const PLACEHOLDER: &str = "replace-me";

/// Every secret still holding the example placeholder is a problem.
fn check_placeholders(root: &serde_json::Value, check: &mut Checker) {
    for key in SECRET_KEYS {
        let value = key
            .split('.')
            .try_fold(root, |node, part| node.as_object()?.get(part));
        let texts: Vec<&str> = match value {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        if texts
            .iter()
            .any(|t| t.to_ascii_lowercase().contains(PLACEHOLDER))
        {
            check.problem(
                key,
                "still the example placeholder (REPLACE-ME…): set a real secret, e.g. the \
                 output of `openssl rand -hex 32`",
            );
        }
    }
}

/// Replace every `<secret>_file` key by `<secret>` read from that file. Both given is a
/// problem; so is an unreadable file. A secret list (`cookie_secrets`) reads one per line.
fn resolve_secret_files(value: &mut serde_json::Value, prefix: &str, check: &mut Checker) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    let dotted_of = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    let file_keys: Vec<String> = map
        .keys()
        .filter(|k| {
            k.strip_suffix("_file")
                .is_some_and(|base| SECRET_KEYS.contains(&dotted_of(base).as_str()))
        })
        .cloned()
        .collect();
    for file_key in file_keys {
        let base = file_key.trim_end_matches("_file").to_owned();
        let dotted = dotted_of(&file_key);
        let Some(serde_json::Value::String(path)) = map.remove(&file_key) else {
            check.problem(&dotted, "must be a file path");
            continue;
        };
        if map.contains_key(&base) {
            check.problem(
                &dotted,
                format!("set either {base} or {file_key}, not both"),
            );
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let secret = if base == "cookie_secrets" {
                    serde_json::Value::Array(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(|l| serde_json::Value::String(l.to_owned()))
                            .collect(),
                    )
                } else {
                    serde_json::Value::String(text.trim_end_matches(['\r', '\n']).to_owned())
                };
                map.insert(base, secret);
            }
            Err(e) => check.problem(&dotted, format!("cannot read {path}: {e}")),
        }
    }
    for (key, child) in map.iter_mut() {
        let dotted = dotted_of(key);
        resolve_secret_files(child, &dotted, check);
    }
}

/// Validated, typed settings: what `build()` steps turn into runtime objects.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: Option<TlsSettings>,
    pub upstream: UpstreamSettings,
    pub admin_listen: SocketAddr,
    pub log: LogConfig,
    pub entra: EntraSettings,
    pub policy: PolicyConfig,
    pub routes: RouteSettings,
    pub providers: ProvidersConfig,
    pub circuit_open_for: Duration,
    pub stepup: StepUpSettings,
    pub store: StoreSettings,
    pub audit_sink: crate::audit::AuditSink,
    pub audit_key: Secret,
    pub cors: crate::cors::Cors,
    pub destination: crate::defense::DestinationPolicy,
    pub velocity: crate::defense::VelocityRules,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub sms: Route,
    pub email: Route,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub provider: ProviderChoice,
    pub fail_mode: crate::risk::FailMode,
    pub budget: Duration,
    pub monitor: bool,
}

#[derive(Debug, Clone)]
pub struct StepUpSettings {
    pub pow: crate::stepup::Pow,
    pub header: http::HeaderName,
    /// The key was generated at start (none configured).
    pub random_key: bool,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    pub max_entries: usize,
    pub key_secret: Secret,
    pub redis_url: String,
    pub redis_username: String,
    pub redis_password: Secret,
    pub redis_ca_file: Option<PathBuf>,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
}

impl StoreSettings {
    /// The hasher for sensitive parts of store keys (see [`StoreConfig::key_secret`]).
    /// Without a key, replicas sharing Redis can only agree on plain SHA-256; a process
    /// alone picks a random key.
    pub fn key_hasher(&self) -> crate::store::KeyHasher {
        use crate::store::KeyHasher;
        match (self.key_secret.is_empty(), self.backend) {
            (false, _) => KeyHasher::keyed(self.key_secret.expose().as_bytes()),
            (true, StoreBackend::Redis) => KeyHasher::unkeyed(),
            (true, StoreBackend::Memory) => KeyHasher::random(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Lowercased host names; empty = any.
    pub hosts: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    /// As configured: 0 = automatic, see [`ServerSettings::workers`].
    pub worker_threads: usize,
}

/// Most request threads `server.worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;

impl ServerSettings {
    /// How many threads run requests: `server.worker_threads`, else a valid
    /// `TOKIO_WORKER_THREADS`, else the CPUs this process may use (its cgroup quota
    /// included).
    pub fn workers(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
    }
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub url: http::Uri,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

impl UpstreamSettings {
    pub fn is_https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }
    /// `host[:port]` as it goes into the `Host` header.
    pub fn authority(&self) -> &str {
        self.url.authority().map(|a| a.as_str()).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct EntraSettings {
    pub v2: V2Mode,
    pub max_body_bytes: usize,
    pub unknown_method_channel: UnknownChannel,
    pub flow_ttl: Duration,
    pub deny_style: DenyStyle,
}

impl Settings {
    /// What is valid but unsafe to run with: `check-config` prints these, and the server
    /// logs them at start.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = Vec::new();
        let mut warn = |key: &str, message: &str| {
            warnings.push(Problem {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.store.backend == StoreBackend::Redis && self.store.key_secret.is_empty() {
            warn(
                "store.key_secret",
                "empty with the redis backend: store keys hold plain SHA-256 hashes of phone \
                 numbers and IPs, which anyone who can read Redis can reverse by hashing every \
                 number; set one secret on every replica",
            );
        }
        if self.stepup.random_key {
            warn(
                "stepup.key",
                "empty: each process signs proofs of work with a key of its own, so a proof \
                 one replica issued is refused by another and after a restart; set one key on \
                 every replica",
            );
        }
        if self.audit_key.is_empty() && self.audit_sink != crate::audit::AuditSink::Off {
            warn(
                "audit.hmac_key",
                "empty: each process hashes phone numbers under a key of its own, so audit \
                 lines of one number do not correlate across replicas or restarts; set one \
                 key on every replica",
            );
        }
        warnings
    }

    /// Type and cross-check `raw`; returns `None` (with problems recorded) when invalid.
    pub fn from_raw(raw: &RawConfig, check: &mut Checker) -> Option<Settings> {
        let s = &raw.server;
        let listen = check.addr("server.listen", &s.listen);
        let mut trusted_proxies = Vec::new();
        for (i, cidr) in s.trusted_proxies.iter().enumerate() {
            let key = raw.element_key("server.trusted_proxies", i);
            if let Some(net) = check.parse(&key, cidr, parse_cidr) {
                trusted_proxies.push(net);
            }
        }
        let header_read_timeout =
            check.duration("server.header_read_timeout", &s.header_read_timeout);
        let idle_timeout = check.duration("server.idle_timeout", &s.idle_timeout);
        let shutdown_grace = check.duration("server.shutdown_grace", &s.shutdown_grace);
        if s.max_header_bytes < 1024 {
            check.problem("server.max_header_bytes", "must be at least 1024");
        }
        if s.max_connections == 0 {
            check.problem("server.max_connections", "must be at least 1");
        }
        if s.max_in_flight == 0 {
            check.problem("server.max_in_flight", "must be at least 1");
        }
        if s.worker_threads > MAX_WORKER_THREADS {
            check.problem(
                "server.worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0 = one per CPU)"),
            );
        }
        let hosts = s.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();

        if let Some(cert) = &raw.tls.cert_file {
            check.readable_file("tls.cert_file", cert);
        }
        if let Some(key) = &raw.tls.key_file {
            check.readable_file("tls.key_file", key);
        }
        let tls = match (&raw.tls.cert_file, &raw.tls.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                // What `run` loads: a chain and a key that belong together.
                if cert.exists() && key.exists() {
                    if let Err(e) = crate::tls::load_certified_key(cert, key) {
                        check.problem("tls", e.to_string());
                    }
                }
                Some(TlsSettings {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                })
            }
            (Some(_), None) => {
                check.problem("tls.key_file", "required when tls.cert_file is set");
                None
            }
            (None, Some(_)) => {
                check.problem("tls.cert_file", "required when tls.key_file is set");
                None
            }
        };

        let u = &raw.upstream;
        let url = if u.url.is_empty() {
            check.problem(
                "upstream.url",
                "required, e.g. https://contoso.ciamlogin.com",
            );
            None
        } else {
            check.parse("upstream.url", &u.url, parse_upstream_url)
        };
        if let Some(ca) = &u.ca_file {
            check.readable_file("upstream.ca_file", ca);
        }
        let connect_timeout = check.duration("upstream.connect_timeout", &u.connect_timeout);
        let response_timeout = check.duration("upstream.response_timeout", &u.response_timeout);
        let pool_idle_timeout = check.duration("upstream.pool_idle_timeout", &u.pool_idle_timeout);

        let admin_listen = check.addr("admin.listen", &raw.admin.listen);
        if let (Some(a), Some(l)) = (admin_listen, listen) {
            if a == l && a.port() != 0 {
                check.problem("admin.listen", "must differ from server.listen");
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            check.problem("log.level", e.to_string());
        }

        let e = &raw.entra;
        let flow_ttl = check.duration("entra.flow_ttl", &e.flow_ttl);
        if e.max_body_bytes == 0 || e.max_body_bytes > 1024 * 1024 {
            check.problem("entra.max_body_bytes", "must be between 1 and 1048576");
        }

        let mut route = |name: &str, r: &RouteConfig| {
            let budget = check.duration(&format!("routes.{name}.budget"), &r.budget);
            let problems = match r.provider {
                ProviderChoice::Human => raw.providers.human.validate(),
                ProviderChoice::Prove => raw.providers.prove.validate(),
                ProviderChoice::Mock => raw.providers.mock.validate(),
                ProviderChoice::None => Vec::new(),
            };
            let section = match r.provider {
                ProviderChoice::Human => "providers.human",
                ProviderChoice::Prove => "providers.prove",
                ProviderChoice::Mock => "providers.mock",
                ProviderChoice::None => "",
            };
            for p in problems {
                let (k, m) = p.split_once(": ").unwrap_or(("", &p));
                check.problem(&format!("{section}.{k}"), m.to_owned());
            }
            budget.map(|budget| Route {
                provider: r.provider,
                fail_mode: r.fail_mode,
                budget,
                monitor: r.monitor,
            })
        };
        let sms_route = route("sms", &raw.routes.sms);
        let email_route = route("email", &raw.routes.email);
        let circuit_open_for = check.duration(
            "providers.circuit.open_for",
            &raw.providers.circuit.open_for,
        );
        if raw.providers.circuit.failure_threshold == 0 {
            check.problem("providers.circuit.failure_threshold", "must be at least 1");
        }

        let st = &raw.stepup;
        let pow = match st.build() {
            Ok(pow) => Some(pow),
            Err(problems) => {
                for p in problems {
                    check.problem(&format!("stepup.{}", p.key), p.message);
                }
                None
            }
        };
        let stepup_header = http::HeaderName::from_bytes(st.header.as_bytes()).ok();

        let so = &raw.store;
        let redis_timeout = check.duration("store.redis.timeout", &so.redis.timeout);
        if so.backend == StoreBackend::Redis
            && !(so.redis.url.starts_with("redis://") || so.redis.url.starts_with("rediss://"))
        {
            check.problem("store.redis.url", "must start with redis:// or rediss://");
        }
        if let Some(ca) = &so.redis.ca_file {
            check.readable_file("store.redis.ca_file", ca);
        }
        if so.max_entries < 1000 {
            check.problem("store.max_entries", "must be at least 1000");
        }

        let au = &raw.audit;
        let audit_sink = match (au.output, &au.path) {
            (AuditOutput::Off, _) => crate::audit::AuditSink::Off,
            (AuditOutput::Stdout, _) => crate::audit::AuditSink::Stdout,
            (AuditOutput::Stderr, _) => crate::audit::AuditSink::Stderr,
            (AuditOutput::File, Some(path)) => crate::audit::AuditSink::File {
                path: path.clone(),
                max_bytes: au.max_bytes.max(4096),
                keep: au.keep,
            },
            (AuditOutput::File, None) => {
                check.problem("audit.path", "required when audit.output = \"file\"");
                crate::audit::AuditSink::Off
            }
        };

        let co = &raw.cors;
        for (i, origin) in co.allowed_origins.iter().enumerate() {
            let key = raw.element_key("cors.allowed_origins", i);
            match origin.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some()
                        && matches!(u.path(), "" | "/")
                        && u.query().is_none() => {}
                _ => check.problem(
                    &key,
                    format!("not an origin such as https://app.example (got {origin:?})"),
                ),
            }
        }
        for (i, h) in co.allow_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                check.problem(
                    &raw.element_key("cors.allow_headers", i),
                    format!("not a header name (got {h:?})"),
                );
            }
        }
        let cors_max_age = check.duration("cors.max_age", &co.max_age);
        let mapping = match (co.path_prefix.as_str(), co.tenant.as_str()) {
            ("", "") => None,
            (prefix, tenant) => {
                if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.len() < 2 {
                    check.problem(
                        "cors.path_prefix",
                        "must start with / and not end with /, e.g. /api/auth",
                    );
                }
                if tenant.is_empty() || tenant.contains('/') {
                    check.problem(
                        "cors.tenant",
                        "required with cors.path_prefix: a tenant id or name.onmicrosoft.com",
                    );
                }
                Some((prefix.to_owned(), tenant.to_owned()))
            }
        };
        // The step-up proof header is ours: a browser must be allowed to send it, or our own
        // step-up answers could never be satisfied from an SPA.
        let mut cors_headers = co.allow_headers.clone();
        if let Some(h) = &stepup_header {
            cors_headers.push(h.as_str().to_owned());
        }
        let cors = crate::cors::Cors::new(
            &co.allowed_origins,
            &cors_headers,
            cors_max_age.map(|d| d.as_secs()).unwrap_or(600),
            co.allow_credentials,
            mapping,
        );

        let destination =
            match crate::defense::DestinationPolicy::from_config(&raw.defense.destination) {
                Ok(p) => Some(p),
                Err(problems) => {
                    for p in problems {
                        check.problem(&format!("defense.destination.{}", p.key), p.message);
                    }
                    None
                }
            };
        let rules = raw
            .defense
            .velocity
            .clone()
            .unwrap_or_else(crate::defense::velocity::default_rules);
        let velocity = match crate::defense::VelocityRules::new(rules) {
            Ok(v) => Some(v),
            Err(problems) => {
                for p in problems {
                    // Keys are `[i].field`, `i` counting the rules that were read.
                    let key = match p.key.strip_prefix('[').and_then(|k| k.split_once(']')) {
                        Some((i, rest)) => match i.parse::<usize>() {
                            Ok(i) => format!("{}{rest}", raw.element_key("defense.velocity", i)),
                            Err(_) => format!("defense.velocity{}", p.key),
                        },
                        None => format!("defense.velocity{}", p.key),
                    };
                    check.problem(&key, p.message);
                }
                None
            }
        };

        Some(Settings {
            destination: destination?,
            velocity: velocity?,
            cors,
            audit_sink,
            audit_key: au.hmac_key.clone(),
            policy: raw.policy.clone(),
            routes: RouteSettings {
                sms: sms_route?,
                email: email_route?,
            },
            providers: raw.providers.clone(),
            circuit_open_for: circuit_open_for?,
            stepup: StepUpSettings {
                pow: pow?,
                header: stepup_header?,
                random_key: st.key.is_empty(),
            },
            store: StoreSettings {
                backend: so.backend,
                max_entries: so.max_entries,
                key_secret: so.key_secret.clone(),
                redis_url: so.redis.url.clone(),
                redis_username: so.redis.username.clone(),
                redis_password: so.redis.password.clone(),
                redis_ca_file: so.redis.ca_file.clone(),
                redis_key_prefix: so.redis.key_prefix.clone(),
                redis_timeout: redis_timeout?,
            },
            server: ServerSettings {
                listen: listen?,
                hosts,
                trusted_proxies,
                header_read_timeout: header_read_timeout?,
                idle_timeout: idle_timeout?,
                max_header_bytes: s.max_header_bytes,
                max_connections: s.max_connections,
                max_in_flight: s.max_in_flight,
                shutdown_grace: shutdown_grace?,
                worker_threads: s.worker_threads,
            },
            tls,
            upstream: UpstreamSettings {
                url: url?,
                ca_file: u.ca_file.clone(),
                connect_timeout: connect_timeout?,
                response_timeout: response_timeout?,
                pool_idle_timeout: pool_idle_timeout?,
                pool_max_idle: u.pool_max_idle,
            },
            admin_listen: admin_listen?,
            log: raw.log.clone(),
            entra: EntraSettings {
                v2: e.v2,
                max_body_bytes: e.max_body_bytes,
                unknown_method_channel: e.unknown_method_channel,
                flow_ttl: flow_ttl?,
                deny_style: e.deny_style,
            },
        })
    }
}

/// A CIDR, or a bare address meaning a single host.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| "not a CIDR such as 10.0.0.0/8 or an IP address".to_owned())
}

/// An absolute `http`/`https` URL with a host and no path beyond `/`, query or userinfo:
/// request paths go to the upstream unchanged, so a base path would be silently ignored.
fn parse_upstream_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("scheme must be http or https".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("missing host".into());
    };
    if authority.as_str().contains('@') {
        return Err("userinfo is not allowed".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must be a base URL without path or query".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Settings, Problems> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        load_with_env(Some(&path), env).map(|(_, s)| s)
    }

    #[test]
    fn worker_threads_as_configured_or_refused() {
        let url = "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n";
        let s = load_str(&format!("{url}[server]\nworker_threads = 1\n"), &[]).unwrap();
        assert_eq!(s.server.workers(), 1);
        let s = load_str(url, &[("OTPGATE__SERVER__WORKER_THREADS", "3")]).unwrap();
        assert_eq!(s.server.workers(), 3);
        let s = load_str(url, &[]).unwrap();
        assert_eq!(s.server.worker_threads, 0, "automatic by default");
        assert!(s.server.workers() >= 1);
        let p = load_str(&format!("{url}[server]\nworker_threads = 5000\n"), &[]).unwrap_err();
        assert!(p.0.iter().any(|p| p.key == "server.worker_threads"), "{p}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let s = load_str("[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n", &[]).unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.upstream.authority(), "contoso.ciamlogin.com");
        assert!(s.upstream.is_https());
        assert!(s.tls.is_none());
        assert_eq!(s.entra.v2, V2Mode::Block);
    }

    #[test]
    fn env_overrides_file() {
        let s = load_str(
            "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("OTPGATE__SERVER__LISTEN", "127.0.0.1:2"),
                ("OTPGATE__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.1"),
                ("OTPGATE__SERVER__MAX_IN_FLIGHT", "7"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.listen.port(), 2);
        assert_eq!(s.server.trusted_proxies.len(), 2);
        assert_eq!(s.server.max_in_flight, 7);
    }

    #[test]
    fn three_mistakes_are_all_named() {
        let err = load_str(
            "[server]\nlisten = \"localhost\"\nheader_read_timeout = \"ten\"\n[upstream]\nurl = \"ftp://x\"\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<_> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"server.listen"), "{err}");
        assert!(keys.contains(&"server.header_read_timeout"), "{err}");
        assert!(keys.contains(&"upstream.url"), "{err}");
    }

    #[test]
    fn every_problem_of_a_section_is_named_with_its_full_key_at_once() {
        let err = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [routes.sms]\nprovider = \"explode\"\nbudget = \"soon\"\nfail_mode = \"shut\"\n\
             [defense.destination]\ndefault = \"explode\"\nmonitor = \"yes\"\n\
             [defense.destination.countries]\nFR = \"explode\"\nGB = \"deny\"\n\
             [[defense.velocity]]\nname = \"a\"\nkey = \"ip\"\nwindow = \"1h\"\nlimit = 0\naction = \"deny\"\n\
             [[defense.velocity]]\nname = \"b\"\nkey = \"nowhere\"\nwindow = \"1h\"\nlimit = 1\naction = \"deny\"\n\
             [[defense.velocity]]\nname = \"c\"\nkey = \"ip\"\nwindow = \"1h\"\nlimit = 0\naction = \"deny\"\n",
            &[],
        )
        .unwrap_err();
        let find = |key: &str| {
            err.0
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.message.clone())
                .unwrap_or_else(|| panic!("no problem for {key} in:\n{err}"))
        };
        let provider = find("routes.sms.provider");
        assert!(
            provider.contains("explode") && provider.contains("human"),
            "{provider}"
        );
        assert!(find("routes.sms.fail_mode").contains("shut"));
        let budget = find("routes.sms.budget");
        assert!(
            budget.contains("\"soon\"") && budget.contains("300ms"),
            "{budget}"
        );
        assert!(find("defense.destination.default").contains("explode"));
        assert!(find("defense.destination.monitor").contains("\"yes\""));
        let country = find("defense.destination.countries.FR");
        assert!(
            country.contains("explode") && country.contains("step_up"),
            "{country}"
        );
        assert!(find("defense.velocity[1].key").contains("nowhere"));
        // Found by validation of what was read, and named as written despite rule 1's gap.
        assert!(find("defense.velocity[0].limit").contains("at least 1"));
        assert!(find("defense.velocity[2].limit").contains("at least 1"));
        assert_eq!(err.0.len(), 9, "{err}");
    }

    #[test]
    fn every_list_key_takes_a_comma_separated_environment_value() {
        let s = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n",
            &[
                (
                    "OTPGATE__DEFENSE__DESTINATION__DENY_PREFIXES",
                    "+870,+44909",
                ),
                (
                    "OTPGATE__SERVER__TRUSTED_PROXIES",
                    "10.0.0.0/8, 192.168.1.1",
                ),
                ("OTPGATE__SERVER__HOSTS", "login.example.com"),
                (
                    "OTPGATE__CORS__ALLOWED_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                ("OTPGATE__STEPUP__KEY", "00112233445566778899aabbccddeeff"),
                ("OTPGATE__POLICY__MONITOR", "true"),
                ("OTPGATE__SERVER__MAX_IN_FLIGHT", "64"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.trusted_proxies.len(), 2);
        assert_eq!(s.server.hosts, ["login.example.com"]);
        assert!(s.policy.monitor);
        assert_eq!(s.server.max_in_flight, 64);
        assert!(!s.stepup.random_key);
        let premium = s.destination.check("+870772123456");
        assert_eq!(premium.action, crate::defense::DestinationAction::Deny);
        let reasons = s.destination.check("+449090123456").reasons.join(",");
        assert!(reasons.contains("+44909"), "{reasons}");
    }

    #[test]
    fn example_placeholders_are_not_secrets() {
        let err = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [stepup]\nkey = \"REPLACE-ME-with-the-output-of-openssl-rand-hex-32\"\n\
             [store]\nkey_secret = \"replace-me\"\n",
            &[("OTPGATE__AUDIT__HMAC_KEY", "REPLACE-ME")],
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["stepup.key", "store.key_secret", "audit.hmac_key"],
            "{err}"
        );
    }

    #[test]
    fn a_certificate_and_a_key_that_do_not_belong_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let one = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["b.example".into()]).unwrap();
        let cert = write("cert.pem", one.cert.pem());
        let own_key = write("own.pem", one.signing_key.serialize_pem());
        let other_key = write("other.pem", two.signing_key.serialize_pem());
        let toml = |key: &Path| {
            format!(
                "[upstream]\nurl = \"http://127.0.0.1:1\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                key.display()
            )
        };
        assert!(load_str(&toml(&own_key), &[]).is_ok());
        let err = load_str(&toml(&other_key), &[]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].key, "tls");
    }

    #[test]
    fn the_printed_config_hides_url_passwords_and_shows_the_rules_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[store.redis]\nurl = \"redis://otpgate:hunter2@cache:6379\"\n",
        )
        .unwrap();
        let (raw, _) = load_with_env(Some(&path), Vec::new()).unwrap();
        let printed = effective_json(&raw);
        let text = printed.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(
            printed["store"]["redis"]["url"],
            "redis://otpgate:***@cache:6379"
        );
        let names: Vec<&str> = printed["defense"]["velocity"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"sms-per-flow") && names.contains(&"email-per-user"));
    }

    #[test]
    fn unknown_keys_and_sections_are_problems() {
        let err = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\nurll = \"x\"\n[servr]\nlisten = \"1\"\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("urll"), "{text}");
        assert!(text.contains("servr"), "{text}");
    }

    #[test]
    fn tls_needs_both_files() {
        let err = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[tls]\ncert_file = \"/nonexistent.pem\"\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("tls.key_file"), "{text}");
        assert!(text.contains("tls.cert_file: cannot read"), "{text}");
    }

    #[test]
    fn upstream_url_with_path_is_refused() {
        let err = load_str("[upstream]\nurl = \"https://h/tenant\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("upstream.url"));
    }

    #[test]
    fn secrets_come_inline_or_from_files_but_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "s3cret-s3cret-s3cret-s3cret-s3cret\n").unwrap();
        let s = load_str(
            &format!(
                "[upstream]\nurl = \"http://127.0.0.1:1\"\n[stepup]\nkey_file = \"{}\"\n",
                f.display()
            ),
            &[],
        )
        .unwrap();
        assert!(!s.stepup.random_key);
        assert!(!format!("{:?}", s.stepup.pow).contains("s3cret"));
        let err = load_str(
            &format!(
                "[upstream]\nurl = \"http://127.0.0.1:1\"\n[stepup]\nkey = \"x\"\nkey_file = \"{}\"\n",
                f.display()
            ),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let err = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[store.redis]\npassword_file = \"/nonexistent\"\n",
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("store.redis.password_file: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn the_store_key_secret_keys_store_hashes_and_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("store-key");
        std::fs::write(&f, "store-key-s3cret\n").unwrap();
        let redis = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[store]\nbackend = \"redis\"\n";
        let keyed = load_str(
            &format!("{redis}key_secret_file = \"{}\"\n", f.display()),
            &[],
        )
        .unwrap();
        assert_eq!(keyed.store.key_secret.expose(), "store-key-s3cret");
        let store_warnings = |s: &Settings| {
            s.warnings()
                .into_iter()
                .map(|w| w.key)
                .filter(|k| k.starts_with("store."))
                .collect::<Vec<_>>()
        };
        assert!(store_warnings(&keyed).is_empty());
        let debug = format!("{keyed:?} {:?}", keyed.store.key_hasher());
        assert!(!debug.contains("s3cret"), "{debug}");
        let phone = "+447912345678";
        let hashed = keyed.store.key_hasher().hash(phone);
        assert_eq!(
            hashed,
            crate::store::KeyHasher::keyed(b"store-key-s3cret").hash(phone)
        );

        let unkeyed = load_str(redis, &[]).unwrap();
        assert_eq!(store_warnings(&unkeyed), ["store.key_secret"]);
        assert!(!unkeyed.store.key_hasher().is_keyed());
        let memory = load_str("[upstream]\nurl = \"http://127.0.0.1:1\"\n", &[]).unwrap();
        assert!(store_warnings(&memory).is_empty());
        assert!(
            memory.store.key_hasher().is_keyed(),
            "a random key per process"
        );
    }

    #[test]
    fn a_route_names_its_provider_problems() {
        let err = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[routes.sms]\nprovider = \"human\"\nbudget = \"soon\"\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("routes.sms.budget"), "{text}");
        assert!(text.contains("providers.human.app_id"), "{text}");
        assert!(text.contains("providers.human.auth_token"), "{text}");
    }
}
