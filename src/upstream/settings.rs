//! `[upstream]`: the Entra host otpgate protects, as configured and as the client uses it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::Checker;

/// `[upstream]`: the Entra host otpgate protects.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL: `https://{tenant}.ciamlogin.com`, a custom URL domain, or a local emulator.
    pub url: String,
    /// Extra PEM CA certificates trusted for the upstream, besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Time allowed to open a connection to the upstream.
    #[serde(with = "crate::problem::duration")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    #[serde(with = "crate::problem::duration")]
    pub response_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(with = "crate::problem::duration")]
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections kept to the upstream.
    pub pool_max_idle: usize,
}

impl UpstreamConfig {
    /// The upstream as configured, or `None` with the problems recorded.
    pub(crate) fn build(&self, check: &mut Checker) -> Option<UpstreamSettings> {
        if let Some(ca) = &self.ca_file {
            check.readable_file("upstream.ca_file", ca);
        }
        let url = if self.url.is_empty() {
            check.problem(
                "upstream.url",
                "required, e.g. https://contoso.ciamlogin.com",
            );
            None
        } else {
            check.parse("upstream.url", &self.url, parse_upstream_url)
        };
        Some(UpstreamSettings {
            url: url?,
            ca_file: self.ca_file.clone(),
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle: self.pool_max_idle,
        })
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(15),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 256,
        }
    }
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
    /// `host[:port]` as it goes into the `Host` header.
    #[cfg(test)]
    pub(crate) fn authority(&self) -> &str {
        self.url.authority().map(|a| a.as_str()).unwrap_or_default()
    }
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
