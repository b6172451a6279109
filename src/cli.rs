//! What the subcommands do, kept out of `main.rs` so it stays thin and testable.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, LogConfig};
use crate::server::Server;

/// `otpgate check-config FILE`: every problem, one per line; non-zero exit if any. A
/// valid file may still get warnings (on stderr, exit zero).
pub fn check_config(path: Option<&Path>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("usage: otpgate check-config FILE");
        return ExitCode::from(2);
    };
    match config::load(Some(path)) {
        Ok((_, settings)) => {
            println!("{}: ok", path.display());
            for w in settings.warnings() {
                eprintln!("  warning: {}: {}", w.key, w.message);
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}: {} problem(s)", path.display(), problems.0.len());
            for p in &problems.0 {
                eprintln!("  {}: {}", p.key, p.message);
            }
            ExitCode::FAILURE
        }
    }
}

/// `otpgate run --config FILE`: load, validate, build, bind, serve until SIGTERM/SIGINT,
/// drain, exit 0.
pub fn run(path: Option<&Path>) -> ExitCode {
    let settings = match config::load(path) {
        Ok((_, s)) => s,
        Err(problems) => {
            eprintln!("otpgate: invalid configuration:");
            for p in &problems.0 {
                eprintln!("  {}: {}", p.key, p.message);
            }
            return ExitCode::FAILURE;
        }
    };
    crate::logging::init(&settings.log);
    let runtime = match request_runtime(settings.server.workers()) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otpgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(settings).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let reloader = server.reloader();
        if let Some(path) = path.map(Path::to_path_buf) {
            // Listening for SIGHUP starts before the server says it serves: a reload asked
            // for right after that line must not meet the signal's default, which ends
            // the process.
            #[cfg(unix)]
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            #[cfg(not(unix))]
            let hup = None;
            tokio::spawn(reload_on_change(path, reloader, hup));
        }
        server.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// What identifies a file's content without reading it: the file the path resolves to now
/// (Kubernetes swaps a symlink to a new directory), its size and its mtime.
fn fingerprint(path: &Path) -> Option<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let real = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    Some((real, meta.len(), meta.modified().ok()?))
}

type Fingerprints = Vec<Option<(std::path::PathBuf, u64, std::time::SystemTime)>>;

/// The config file's fingerprint, then the TLS certificate's and key's.
fn fingerprints(path: &Path, reloader: &crate::server::Reloader) -> Fingerprints {
    std::iter::once(path.to_path_buf())
        .chain(reloader.tls_files())
        .map(|p| fingerprint(&p))
        .collect()
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// Reload on SIGHUP, and when the config file or the TLS certificate or key changes
/// (polled every second, which also sees Kubernetes' symlink swaps of mounted ConfigMaps
/// and Secrets, and cert-manager's renewals).
async fn reload_on_change(
    path: std::path::PathBuf,
    reloader: crate::server::Reloader,
    mut hup: Option<Hangup>,
) {
    let mut seen = fingerprints(&path, &reloader);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = {
            let _ = &mut hup;
            std::future::pending::<Option<()>>()
        };
        tokio::select! {
            _ = tick.tick() => {
                let now = fingerprints(&path, &reloader);
                // A file that vanished for a moment (mid-swap) is looked at again next tick.
                if now == seen || now.iter().any(Option::is_none) {
                    continue;
                }
                let what = if now.first() == seen.first() { "certificate or key" } else { "config file" };
                tracing::info!(path = %path.display(), "{what} changed: reloading");
            }
            Some(()) = hangup => {
                tracing::info!("SIGHUP: reloading");
            }
        }
        reloader.reload_from(Some(&path));
        seen = fingerprints(&path, &reloader);
    }
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: draining"),
                    _ = int.recv() => tracing::info!("SIGINT: draining"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The demo's configuration (`config/demo.toml`), built in so `otpgate demo` needs no files.
pub(crate) const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: std::net::SocketAddr,
    pub admin_listen: std::net::SocketAddr,
    pub entra_listen: std::net::SocketAddr,
    /// A config file to run instead of `config/demo.toml`; the listen addresses and the
    /// upstream (the emulator) still come from the options.
    pub config: Option<std::path::PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9090).into(),
            entra_listen: ([127, 0, 0, 1], 8081).into(),
            config: None,
        }
    }
}

