//! Typed configuration: a TOML file layered over built-in defaults and overridden by
//! `OTPGATE__SECTION__KEY` environment variables, parsed into strong types, and validated
//! with every problem reported at once, each naming its key.
//!
//! `config/otpgate.toml` documents every key with its default; it is the config reference.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod load;
mod source;

pub(crate) use load::{effective_json, load_toml, PROVIDERS_NOT_PRINTED};
pub use load::{load, load_with_env};

pub use crate::problem::Secret;
pub(crate) use crate::problem::{Checker, Dropped, Problem};
// Each section's types live with the subsystem that uses them; these are named here too,
// as the configuration's vocabulary.
pub(crate) use crate::entra::settings::{DenyStyle, UnknownChannel, V2Mode};
pub(crate) use crate::logging::LogConfig;
pub(crate) use crate::risk::routes::{ProviderChoice, Route};
pub(crate) use crate::store::settings::StoreBackend;

use crate::audit::{AuditConfig, AuditSink};
use crate::cors::{Cors, CorsConfig};
use crate::defense::{DefenseConfig, DestinationPolicy, VelocityRules};
use crate::entra::settings::{EntraConfig, EntraSettings};
use crate::policy::PolicyConfig;
use crate::risk::routes::{ProvidersConfig, RouteSettings, RoutesConfig};
use crate::server::settings::{AdminConfig, ServerConfig, ServerSettings, TlsConfig, TlsSettings};
use crate::stepup::{PowConfig, StepUpSettings};
use crate::store::settings::{StoreConfig, StoreSettings};
use crate::traces::{TracesConfig, TracesSettings};
use crate::upstream::{UpstreamConfig, UpstreamSettings};

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
    pub stepup: PowConfig,
    pub store: StoreConfig,
    pub audit: AuditConfig,
    pub cors: CorsConfig,
    pub defense: DefenseConfig,
    /// `[traces]`: OpenTelemetry traces of gated requests (OTLP/HTTP), off by default.
    pub traces: TracesConfig,
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
                "traces" => read(&mut raw.traces, &name, value, d, check),
                _ => check.problem(
                    &name,
                    "unknown section (expected server, tls, upstream, admin, log, entra, policy, \
                     routes, providers, stepup, store, audit, cors, defense or traces)",
                ),
            }
        }
        raw.dropped = dropped;
        raw
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

/// Validated, typed settings: what `build()` steps turn into runtime objects.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: Option<TlsSettings>,
    pub upstream: UpstreamSettings,
    pub admin_listen: SocketAddr,
    /// `[admin.api]`, validated (tokens read from their files).
    pub admin_api: crate::admin_api::settings::AdminApi,
    pub log: LogConfig,
    pub entra: EntraSettings,
    pub policy: PolicyConfig,
    pub routes: RouteSettings,
    pub providers: ProvidersConfig,
    pub stepup: StepUpSettings,
    pub store: StoreSettings,
    pub audit_sink: AuditSink,
    pub audit_key: Secret,
    pub cors: Cors,
    pub destination: DestinationPolicy,
    pub velocity: VelocityRules,
    pub adaptive: crate::defense::Adaptive,
    /// `[defense.lists]`, validated.
    pub lists: crate::defense::lists::ListsConfig,
    /// `[traces]`, validated.
    pub traces: TracesSettings,
}

impl Settings {
    /// What is valid but unsafe to run with: `check-config` prints these, and the server
    /// logs them at start.
    pub(crate) fn warnings(&self) -> Vec<Problem> {
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
        if self.audit_key.is_empty() && self.audit_sink != AuditSink::Off {
            warn(
                "audit.hmac_key",
                "empty: each process hashes phone numbers under a key of its own, so audit \
                 lines of one number do not correlate across replicas or restarts; set one \
                 key on every replica",
            );
        }
        warnings
    }

