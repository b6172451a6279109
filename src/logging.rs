//! `[log]`: the process's logs (on stdout), as configured, and setting them up.

use serde::{Deserialize, Serialize};

use crate::problem::Checker;

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

impl LogConfig {
    /// The config, once its filter is one tracing reads.
    pub(crate) fn build(&self, check: &mut Checker) -> Option<LogConfig> {
        match tracing_subscriber::EnvFilter::try_new(&self.level) {
            Ok(_) => Some(self.clone()),
            Err(e) => {
                check.problem("log.level", e.to_string());
                None
            }
        }
    }
}

/// Set up logging per `[log]`. Safe to call once per process.
pub(crate) fn init(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in a file or a pipe are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
