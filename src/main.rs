//! The `otpgate` command: thin over the library.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => otpgate::cli::run(cli.config.as_deref()),
        Command::CheckConfig { file } => otpgate::cli::check_config(file.or(cli.config).as_deref()),
    }
}