/// The runtime that serves requests. One thread: tokio's current-thread scheduler, which
/// runs every task from one unbounded queue. Its multi-thread scheduler with one worker
/// holds 256 tasks in the worker's queue and moves the overflow to a shared queue that it
/// reads only every few dozen polls; at 512 busy connections its p99 was 77 ms against
/// 14 ms on the current-thread scheduler (BENCHMARKS.md, "This round").
fn request_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("otpgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Run one emulator on `listen` until SIGTERM/SIGINT: `serve` is the emulator's own
/// `serve(listener, emulator, shutdown)`.
fn run_emulator<F, Fut>(listen: std::net::SocketAddr, banner: &str, serve: F) -> ExitCode
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    crate::logging::init(&LogConfig::default());
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("otpgate: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("{banner} on http://{listen}");
        match serve(listener).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("otpgate: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A JSON script file for an emulator, or its default.
fn read_script<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
) -> Result<T, ExitCode> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()))
        .map_err(|e| {
            eprintln!("otpgate: {}: {e}", path.display());
            ExitCode::FAILURE
        })
}

/// `otpgate emulate entra --listen ADDR [--users FILE]`.
pub fn emulate_entra(listen: std::net::SocketAddr, users: Option<&Path>) -> ExitCode {
    use crate::emulate::entra::{serve, EntraConfig, EntraEmulator};
    let config = match users {
        Some(path) => match EntraConfig::from_users_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("otpgate: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => EntraConfig::demo(),
    };
    let banner = format!(
        "emulated Entra (tenant {}.onmicrosoft.com)",
        config.tenant_name
    );
    run_emulator(listen, &banner, |l| {
        serve(l, EntraEmulator::new(config), shutdown_signal())
    })
}

/// `otpgate emulate human --listen ADDR [--script FILE]`: HUMAN's Risk API and collector.
/// The script is the JSON of [`crate::emulate::human::HumanEmulatorConfig`] (also accepted
/// later by `POST /_emulator/script`); without it every call scores 0, action `c`.
pub fn emulate_human(listen: std::net::SocketAddr, script: Option<&Path>) -> ExitCode {
    use crate::emulate::human::{serve, HumanEmulator, HumanEmulatorConfig};
    let config: HumanEmulatorConfig = match read_script(script) {
        Ok(c) => c,
        Err(code) => return code,
    };
    run_emulator(listen, "emulated HUMAN Risk API and collector", |l| {
        serve(l, HumanEmulator::new(config), shutdown_signal())
    })
}

/// `otpgate emulate prove --listen ADDR [--script FILE]`: Prove's `/token`, `/v3/unify`,
/// `/v3/unify-status` and `/v3/unify-bind`. The script is the JSON of
/// [`crate::emulate::prove::ProveEmulatorConfig`] (also `POST /_emulator/script`).
pub fn emulate_prove(listen: std::net::SocketAddr, script: Option<&Path>) -> ExitCode {
    use crate::emulate::prove::{serve, ProveEmulator, ProveEmulatorConfig};
    let config: ProveEmulatorConfig = match read_script(script) {
        Ok(c) => c,
        Err(code) => return code,
    };
    run_emulator(listen, "emulated Prove platform", |l| {
        serve(l, ProveEmulator::new(config), shutdown_signal())
    })
}

/// `otpgate demo`: the gateway in front of the Entra emulator, in one process, with the
/// in-memory store. Prints a walkthrough that works when pasted.
pub fn demo(opts: DemoOptions) -> ExitCode {
    use crate::emulate::entra::{EntraConfig, EntraEmulator};
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let entra_listener = match tokio::net::TcpListener::bind(opts.entra_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("otpgate: cannot listen on {}: {e}", opts.entra_listen);
                return ExitCode::FAILURE;
            }
        };
        let entra_addr = entra_listener.local_addr().unwrap_or(opts.entra_listen);
        let overrides = [
            ("OTPGATE__SERVER__LISTEN", opts.listen.to_string()),
            ("OTPGATE__ADMIN__LISTEN", opts.admin_listen.to_string()),
            ("OTPGATE__UPSTREAM__URL", format!("http://{entra_addr}")),
        ];
        // The user's own OTPGATE__* variables still win over the demo's choices.
        let env = overrides
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(std::env::vars());
        let loaded = match &opts.config {
            Some(path) => config::load_with_env(Some(path), env),
            None => config::load_toml(DEMO_CONFIG, env),
        };
        let settings = match loaded {
            Ok((_, s)) => s,
            Err(problems) => {
                let what = opts
                    .config
                    .as_ref()
                    .map_or("the demo configuration".to_owned(), |p| {
                        p.display().to_string()
                    });
                eprintln!("otpgate: invalid configuration ({what}):\n{problems}");
                return ExitCode::FAILURE;
            }
        };
        crate::logging::init(&settings.log);
        let entra_config = EntraConfig::demo();
        let emulator = EntraEmulator::new(entra_config.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let entra_task = tokio::spawn(crate::emulate::entra::serve(
            entra_listener,
            emulator.clone(),
            stop.clone().cancelled_owned(),
        ));
        let server = match Server::bind(settings).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("otpgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        // A clean slate on demand: the gateway's counters and flows, the emulator's users.
        let memory = server.memory_store();
        let server = server.with_reset(std::sync::Arc::new(move || {
            if let Some(memory) = &memory {
                memory.clear();
            }
            emulator.reset();
        }));
        let gateway = server.local_addr().unwrap_or(opts.listen);
        let admin = server.admin_addr().unwrap_or(opts.admin_listen);
        println!("{}", walkthrough(gateway, admin, entra_addr, &entra_config));
        server.serve(shutdown_signal()).await;
        stop.cancel();
        let _ = entra_task.await;
        ExitCode::SUCCESS
    })
}

