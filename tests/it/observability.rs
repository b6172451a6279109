//! The dashboard (`deploy/grafana/otpgate.json`) and the alert rules
//! (`deploy/prometheus/alerts.yaml`) against a real Prometheus (`$PROMETHEUS`, or
//! `prometheus` on the `PATH`, from Debian's `prometheus` package, which also brings
//! `promtool`).
//!
//! `promtool` checks the rules and runs their unit tests (`alerts.test.yaml`). Then a live
//! Prometheus scrapes a running otpgate under a short mixed load, and a provoked fault
//! shows each of its alerts firing: the HUMAN provider failing, Redis stopped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::entra::{start_with, Env};
use crate::fixtures::redis::RedisServer;
use crate::fixtures::risk::{human_toml, serve_human};
use otpgate::emulate::entra::{EntraConfig, UserSpec, DEMO_PASSWORD};
use otpgate::emulate::human::{Answer, HumanEmulatorConfig};

const RULES: &str = "deploy/prometheus/alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/alerts.test.yaml";
const DASHBOARD: &str = "deploy/grafana/otpgate.json";
/// Rounds of the mixed traffic at most, one registering account each.
const ROUNDS: u32 = 40;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(std::env::var("PROMTOOL").unwrap_or("promtool".into()))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); install Debian's prometheus"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every alert of the rules file, by name, with its expression: read off its lines (an
/// `expr:` inline, or a `|` block indented under it), which is all the file uses.
fn alerts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo(RULES)).unwrap();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            out.push((name.trim().to_owned(), String::new()));
        } else if let Some(expr) = trimmed.strip_prefix("expr: ") {
            let at = indent(line);
            let mut expr = expr.trim().to_owned();
            if expr == "|" {
                let mut block = Vec::new();
                while let Some(next) = lines.next_if(|l| l.trim().is_empty() || indent(l) > at) {
                    block.push(next.trim());
                }
                expr = block.join("\n");
            }
            out.last_mut().expect("expr: before any alert").1 = expr;
        }
    }
    assert_eq!(out.len(), 9, "{out:?}");
    assert!(out.iter().all(|(_, e)| !e.is_empty()), "{out:?}");
    out
}

/// Every query of the dashboard's panels: (panel title, expression), with Grafana's
/// `$__rate_interval` as the one minute this test's scrapes fill.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo(DASHBOARD)).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                expr.replace("$__rate_interval", "1m"),
            ));
        }
    }
    out
}