    /// Build every section of `raw`, each recording its problems; `None` when any had one.
    pub(crate) fn from_raw(raw: &RawConfig, check: &mut Checker) -> Option<Settings> {
        let server = raw.server.build(&raw.dropped, check);
        let admin_listen = raw.admin.build(server.as_ref().map(|s| s.listen), check);
        let admin_api = raw.admin.api.build(check);
        let tls = raw.tls.build(check);
        let upstream = raw.upstream.build(check);
        let log = raw.log.build(check);
        let entra = raw.entra.build(check);
        let routes = raw.routes.build(&raw.providers, check);
        let stepup = raw.stepup.build(check);
        let store = raw.store.build(check);
        let audit_sink = raw.audit.build(check);
        let cors = raw
            .cors
            .build(&raw.dropped, stepup.as_ref().map(|s| &s.header), check);
        let defense = raw.defense.build(&raw.dropped, check);
        let traces = raw.traces.build(check);
        let (destination, velocity, adaptive) = defense?;
        Some(Settings {
            server: server?,
            tls: tls?,
            upstream: upstream?,
            admin_listen: admin_listen?,
            admin_api: admin_api?,
            log: log?,
            entra: entra?,
            policy: raw.policy.clone(),
            routes: routes?,
            providers: raw.providers.clone(),
            stepup: stepup?,
            store: store?,
            audit_sink: audit_sink?,
            audit_key: raw.audit.hmac_key.clone(),
            cors,
            destination,
            velocity,
            adaptive,
            lists: raw.defense.lists.clone(),
            traces: traces?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::problem::Problems;

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
        assert_eq!(s.upstream.url.scheme_str(), Some("https"));
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
    fn a_reservation_waits_at_least_as_long_as_any_operation() {
        let url = "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n";
        let s = load_str(url, &[]).unwrap();
        assert_eq!(s.store.redis_timeout, Duration::from_millis(50));
        assert_eq!(s.store.redis_reserve_timeout, Duration::from_secs(1));
        // A configuration written before reserve_timeout existed keeps working.
        let s = load_str(&format!("{url}[store.redis]\ntimeout = \"2s\"\n"), &[]).unwrap();
        assert_eq!(s.store.redis_reserve_timeout, Duration::from_secs(2));
        let err = load_str(&format!("{url}[store.redis]\ntimeout = \"0s\"\n"), &[]).unwrap_err();
        let keys: Vec<_> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"store.redis.timeout"), "{err}");
    }

    #[test]
    fn sentinel_needs_its_name_and_nodes() {
        let url = "[upstream]\nurl = \"https://contoso.ciamlogin.com\"\n";
        let s = load_str(
            &format!(
                "{url}[store.redis.sentinel]\nmaster_name = \"m\"\nnodes = [\"10.0.0.1:26379\", \"[::1]:26380\"]\n"
            ),
            &[],
        )
        .unwrap();
        let sentinel = s.store.redis_sentinel.unwrap();
        assert_eq!(sentinel.nodes, ["10.0.0.1:26379", "[::1]:26380"]);
        assert!(load_str(url, &[]).unwrap().store.redis_sentinel.is_none());
        for (toml, key) in [
            ("master_name = \"m\"\n", "store.redis.sentinel.nodes"),
            (
                "master_name = \"m\"\nnodes = [\"10.0.0.1\"]\n",
                "store.redis.sentinel.nodes",
            ),
            (
                "nodes = [\"10.0.0.1:26379\"]\n",
                "store.redis.sentinel.master_name",
            ),
        ] {
            let err = load_str(&format!("{url}[store.redis.sentinel]\n{toml}"), &[]).unwrap_err();
            let keys: Vec<_> = err.0.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, [key], "{toml}: {err}");
        }
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
    fn front_door_ids_are_guids_in_their_one_spelling() {
        let ok = "6f1c2c55-3b7e-4d0c-9a55-0c8d3e2f1a47";
        let s = load_str(
            &format!(
                "[upstream]\nurl = \"http://127.0.0.1:1\"\n[server]\nfront_door_ids = [\"{}\"]\n",
                ok.to_uppercase()
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.server.front_door_ids,
            [uuid::Uuid::parse_str(ok).unwrap()]
        );
        let err = load_str(
            &format!(
                "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
                 [server]\nfront_door_ids = [\"{ok}\", \"my-profile\", \"{{{ok}}}\", \"{}\"]\n",
                ok.replace('-', "")
            ),
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.front_door_ids[1]",
                "server.front_door_ids[2]",
                "server.front_door_ids[3]"
            ],
            "{err}"
        );
        assert!(err.to_string().contains("GUID"), "{err}");
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
        let reasons: Vec<String> = s
            .destination
            .check("+449090123456")
            .reasons
            .iter()
            .map(ToString::to_string)
            .collect();
        let reasons = reasons.join(",");
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
    fn list_entries_and_admin_tokens_are_checked_with_their_keys() {
        let err = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [defense.lists.safe]\nnumbers = [\"+447700900123\", \"07700900123\"]\n\
             [defense.lists.block]\nnetworks = [\"10.0.0.0/40\"]\nclient_ids = [\"\"]\n\
             [admin.api]\nenabled = true\ntokens = [{ name = \"oncall\", token = \"short\" }]\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "defense.lists.safe.numbers[1]",
            "defense.lists.block.networks[0]",
            "defense.lists.block.client_ids[0]",
            "admin.api.tokens[0].token",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
        assert!(!text.contains("defense.lists.safe.numbers[0]"), "{text}");
        assert!(
            !text.contains("short"),
            "the token is never printed: {text}"
        );
        let ok = load_str(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [defense.lists.block]\nusers = [\"Ann@Contoso.com\"]\n\
             [admin.api]\nenabled = true\n\
             tokens = [{ name = \"oncall\", token = \"0123456789abcdef0123456789abcdef\" }]\n",
            &[],
        )
        .unwrap();
        assert!(ok.admin_api.enabled);
        assert_eq!(ok.lists.block.users, ["Ann@Contoso.com"]);
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