/// The demo's printed walkthrough: a sign-in with SMS MFA, then a phone registration,
/// through the gateway.
pub fn walkthrough(
    gateway: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    entra: std::net::SocketAddr,
    config: &crate::emulate::entra::EntraConfig,
) -> String {
    let client = crate::emulate::entra::DEMO_CLIENT_ID;
    let tenant = format!("{}.onmicrosoft.com", config.tenant_name);
    format!(
        r#"otpgate demo
  gateway   http://{gateway}  →  emulated Entra http://{entra} (tenant {tenant} / {tid})
  admin     http://{admin}/metrics  /readyz  /livez
  outbox    curl -s http://{entra}/_emulator/outbox      (codes the emulator "sent")
  reset     curl -s -X POST http://{admin}/demo/reset    (counters, flows, users: a clean slate)
  users     sms@contoso.com, both@contoso.com, email-mfa@contoso.com, newphone@contoso.com,
            password@contoso.com (password {password}); otp@contoso.com (email code)
  decisions one JSON audit line per native-auth request on this console: "decision",
            "reasons", "code_sent"

Sign in with SMS MFA through the gateway (paste into a shell):

  G=http://{gateway}/{tenant}; C={client}
  ct() {{ sed -E 's/.*"continuation_token":"([^"]*)".*/\1/'; }}
  CT=$(curl -s $G/oauth2/v2.0/initiate -d client_id=$C -d username=sms@contoso.com \
        --data-urlencode 'challenge_type=password redirect' \
        --data-urlencode 'capabilities=mfa_required registration_required' | ct)
  CT=$(curl -s $G/oauth2/v2.0/challenge -d client_id=$C -d continuation_token=$CT \
        --data-urlencode 'challenge_type=password redirect' | ct)
  CT=$(curl -s $G/oauth2/v2.0/token -d client_id=$C -d continuation_token=$CT \
        -d grant_type=password --data-urlencode 'password={password}' -d scope=openid | ct)
  R=$(curl -s $G/oauth2/v2.0/introspect -d client_id=$C -d continuation_token=$CT); echo "$R"
  ID=$(echo "$R" | sed -E 's/.*"id":"([^"]*)".*/\1/'); CT=$(echo "$R" | ct)
  CT=$(curl -s $G/oauth2/v2.0/challenge -d client_id=$C -d continuation_token=$CT -d id=$ID \
        --data-urlencode 'challenge_type=oob redirect' | tee /dev/stderr | ct); echo
  CODE=$(curl -s http://{entra}/_emulator/outbox | sed -E 's/.*"code":"([0-9]+)".*/\1/')
  curl -s $G/oauth2/v2.0/token -d client_id=$C -d continuation_token=$CT \
        -d grant_type=mfa_oob -d oob=$CODE -d scope=openid; echo

Register a phone as newphone@contoso.com: a premium-rate number is refused (no SMS), a
French mobile gets its code (paste into a shell as well):

  G=http://{gateway}/{tenant}; C={client}
  ct() {{ sed -E 's/.*"continuation_token":"([^"]*)".*/\1/'; }}
  CT=$(curl -s $G/oauth2/v2.0/initiate -d client_id=$C -d username=newphone@contoso.com \
        --data-urlencode 'challenge_type=password redirect' \
        --data-urlencode 'capabilities=mfa_required registration_required' | ct)
  CT=$(curl -s $G/oauth2/v2.0/challenge -d client_id=$C -d continuation_token=$CT \
        --data-urlencode 'challenge_type=password redirect' | ct)
  CT=$(curl -s $G/oauth2/v2.0/token -d client_id=$C -d continuation_token=$CT \
        -d grant_type=password --data-urlencode 'password={password}' -d scope=openid | ct)
  CT=$(curl -s $G/register/v1.0/introspect -d client_id=$C -d continuation_token=$CT | ct)
  curl -s $G/register/v1.0/challenge -d client_id=$C -d continuation_token=$CT \
        -d challenge_type=oob -d challenge_channel=sms \
        --data-urlencode 'challenge_target=+449090123456'; echo
  CT=$(curl -s $G/register/v1.0/challenge -d client_id=$C -d continuation_token=$CT \
        -d challenge_type=oob -d challenge_channel=sms \
        --data-urlencode 'challenge_target=+33612345678' | tee /dev/stderr | ct); echo
  CODE=$(curl -s http://{entra}/_emulator/outbox | sed -E 's/.*"code":"([0-9]+)".*/\1/')
  CT=$(curl -s $G/register/v1.0/continue -d client_id=$C -d continuation_token=$CT \
        -d grant_type=oob -d oob=$CODE | ct)
  curl -s $G/oauth2/v2.0/token -d client_id=$C -d continuation_token=$CT \
        -d grant_type=continuation_token -d scope=openid; echo

Then try the SMS challenge step with -H 'x-demo-risk: high' (the mock risk provider denies:
no SMS) or -H 'x-demo-risk: flaky' (the provider fails; fail mode step_up answers with a
proof-of-work challenge), or resend more than three times in one flow (velocity denies the
fourth). The registration works once per user: reset for another round. Decisions are
counted too: curl -s http://{admin}/metrics | grep otpgate_decision
"#,
        tid = config.tenant_id,
        password = crate::emulate::entra::DEMO_PASSWORD,
    )
}

/// `otpgate check-config FILE --print`: the effective config (file, defaults and
/// environment) as JSON, secrets redacted.
pub fn print_config(path: &Path) -> ExitCode {
    match config::load(Some(path)) {
        Ok((raw, _)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config::effective_json(&raw)).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}: {} problem(s)", path.display(), problems.0.len());
            for p in &problems.0 {
                eprintln!("  {}: {}", p.key, p.message);
            }
            ExitCode::FAILURE
        }
    }
}