/// A real Prometheus scraping `target` every second and evaluating the rules every second,
/// with their `for:` durations cut to zero (the only change to them). Killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = std::fs::read_to_string(repo(RULES)).unwrap();
        let rules: String = rules
            .lines()
            .map(|l| match l.trim_start().starts_with("for: ") {
                true => format!("{}for: 0s", &l[..l.len() - l.trim_start().len()]),
                false => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("alerts.yaml"), rules).unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [alerts.yaml]\n\
                 scrape_configs:\n  - job_name: otpgate\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(std::env::var("PROMETHEUS").unwrap_or("prometheus".into()))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus ({e}); install Debian's prometheus"));
        let prometheus = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = crate::fixtures::client();
        let ready = format!("{}/-/ready", prometheus.base);
        crate::fixtures::eventually(Duration::from_secs(30), "prometheus ready", || async {
            client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        prometheus
    }

    /// The JSON answer of the HTTP API at `path` with `query`.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        crate::fixtures::client()
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An instant query's `data.result`, or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let r = self.api("/api/v1/query", &[("query", expr)]).await;
        match r["status"].as_str() {
            Some("success") => Ok(r["data"]["result"].as_array().cloned().unwrap_or_default()),
            _ => Err(format!("{} {}", r["errorType"], r["error"])),
        }
    }

    /// The names of the alerts firing now.
    async fn firing(&self) -> Vec<String> {
        let r = self.api("/api/v1/alerts", &[]).await;
        let mut names: Vec<String> = r["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    async fn until_firing(&self, alert: &str) {
        let what = format!("{alert} firing");
        crate::fixtures::eventually(Duration::from_secs(30), &what, || async {
            self.firing().await.iter().any(|a| a == alert)
        })
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One round of the mix: a pass-through GET, a GB registration whose code is entered, a
/// premium-rate number (denied) and a French number (stepped up by the destination
/// policy). Returns the statuses of the three sends.
async fn round(env: &Env, n: u32) -> [u16; 3] {
    let r = env
        .client
        .get(
            env.gw
                .url("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An account of its own: once its code is entered, it has a phone.
    let token = env
        .register_introspect(&format!("reg{n}@contoso.com"))
        .await
        .token();
    let sent = env.register_sms(&token, &format!("+4474001{n:05}")).await;
    let code = env
        .outbox()
        .last()
        .map(|m| m.code.clone())
        .unwrap_or_default();
    if sent.status == 200 {
        let entered = env
            .post(
                "/register/v1.0/continue",
                &[
                    ("continuation_token", &sent.token()),
                    ("grant_type", "oob"),
                    ("oob", &code),
                ],
            )
            .await;
        assert_eq!(entered.status, 200, "{}", entered.body);
    }
    let token = env
        .register_introspect("newphone@contoso.com")
        .await
        .token();
    let premium = env.register_sms(&token, "+449090123456").await;
    let token = env
        .register_introspect("newphone@contoso.com")
        .await
        .token();
    let french = env.register_sms(&token, &format!("+3361{n:07}")).await;
    [sent.status, premium.status, french.status]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_alert_evaluates_and_faults_fire_their_alerts() {
    let redis = RedisServer::start();
    let (human, base) = serve_human(Answer::default()).await;
    let toml = format!(
        "{}{}[defense.destination.countries]\nFR = \"step_up\"\n\
         [[defense.velocity]]\nname = \"sms-per-phone\"\nkey = \"phone\"\nchannel = \"sms\"\n\
         window = \"1h\"\nlimit = 3\naction = \"deny\"\n",
        crate::fixtures::redis_toml(&redis.url(), "100ms"),
        human_toml(&base, "open")
    );
    let mut redis = redis;
    let mut users = EntraConfig::demo();
    for n in 0..ROUNDS {
        users.users.push(UserSpec {
            username: format!("reg{n}@contoso.com"),
            password: Some(DEMO_PASSWORD.to_owned()),
            display_name: None,
            mfa_required: true,
            mfa_methods: vec![],
        });
    }
    let env = start_with(users, &toml).await;
    let prometheus = Prometheus::start(env.gw.admin).await;

    // Normal traffic, few enough codes that no country surges: nothing fires.
    let mut n = 0;
    for _ in 0..8 {
        let statuses = round(&env, n).await;
        assert_eq!(statuses, [200, 400, 400], "sent, denied, stepped up");
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let firing = prometheus.firing().await;
    assert!(firing.is_empty(), "alerts on normal traffic: {firing:?}");

    // The provider fails: its error rate, then its open circuit.
    human.set_config(HumanEmulatorConfig {
        answer: Answer {
            status: Some(503),
            ..Answer::default()
        },
        ..human.config()
    });
    for _ in 0..8 {
        round(&env, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    prometheus.until_firing("OtpgateProviderErrors").await;
    prometheus.until_firing("OtpgateProviderCircuitOpen").await;

    // Redis stops: the replica counts alone.
    redis.stop();
    for _ in 0..4 {
        round(&env, n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    prometheus.until_firing("OtpgateStoreDegraded").await;

    // Every alert expression evaluates, and every dashboard query returns data.
    for (alert, expr) in alerts() {
        if let Err(e) = prometheus.query(&expr).await {
            panic!("alert {alert}: {e}\n{expr}");
        }
    }
    for (panel, expr) in dashboard_queries() {
        match prometheus.query(&expr).await {
            Ok(result) => assert!(!result.is_empty(), "panel {panel:?}: no data for {expr}"),
            Err(e) => panic!("panel {panel:?}: {e}\n{expr}"),
        }
    }
    let firing = prometheus.firing().await;
    for alert in [
        "OtpgateProviderCircuitOpen",
        "OtpgateProviderErrors",
        "OtpgateStoreDegraded",
    ] {
        assert!(firing.iter().any(|a| a == alert), "{alert}: {firing:?}");
    }
}
