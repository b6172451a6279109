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
