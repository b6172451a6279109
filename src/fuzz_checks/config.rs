//! `config_toml`: loading a TOML configuration, and `check-config --print`.

use serde::Deserialize as _;
use serde_json::Value;

use super::ensure;
use crate::config::{effective_json, load_toml, RawConfig, Secret, PROVIDERS_NOT_PRINTED};

/// The input is a configuration file, loaded with no environment overrides.
///
/// * A refused configuration names at least one problem.
/// * The print shows no secret: it is the same whatever the secrets' values, and names
///   `providers` without showing it.
/// * Printed, written back as TOML (with the secrets and `providers` the print withholds)
///   and loaded again, a configuration is still valid, prints the same, and gives the same
///   settings.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw, settings) = match load_toml(text, std::iter::empty()) {
        Ok(loaded) => loaded,
        Err(problems) => {
            ensure!(!problems.0.is_empty(), "refused without a problem");
            return;
        }
    };

    let printed = effective_json(&raw);
    ensure!(
        printed.get("providers") == Some(&Value::String(PROVIDERS_NOT_PRINTED.into())),
        "the print shows providers"
    );
    let mut other = raw.clone();
    for secret in secrets(&mut other) {
        if !secret.is_empty() {
            *secret = Secret::new(format!("{}-other", secret.expose()));
        }
    }
    ensure!(
        effective_json(&other) == printed,
        "the print depends on a secret's value"
    );

    let Some(rewritten) = rewrite(text, &raw, &printed) else {
        return;
    };
    let (again, settings_again) = match load_toml(&rewritten, std::iter::empty()) {
        Ok(loaded) => loaded,
        Err(problems) => super::violated(format_args!(
            "the printed configuration does not load again: {problems}\n{rewritten}"
        )),
    };
    let reprinted = effective_json(&again);
    ensure!(
        reprinted == printed,
        "printed, loaded again and printed, the configuration changes:\n{printed:#}\n{reprinted:#}"
    );
    let (before, after) = (format!("{settings:#?}"), format!("{settings_again:#?}"));
    ensure!(
        before == after,
        "printed and loaded again, the settings change:\n{before}\n{after}"
    );
}

/// The secrets of the printed sections (`providers` is not printed).
fn secrets(raw: &mut RawConfig) -> [&mut Secret; 3] {
    [
        &mut raw.stepup.key,
        &mut raw.store.redis.password,
        &mut raw.audit.hmac_key,
    ]
}

/// The print as a TOML file: no `null` (absent in TOML), the secrets' values, and
/// `providers` as the loader read it from the original. `None` when the loader cannot read
/// the original as a table.
fn rewrite(text: &str, raw: &RawConfig, printed: &Value) -> Option<String> {
    let read = ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .ok()?;
    let mut doc = printed.clone();
    let map = doc.as_object_mut()?;
    match read.get("providers") {
        Some(providers) => map.insert("providers".into(), providers.clone()),
        None => map.remove("providers"),
    };
    for (path, secret) in [
        (&["stepup", "key"][..], &raw.stepup.key),
        (
            &["store", "redis", "password"][..],
            &raw.store.redis.password,
        ),
        (&["audit", "hmac_key"][..], &raw.audit.hmac_key),
    ] {
        let mut at = &mut doc;
        for key in path {
            let Some(next) = at.get_mut(*key) else {
                super::violated(format_args!("the print has no {}", path.join(".")));
            };
            at = next;
        }
        *at = Value::String(secret.expose().to_owned());
    }
    drop_nulls(&mut doc);
    let table = match toml::Table::deserialize(doc) {
        Ok(table) => table,
        Err(e) => super::violated(format_args!("the print is not expressible in TOML: {e}")),
    };
    match toml::to_string(&table) {
        Ok(text) => Some(text),
        Err(e) => super::violated(format_args!("the print cannot be written as TOML: {e}")),
    }
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reload half of the check runs on real configurations, secrets included.
    #[test]
    fn a_printed_configuration_is_written_back_with_its_secrets() {
        let text =
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[store.redis]\npassword = \"hunter2\"\n\
                    [routes.sms]\nprovider = \"mock\"\n[providers.mock]\n";
        let (raw, _) = load_toml(text, std::iter::empty()).expect("loads");
        let printed = effective_json(&raw);
        assert!(!printed.to_string().contains("hunter2"));
        let rewritten = rewrite(text, &raw, &printed).expect("a TOML table");
        assert!(rewritten.contains("hunter2"), "{rewritten}");
        assert!(rewritten.contains("[providers.mock]"), "{rewritten}");
        assert!(load_toml(&rewritten, std::iter::empty()).is_ok());
        config_toml(include_bytes!("../../config/otpgate.toml"));
    }
}
