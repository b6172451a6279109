//! How configuration values are read: environment overrides typed by the schema, and a
//! reader that reports every field serde refuses, with its full key, instead of the first.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use crate::problem::{Checker, Dropped};

/// Most problems reported for one section before the reader gives up on it.
const MAX_PROBLEMS_PER_SECTION: usize = 100;

/// Deserialize `value` as `T`, reporting every value serde refuses under `prefix` (one
/// problem each, keyed `prefix.field`, `prefix.list[2]`, `prefix.map.KEY`, with serde's
/// message, which names the value given and what is accepted) and dropping it so the
/// default applies and the rest is still read. `None` when the value cannot be read at
/// all (the whole section has the wrong type).
pub(super) fn read_lenient<T: DeserializeOwned>(
    prefix: &str,
    mut value: Value,
    dropped: &mut Dropped,
    check: &mut Checker,
) -> Option<T> {
    let mut reported: Vec<String> = Vec::new();
    for _ in 0..MAX_PROBLEMS_PER_SECTION {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(read) => return Some(read),
            Err(e) => e,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let key = written_key(prefix, &segments, dropped);
        let message = error.inner().to_string();
        // "missing field" after a field of the same element was dropped is that problem
        // again, not a new one.
        let echo = message.starts_with("missing field")
            && reported.iter().any(|r| r.starts_with(&format!("{key}.")));
        if !echo {
            check.problem(&key, message);
            reported.push(key);
        }
        if !drop_at(&mut value, &segments, prefix, dropped) {
            return None;
        }
    }
    check.problem(prefix, "too many problems; fix the ones above first");
    None
}

/// The dotted key of `segments` under `prefix`, array indices as written.
fn written_key(prefix: &str, segments: &[Segment], dropped: &Dropped) -> String {
    let mut key = prefix.to_owned();
    for segment in segments {
        match segment {
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Segment::Seq { index } => {
                let _ = write!(key, "[{}]", dropped.written_index(&key, *index));
            }
            Segment::Unknown => {}
        }
    }
    key
}

/// Remove the value `segments` point at, so the next attempt reads past it. `false` when
/// there is nothing to remove (the error is about `value` itself).
fn drop_at(value: &mut Value, segments: &[Segment], prefix: &str, dropped: &mut Dropped) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let parent_key = written_key(prefix, parents, dropped);
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(child) => child,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(items)) if *index < items.len() => {
            let written = dropped.written_index(&parent_key, *index);
            items.remove(*index);
            dropped.record(&parent_key, written);
            true
        }
        _ => false,
    }
}

/// Apply `OTPGATE__SECTION__KEY=value` overrides to `root`. Each value is typed by what the
/// schema has at that key (`shape`: the defaults with the file laid over them): a list is
/// comma-separated (`OTPGATE__SERVER__TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16`), a
/// boolean `true` or `false`, a number a number; everything else, secrets among them, is
/// taken as the exact string (so `+870` and `0123` stay what they are).
pub(super) fn apply_env(
    root: &mut Value,
    shape: &Value,
    env: impl IntoIterator<Item = (String, String)>,
    check: &mut Checker,
) {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("OTPGATE__"))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name["OTPGATE__".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            check.problem(&name, "not a key: use OTPGATE__SECTION__KEY");
            continue;
        }
        let key = path.join(".");
        let typed = match typed_value(at_path(shape, &path), &raw) {
            Ok(v) => v,
            Err(expected) => {
                check.problem(&key, format!("{name}: expected {expected} (got {raw:?})"));
                continue;
            }
        };
        if !set_path(root, &path, typed) {
            check.problem(
                &key,
                format!(
                    "{name}: {} is not a table",
                    path[..path.len() - 1].join(".")
                ),
            );
        }
    }
}

fn at_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |node, key| node.as_object()?.get(key))
}

