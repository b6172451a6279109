//! What the subcommands do, kept out of `main.rs` so it stays thin and testable.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, LogConfig, LogFormat};
use crate::server::Server;

/// Set up logging per `[log]`. Safe to call once per process.
pub fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `otpgate check-config FILE`: every problem, one per line; non-zero exit if any.
pub fn check_config(path: Option<&Path>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("usage: otpgate check-config FILE");
        return ExitCode::from(2);
    };
    match config::load(Some(path)) {
        Ok(_) => {
            println!("{}: ok", path.display());
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
    init_logging(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
        server.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: std::net::SocketAddr,
    pub admin_listen: std::net::SocketAddr,
    pub entra_listen: std::net::SocketAddr,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9090).into(),
            entra_listen: ([127, 0, 0, 1], 8081).into(),
        }
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

/// `otpgate emulate entra --listen ADDR [--users FILE]`.
pub fn emulate_entra(listen: std::net::SocketAddr, users: Option<&Path>) -> ExitCode {
    use crate::emulate::entra::{EntraConfig, EntraEmulator};
    init_logging(&LogConfig::default());
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
        println!(
            "emulated Entra (tenant {}.onmicrosoft.com) on http://{listen}",
            config.tenant_name
        );
        match crate::emulate::entra::serve(listener, EntraEmulator::new(config), shutdown_signal())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("otpgate: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `otpgate emulate human --listen ADDR [--script FILE]`: HUMAN's Risk API and collector.
/// The script is the JSON of [`crate::emulate::human::HumanEmulatorConfig`] (also accepted
/// later by `POST /_emulator/script`); without it every call scores 0, action `c`.
pub fn emulate_human(listen: std::net::SocketAddr, script: Option<&Path>) -> ExitCode {
    use crate::emulate::human::{HumanEmulator, HumanEmulatorConfig};
    init_logging(&LogConfig::default());
    let config = match script {
        Some(path) => {
            let parsed = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<HumanEmulatorConfig>(&b).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("otpgate: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        None => HumanEmulatorConfig::default(),
    };
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
        println!("emulated HUMAN Risk API and collector on http://{listen}");
        match crate::emulate::human::serve(listener, HumanEmulator::new(config), shutdown_signal())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("otpgate: {e}");
                ExitCode::FAILURE
            }
        }
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
            ("OTPGATE__SERVER__SHUTDOWN_GRACE", "2s".to_owned()),
        ];
        // The user's own OTPGATE__* variables still win over the demo's choices.
        let env = overrides
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(std::env::vars());
        let settings = match config::load_with_env(None, env) {
            Ok((_, s)) => s,
            Err(problems) => {
                eprintln!("otpgate: invalid demo configuration:\n{problems}");
                return ExitCode::FAILURE;
            }
        };
        init_logging(&settings.log);
        let entra_config = EntraConfig::demo();
        let emulator = EntraEmulator::new(entra_config.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let entra_task = tokio::spawn(crate::emulate::entra::serve(
            entra_listener,
            emulator,
            stop.clone().cancelled_owned(),
        ));
        let server = match Server::bind(settings).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("otpgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let gateway = server.local_addr().unwrap_or(opts.listen);
        let admin = server.admin_addr().unwrap_or(opts.admin_listen);
        println!("{}", walkthrough(gateway, admin, entra_addr, &entra_config));
        server.serve(shutdown_signal()).await;
        stop.cancel();
        let _ = entra_task.await;
        ExitCode::SUCCESS
    })
}

/// The demo's printed walkthrough: a sign-in with SMS MFA through the gateway.
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
  users     sms@contoso.com, both@contoso.com, email-mfa@contoso.com, newphone@contoso.com,
            password@contoso.com (password {password}); otp@contoso.com (email code)

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
"#,
        tid = config.tenant_id,
        password = crate::emulate::entra::DEMO_PASSWORD,
    )
}
