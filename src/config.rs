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

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

/// One problem, with the dotted key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems while a raw config is turned into typed settings.
#[derive(Default)]
pub struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Parse `value` with `parse`, recording a problem for `key` when it fails.
    pub fn parse<T, E: fmt::Display>(
        &mut self,
        key: &str,
        value: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(key, format!("{e} (got {value:?})"));
                None
            }
        }
    }

    pub fn duration(&mut self, key: &str, value: &str) -> Option<Duration> {
        self.parse(key, value, humantime::parse_duration)
    }

    pub fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        self.parse(key, value, |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| "not a socket address such as 127.0.0.1:8080 or [::1]:8080")
        })
    }

    /// A file that must exist and be readable now.
    pub fn readable_file(&mut self, key: &str, path: &Path) {
        if let Err(e) = std::fs::metadata(path) {
            self.problem(key, format!("cannot read {}: {e}", path.display()));
        }
    }

    pub fn finish(self) -> Result<(), Problems> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(self.problems))
        }
    }
}

/// A secret value: redacted in `Debug` and when the effective config is printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

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
}

impl RawConfig {
    /// Deserialize one top-level section from `value`. Each section is read on its own so a
    /// mistake in one does not hide mistakes in another.
    fn set_section(&mut self, name: &str, value: serde_json::Value) -> Result<(), String> {
        fn read<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
            serde_json::from_value(v).map_err(|e| e.to_string())
        }
        match name {
            "server" => self.server = read(value)?,
            "tls" => self.tls = read(value)?,
            "upstream" => self.upstream = read(value)?,
            "admin" => self.admin = read(value)?,
            "log" => self.log = read(value)?,
            "entra" => self.entra = read(value)?,
            "policy" => self.policy = read(value)?,
            "routes" => self.routes = read(value)?,
            "providers" => self.providers = read(value)?,
            "stepup" => self.stepup = read(value)?,
            "store" => self.store = read(value)?,
            "audit" => self.audit = read(value)?,
            "cors" => self.cors = read(value)?,
            "defense" => self.defense = read(value)?,
            _ => return Err("unknown section".into()),
        }
        Ok(())
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
#[derive(Clone, Default, Deserialize)]
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
    /// `stdout`, `file` or `off`.
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
    /// `redis://host:6379/0`, or `rediss://` for TLS.
    pub url: String,
    /// AUTH password (secret; or `password_file`).
    pub password: Secret,
    /// Prefix of every key otpgate writes.
    pub key_prefix: String,
    /// Longest one store operation may take before the fallback answers.
    pub timeout: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            password: Secret::default(),
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
/// defaults filled in, secrets as `***`, and `providers` named but not shown (its settings
/// hold tokens and secrets in plain fields).
pub fn effective_json(raw: &RawConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(raw).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "providers".into(),
            serde_json::Value::String(PROVIDERS_NOT_PRINTED.into()),
        );
    }
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
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("OTPGATE__"))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("OTPGATE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("server.hosts")
            .with_list_parse_key("server.trusted_proxies")
            .with_list_parse_key("cors.allowed_origins")
            .with_list_parse_key("cors.allow_headers")
            .with_list_parse_key("providers.human.cookie_secrets")
            .source(Some(env)),
    );
    let root = match builder
        .build()
        .and_then(|c| c.try_deserialize::<serde_json::Value>())
    {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => serde_json::Map::new(),
        Err(e) => {
            let key = path.map(|p| p.display().to_string()).unwrap_or_default();
            check.problem(&key, e.to_string());
            return Err(Problems(check.problems));
        }
    };
    let mut root = serde_json::Value::Object(root);
    resolve_secret_files(&mut root, "", &mut check);

    let mut raw = RawConfig::default();
    if let serde_json::Value::Object(map) = &root {
        for (name, value) in map {
            if let Err(e) = raw.set_section(name, value.clone()) {
                check.problem(name, e);
            }
        }
    }
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
    pub redis_password: Secret,
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
        if self.store.backend == StoreBackend::Redis && self.store.key_secret.is_empty() {
            warnings.push(Problem {
                key: "store.key_secret".into(),
                message: "empty with the redis backend: store keys hold plain SHA-256 hashes of \
                          phone numbers and IPs, which anyone who can read Redis can reverse by \
                          hashing every number; set one secret on every replica"
                    .into(),
            });
        }
        warnings
    }

    /// Type and cross-check `raw`; returns `None` (with problems recorded) when invalid.
    pub fn from_raw(raw: &RawConfig, check: &mut Checker) -> Option<Settings> {
        let s = &raw.server;
        let listen = check.addr("server.listen", &s.listen);
        let mut trusted_proxies = Vec::new();
        for (i, cidr) in s.trusted_proxies.iter().enumerate() {
            let key = format!("server.trusted_proxies[{i}]");
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
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert_file: cert.clone(),
                key_file: key.clone(),
            }),
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
        if so.max_entries < 1000 {
            check.problem("store.max_entries", "must be at least 1000");
        }

        let au = &raw.audit;
        let audit_sink = match (au.output, &au.path) {
            (AuditOutput::Off, _) => crate::audit::AuditSink::Off,
            (AuditOutput::Stdout, _) => crate::audit::AuditSink::Stdout,
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
            let key = format!("cors.allowed_origins[{i}]");
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
                check.problem(&format!("cors.allow_headers[{i}]"), "not a header name");
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
                    check.problem(&format!("defense.velocity{}", p.key), p.message);
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
                redis_password: so.redis.password.clone(),
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
        assert!(keyed.warnings().is_empty());
        let debug = format!("{keyed:?} {:?}", keyed.store.key_hasher());
        assert!(!debug.contains("s3cret"), "{debug}");
        let phone = "+447912345678";
        let hashed = keyed.store.key_hasher().hash(phone);
        assert_eq!(
            hashed,
            crate::store::KeyHasher::keyed(b"store-key-s3cret").hash(phone)
        );

        let unkeyed = load_str(redis, &[]).unwrap();
        let keys: Vec<String> = unkeyed.warnings().into_iter().map(|w| w.key).collect();
        assert_eq!(keys, ["store.key_secret"]);
        assert!(!unkeyed.store.key_hasher().is_keyed());
        let memory = load_str("[upstream]\nurl = \"http://127.0.0.1:1\"\n", &[]).unwrap();
        assert!(memory.warnings().is_empty());
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
