//! The vocabulary of configuration problems and secrets, shared by every subsystem that
//! validates its own settings: a leaf, so those subsystems need nothing else of `config`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

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
    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Parse `value` with `parse`, recording a problem for `key` when it fails.
    pub(crate) fn parse<T, E: fmt::Display>(
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

    pub(crate) fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        self.parse(key, value, |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| "not a socket address such as 127.0.0.1:8080 or [::1]:8080")
        })
    }

    /// A file that must exist and be readable now.
    pub(crate) fn readable_file(&mut self, key: &str, path: &Path) {
        if let Err(e) = std::fs::metadata(path) {
            self.problem(key, format!("cannot read {}: {e}", path.display()));
        }
    }

    /// The problems recorded so far.
    pub(crate) fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub(crate) fn into_problems(self) -> Problems {
        Problems(self.problems)
    }

    pub(crate) fn finish(self) -> Result<(), Problems> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(self.problems))
        }
    }
}

/// Array elements the reader dropped, by the array's dotted key, as indices *as written*:
/// so problems found later (by validation of what was read) still name the element the
/// user wrote, not its place among the survivors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped(BTreeMap<String, Vec<usize>>);

impl Dropped {
    /// The index as written of the element now at `index` of the array at `key`.
    pub(crate) fn written_index(&self, key: &str, index: usize) -> usize {
        let mut at = index;
        for &gone in self.0.get(key).map(Vec::as_slice).unwrap_or_default() {
            if gone <= at {
                at += 1;
            }
        }
        at
    }

    /// The key of element `index` of the list at `key`, as the user wrote it.
    pub(crate) fn element_key(&self, key: &str, index: usize) -> String {
        format!("{key}[{}]", self.written_index(key, index))
    }

    /// Note that the element written at index `written` of the list at `key` was dropped.
    pub(crate) fn record(&mut self, key: &str, written: usize) {
        let gone = self.0.entry(key.to_owned()).or_default();
        let at = gone.partition_point(|&g| g < written);
        gone.insert(at, written);
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

/// The one way durations are written in configuration: `"300ms"`, `"15s"`, `"10m"`,
/// `"1h"` (humantime), for `#[serde(with = "crate::problem::duration")]`. A value that is
/// not one is refused naming the value and the accepted form.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) const EXPECTED: &str = "not a duration such as 300ms, 15s, 10m or 1h";

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map_err(|_| serde::de::Error::custom(format!("{EXPECTED} (got {text:?})")))
    }
}