/// `raw` as the type `shape` has; `Err` names what was expected.
fn typed_value(shape: Option<&Value>, raw: &str) -> Result<Value, &'static str> {
    let scalar = |element: Option<&Value>, text: &str| -> Result<Value, &'static str> {
        match element {
            Some(Value::Bool(_)) => match text.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("true or false"),
            },
            Some(Value::Number(_)) => serde_json::from_str::<serde_json::Number>(text.trim())
                .map(Value::Number)
                .map_err(|_| "a number"),
            Some(Value::Object(_)) => Err("keys of its own (OTPGATE__SECTION__TABLE__KEY)"),
            _ => Ok(Value::String(text.to_owned())),
        }
    };
    match shape {
        Some(Value::Array(items)) => raw
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| scalar(items.first(), item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => scalar(other, raw),
    }
}

/// Set `path` in `root` to `value`, making tables on the way. `false` when a value on the
/// way is not a table.
fn set_path(root: &mut Value, path: &[String], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = root;
    for key in parents {
        let Value::Object(map) = node else {
            return false;
        };
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            true
        }
        _ => false,
    }
}

/// `base` with `over` laid on top, table by table.
pub(super) fn merged(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (key, value) in o {
                let next = match out.get(key) {
                    Some(existing) => merged(existing, value),
                    None => value.clone(),
                };
                out.insert(key.clone(), next);
            }
            Value::Object(out)
        }
        (_, over) => over.clone(),
    }
}

/// Every string in `value` that is a URL with a password (`redis://user:pw@host`) with the
/// password replaced by `***`; a bare `scheme://secret@host` loses the whole userinfo.
pub(super) fn redact_url_secrets(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(redacted) = redact_url(text) {
                *text = redacted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_url_secrets),
        Value::Object(map) => map.values_mut().for_each(redact_url_secrets),
        _ => {}
    }
}

