//! Loading: the TOML file over the defaults, the `OTPGATE__*` environment, `<key>_file`
//! secrets and placeholders, then every section built ([`Settings::from_raw`]).

use std::path::Path;

use super::source;
use super::{RawConfig, Settings};
use crate::problem::{Checker, Problem, Problems};

/// Load a config file (or only defaults when `path` is `None`) with env overrides, and
/// validate it. Every problem found is returned at once.
pub fn load(path: Option<&Path>) -> Result<(RawConfig, Settings), Problems> {
    load_with_env(path, std::env::vars())
}

/// The effective configuration as `check-config --print` shows it: every section with its
/// defaults filled in, the velocity rules in force (the built-in ones when none are
/// configured), secrets as `***` (passwords inside URLs included), and `providers` named
/// but not shown (its settings hold tokens and secrets in plain fields).
pub(crate) fn effective_json(raw: &RawConfig) -> serde_json::Value {
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
pub(crate) const PROVIDERS_NOT_PRINTED: &str = "<configured; not printed: holds secrets>";

/// Keys whose value is a secret: each may instead be given as `<key>_file`, a path whose
/// contents (without the trailing newline) become the value.
pub(crate) const SECRET_KEYS: &[&str] = &[
    "providers.human.auth_token",
    "providers.human.cookie_secrets",
    "providers.prove.client_secret",
    "stepup.key",
    "store.key_secret",
    "store.redis.password",
    "store.redis.sentinel.password",
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
pub(crate) fn load_toml(
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
