//! The vocabulary of configuration problems and secrets, shared by every subsystem that
//! validates its own settings: a leaf, so those subsystems need nothing else of `config`.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

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
        self.parse(key, value, |v| {
            humantime::parse_duration(v).map_err(|_| "not a duration such as 300ms, 15s, 10m or 1h")
        })
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

    /// The problems recorded so far.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn into_problems(self) -> Problems {
        Problems(self.problems)
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