fn redact_url(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    Some(format!(
        "{scheme}://{user}@{host}{}",
        &rest[authority_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        limit: u32,
        mode: Mode,
        names: Vec<String>,
        by: BTreeMap<String, Mode>,
        rules: Vec<Rule>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Deny,
        StepUp,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        name: String,
        limit: u32,
    }

    #[test]
    fn every_refused_value_is_named_once_and_the_rest_is_read() {
        let value = serde_json::json!({
            "limit": "ten",
            "mode": "explode",
            "names": ["a", 3, "c", true],
            "by": {"FR": "explode", "GB": "step_up"},
            "rules": [{"name": "x", "limit": 1}, {"name": "y", "limit": "z"}, {"name": "w", "limit": 2}, {"limit": 3}],
            "extra": 1,
        });
        let mut check = Checker::default();
        let mut dropped = Dropped::default();
        let read: Section = read_lenient("s", value, &mut dropped, &mut check).unwrap();
        let mut keys: Vec<&str> = check.problems().iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "s.by.FR",
                "s.extra",
                "s.limit",
                "s.mode",
                "s.names[1]",
                "s.names[3]",
                "s.rules[1].limit",
                "s.rules[3]",
            ]
        );
        let message = |key: &str| {
            check
                .problems()
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.message.clone())
                .unwrap_or_default()
        };
        let limit = message("s.limit");
        assert!(
            limit.contains("\"ten\"") && limit.contains("u32"),
            "{limit}"
        );
        let mode = message("s.mode");
        assert!(
            mode.contains("explode") && mode.contains("step_up"),
            "{mode}"
        );
        assert!(message("s.rules[3]").contains("missing field `name`"));
        assert!(message("s.extra").contains("unknown field `extra`"));
        assert_eq!(read.names, ["a", "c"]);
        assert_eq!(read.by.len(), 1);
        assert_eq!(
            read.rules,
            [
                Rule {
                    name: "x".into(),
                    limit: 1
                },
                Rule {
                    name: "w".into(),
                    limit: 2
                },
            ]
        );
        // Later problems about the survivors name them as written.
        assert_eq!(dropped.written_index("s.rules", 0), 0);
        assert_eq!(dropped.written_index("s.rules", 1), 2);
        assert_eq!(dropped.written_index("s.names", 1), 2);
        assert_eq!(dropped.written_index("other", 5), 5);
    }

    #[test]
    fn a_section_of_the_wrong_type_is_one_problem() {
        let mut check = Checker::default();
        let read: Option<Section> = read_lenient(
            "s",
            serde_json::json!("x"),
            &mut Dropped::default(),
            &mut check,
        );
        assert_eq!(read, None);
        assert_eq!(check.problems().len(), 1);
        assert_eq!(check.problems()[0].key, "s");
    }

    #[test]
    fn environment_values_take_the_type_of_their_key() {
        let shape = serde_json::json!({
            "defense": {"destination": {"deny_prefixes": ["+870"], "monitor": false}},
            "server": {"max_in_flight": 4096, "hosts": [], "listen": ""},
            "stepup": {"key": ""},
            "providers": {"prove": {"deny_codes": [9131]}},
        });
        let mut root = serde_json::json!({"server": {"listen": "0.0.0.0:8080"}});
        let env = [
            (
                "OTPGATE__DEFENSE__DESTINATION__DENY_PREFIXES",
                "+870, +44909,,",
            ),
            ("OTPGATE__DEFENSE__DESTINATION__MONITOR", "TRUE"),
            ("OTPGATE__SERVER__MAX_IN_FLIGHT", "12"),
            ("OTPGATE__SERVER__HOSTS", "a.example,b.example"),
            ("OTPGATE__STEPUP__KEY", "0123456789"),
            ("OTPGATE__PROVIDERS__PROVE__DENY_CODES", "9131,9132"),
            ("OTPGATE__NEW__THING", "x"),
            ("UNRELATED", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut check = Checker::default();
        apply_env(&mut root, &shape, env, &mut check);
        assert!(check.problems().is_empty(), "{:?}", check.problems());
        assert_eq!(
            root,
            serde_json::json!({
                "defense": {"destination": {"deny_prefixes": ["+870", "+44909"], "monitor": true}},
                "server": {"listen": "0.0.0.0:8080", "max_in_flight": 12, "hosts": ["a.example", "b.example"]},
                "stepup": {"key": "0123456789"},
                "providers": {"prove": {"deny_codes": [9131, 9132]}},
                "new": {"thing": "x"},
            })
        );
        let bad = [
            ("OTPGATE__DEFENSE__DESTINATION__MONITOR", "yes"),
            ("OTPGATE__SERVER__MAX_IN_FLIGHT", "many"),
            ("OTPGATE__SERVER", "x"),
            ("OTPGATE__SERVER____LISTEN", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut check = Checker::default();
        apply_env(&mut root, &shape, bad, &mut check);
        let keys: Vec<&str> = check.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "defense.destination.monitor",
                "server",
                "server.max_in_flight",
                "OTPGATE__SERVER____LISTEN",
            ]
        );
        assert!(check.problems()[0].message.contains("true or false"));
        assert!(check.problems()[2]
            .message
            .contains("OTPGATE__SERVER__MAX_IN_FLIGHT"));
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        let mut value = serde_json::json!({
            "a": "redis://otpgate:hunter2@cache.example:6380/0",
            "b": ["rediss://:hunter2@cache.example", "redis://hunter2@h"],
            "c": "https://contoso.ciamlogin.com/path?x=a@b",
            "d": "not a url: user:pw@host",
        });
        redact_url_secrets(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "a": "redis://otpgate:***@cache.example:6380/0",
                "b": ["rediss://:***@cache.example", "redis://***@h"],
                "c": "https://contoso.ciamlogin.com/path?x=a@b",
                "d": "not a url: user:pw@host",
            })
        );
        assert!(!value.to_string().contains("hunter2"));
    }
}