/// A recorded request: `METHOD PATH HTTP/1.1`, header lines, a blank line, the body.
pub(crate) fn parse_recorded_request(
    text: &str,
) -> Result<(http::request::Parts, Vec<u8>), String> {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((text.as_str(), ""));
    let mut lines = head.lines();
    let first = lines.next().ok_or("empty request file")?;
    let mut words = first.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(format!(
            "first line must be `METHOD PATH HTTP/1.1`, got {first:?}"
        ));
    };
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a header line: {line:?}"))?;
        builder = builder.header(name.trim(), value.trim());
    }
    let body = body.trim_end_matches('\n').as_bytes().to_vec();
    let (parts, ()) = builder
        .body(())
        .map_err(|e| format!("invalid request: {e}"))?
        .into_parts();
    Ok((parts, body))
}

/// `otpgate explain`: how the config at `config_path` would handle the recorded request.
/// With `provider`, every route's provider is replaced by a fixed verdict (`allow`,
/// `step_up`, `deny`), a failure (`timeout`, `unavailable`, `bad_response`,
/// `rate_limited`), or `none`; without it, the routes keep the config's provider (`none`
/// or `mock`), and a route naming HUMAN or Prove, which cannot be asked offline, is an
/// error that says so.
pub fn explain(
    config_path: &Path,
    request_path: &Path,
    provider: Option<&str>,
    client_ip: std::net::IpAddr,
) -> ExitCode {
    use crate::config::ProviderChoice;
    use crate::risk::mock::{MockConfig, MockError, MockRule};
    use crate::risk::RiskAction;
    let mut settings = match config::load(Some(config_path)) {
        Ok((_, s)) => s,
        Err(problems) => {
            eprintln!(
                "{}: {} problem(s)\n{problems}",
                config_path.display(),
                problems.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    match provider {
        None => {
            for (name, route) in [
                ("sms", &settings.routes.sms),
                ("email", &settings.routes.email),
            ] {
                if matches!(
                    route.provider,
                    ProviderChoice::Human | ProviderChoice::Prove
                ) {
                    eprintln!(
                        "otpgate: routes.{name} asks {}, which explain cannot reach offline: pass \
                         --provider allow, step_up, deny, timeout, unavailable, bad_response, \
                         rate_limited or none to assume its answer",
                        if route.provider == ProviderChoice::Human {
                            "HUMAN"
                        } else {
                            "Prove"
                        }
                    );
                    return ExitCode::from(2);
                }
            }
        }
        Some(provider) => {
            let mut mock = MockConfig::default();
            match provider {
                "none" => {}
                "allow" | "step_up" | "deny" => {
                    mock.default_action = Some(match provider {
                        "allow" => RiskAction::Allow,
                        "step_up" => RiskAction::StepUp,
                        _ => RiskAction::Deny,
                    })
                }
                "timeout" | "unavailable" | "bad_response" | "rate_limited" => {
                    mock.rules.push(MockRule {
                        name: Some("explain".into()),
                        error: Some(match provider {
                            "timeout" => MockError::Timeout,
                            "unavailable" => MockError::Unavailable,
                            "bad_response" => MockError::BadResponse,
                            _ => MockError::RateLimited,
                        }),
                        ..MockRule::default()
                    });
                }
                other => {
                    eprintln!("otpgate: --provider must be allow, step_up, deny, timeout, unavailable, bad_response, rate_limited or none (got {other:?})");
                    return ExitCode::from(2);
                }
            }
            let choice = if provider == "none" {
                ProviderChoice::None
            } else {
                ProviderChoice::Mock
            };
            settings.routes.sms.provider = choice;
            settings.routes.email.provider = choice;
            settings.providers.mock = mock;
        }
    }
    settings.audit_sink = crate::audit::AuditSink::Off;
    let text = match std::fs::read_to_string(request_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("otpgate: cannot read {}: {e}", request_path.display());
            return ExitCode::FAILURE;
        }
    };
    let (parts, body) = match parse_recorded_request(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otpgate: {}: {e}", request_path.display());
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let store = std::sync::Arc::new(crate::store::MemoryStore::new(settings.store.max_entries));
        let gateway = match crate::gateway::Gateway::with_store(
            std::sync::Arc::new(settings),
            crate::metrics::Metrics::new(),
            store,
        ) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("otpgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let explanation = gateway.explain(&parts, &body, client_ip).await;
        println!(
            "{}",
            serde_json::to_string_pretty(&explanation.to_json()).unwrap_or_default()
        );
        ExitCode::SUCCESS
    })
}

/// `otpgate simulate`: one simulated day per seed (see [`crate::simulate`]), printed as a
/// table each (or one JSON array), with the real time each took on stderr.
pub fn simulate(
    config: Option<&Path>,
    seeds: &[u64],
    hours: f64,
    scale: f64,
    json: bool,
) -> ExitCode {
    let mut reports = Vec::new();
    for &seed in seeds {
        let options = crate::simulate::Options {
            config: config.map(Path::to_path_buf),
            seed,
            hours,
            scale,
        };
        let started = std::time::Instant::now();
        match crate::simulate::run(&options) {
            Ok(report) => {
                eprintln!(
                    "otpgate simulate: seed {seed} took {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                if !json {
                    println!("{}", crate::simulate::render(&report));
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("otpgate simulate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}
