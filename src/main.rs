//! The `otpgate` command: thin over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "otpgate", version, about = "An Entra-aware SMS-fraud gateway")]
struct Cli {
    /// Config file; with no subcommand, `run` is implied.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run,
    /// Validate a config file and print every problem found.
    CheckConfig {
        /// The config file (or use --config).
        file: Option<PathBuf>,
    },
    /// The gateway in front of the built-in Entra emulator, in-memory store: try it out.
    Demo {
        /// Gateway address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin address (/livez, /readyz, /metrics).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Entra emulator address.
        #[arg(long, default_value = "127.0.0.1:8081")]
        entra_listen: SocketAddr,
    },
    /// Run one of the emulators on its own.
    Emulate {
        #[command(subcommand)]
        what: Emulator,
    },
}

#[derive(Subcommand)]
enum Emulator {
    /// The Entra External ID native-auth API (V1) for one tenant, with an outbox.
    Entra {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Users file (TOML or JSON); default: the built-in demo users.
        #[arg(long)]
        users: Option<PathBuf>,
    },
    /// HUMAN's Risk API and collector (and `POST /_emulator/mint` for risk tokens).
    Human {
        #[arg(long, default_value = "127.0.0.1:8082")]
        listen: SocketAddr,
        /// Script (JSON, as for `POST /_emulator/script`); default: score 0, action `c`.
        #[arg(long)]
        script: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => otpgate::cli::run(cli.config.as_deref()),
        Command::CheckConfig { file } => otpgate::cli::check_config(file.or(cli.config).as_deref()),
        Command::Demo {
            listen,
            admin_listen,
            entra_listen,
        } => otpgate::cli::demo(otpgate::cli::DemoOptions {
            listen,
            admin_listen,
            entra_listen,
        }),
        Command::Emulate { what } => match what {
            Emulator::Entra { listen, users } => {
                otpgate::cli::emulate_entra(listen, users.as_deref())
            }
            Emulator::Human { listen, script } => {
                otpgate::cli::emulate_human(listen, script.as_deref())
            }
        },
    }
}
