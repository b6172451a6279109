//! The `otpgate` command: thin over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc instead of the system allocator: a gated request allocates and frees a few
/// hundred blocks, and glibc's malloc spent about a sixth of the gated path's CPU on them
/// (BENCHMARKS.md). mimalloc was as fast but peaked a third higher in memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        /// Also print the effective config (defaults and environment applied), secrets
        /// redacted.
        #[arg(long)]
        print: bool,
    },
    /// Judge a recorded request against a config offline and print the decision with its
    /// reasons: for testing rules before deploying them.
    Explain {
        /// The recorded request: `METHOD PATH HTTP/1.1`, headers, a blank line, the body.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// The risk provider's answer to assume on every route: allow, step_up, deny,
        /// timeout, unavailable, bad_response, rate_limited, or none (no provider).
        /// Without it, each route's provider is the config's: none and mock as configured;
        /// HUMAN and Prove cannot be reached offline, so a route using one needs this.
        #[arg(long)]
        provider: Option<String>,
        /// The client address to assume.
        #[arg(long, default_value = "203.0.113.10")]
        client_ip: std::net::IpAddr,
    },
    /// The gateway in front of the built-in Entra emulator, in-memory store: try it out.
    /// With --config, that file's rules instead of the built-in demo config (the listen
    /// addresses and the upstream still come from these options).
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
    /// Simulate a day of legitimate and attack traffic through the gateway (this config, or
    /// the shipped defaults) in front of the Entra emulator, in-process and time-compressed,
    /// and print per traffic class what was sent, stopped and challenged (SIMULATION.md).
    Simulate {
        /// Random seed; repeat for several runs (`--seed 1 --seed 2 --seed 3`).
        #[arg(long = "seed", value_name = "N", default_values_t = [1u64])]
        seeds: Vec<u64>,
        /// Hours of the day simulated, from midnight.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Multiplies every volume (users, attackers' rates and resources).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call the admin API of a running otpgate: safe and block lists, why a user got no
    /// code. The token: --token-file or OTPGATE_ADMIN_TOKEN.
    Admin {
        /// The admin listener.
        #[arg(
            long,
            env = "OTPGATE_ADMIN_URL",
            default_value = "http://127.0.0.1:9090"
        )]
        url: String,
        /// File holding the bearer token (else OTPGATE_ADMIN_TOKEN).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        verb: AdminCommand,
    },
    /// Run one of the emulators on its own.
    Emulate {
        #[command(subcommand)]
        what: Emulator,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List the entries of both lists, or of one (safe, block).
    Lists { list: Option<String> },
    /// Add an entry: LIST is safe or block; KIND is number, prefix, user, network or
    /// client_id; VALUE `-` reads it from standard input.
    Add {
        list: String,
        kind: String,
        value: String,
        /// A note kept with the entry (who asked, the ticket): no numbers or names.
        #[arg(long)]
        note: Option<String>,
        /// Lift the entry after this long (30m, 24h, 7d).
        #[arg(long)]
        expires_in: Option<String>,
        /// Lift the entry at this RFC 3339 time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Remove a runtime entry, by its value (`-`: standard input) or by --id.
    Remove {
        list: String,
        kind: String,
        value: Option<String>,
        #[arg(long)]
        id: Option<String>,
    },
    /// The keys adaptive rules refused or stepped up in the last twenty minutes, with
    /// their figures.
    Blocks,
    /// Lift an adaptive block (RULE and KEY as `blocks` shows them) for the rule's window.
    Lift { rule: String, key: String },
    /// The recent decisions for a phone number, a username or a flow id.
    Why {
        #[arg(long, group = "subject")]
        phone: Option<String>,
        #[arg(long, group = "subject")]
        username: Option<String>,
        #[arg(long, group = "subject")]
        flow: Option<String>,
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
    /// Prove's token, unify, unify-status and unify-bind endpoints.
    Prove {
        #[arg(long, default_value = "127.0.0.1:8083")]
        listen: SocketAddr,
        /// Script (JSON, as for `POST /_emulator/script`); default: every number passes.
        #[arg(long)]
        script: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    otpgate::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => otpgate::cli::run(cli.config.as_deref()),
        Command::CheckConfig { file, print } => {
            let file = file.or(cli.config);
            match (print, file.as_deref()) {
                (true, Some(path)) => otpgate::cli::print_config(path),
                _ => otpgate::cli::check_config(file.as_deref()),
            }
        }
        Command::Explain {
            request,
            provider,
            client_ip,
        } => match cli.config.as_deref() {
            Some(config) => otpgate::cli::explain(config, &request, provider.as_deref(), client_ip),
            None => {
                eprintln!("usage: otpgate explain --config FILE --request FILE");
                ExitCode::from(2)
            }
        },
        Command::Demo {
            listen,
            admin_listen,
            entra_listen,
        } => otpgate::cli::demo(otpgate::cli::DemoOptions {
            listen,
            admin_listen,
            entra_listen,
            config: cli.config.clone(),
        }),
        Command::Simulate {
            seeds,
            hours,
            scale,
            json,
        } => otpgate::cli::simulate(cli.config.as_deref(), &seeds, hours, scale, json),
        Command::Admin {
            url,
            token_file,
            verb,
        } => {
            use otpgate::admin_cli::AdminVerb;
            let verb = match verb {
                AdminCommand::Lists { list } => AdminVerb::Lists { list },
                AdminCommand::Blocks => AdminVerb::Blocks,
                AdminCommand::Lift { rule, key } => AdminVerb::Lift { rule, key },
                AdminCommand::Add {
                    list,
                    kind,
                    value,
                    note,
                    expires_in,
                    expires_at,
                } => AdminVerb::Add {
                    list,
                    kind,
                    value,
                    note,
                    expires_in,
                    expires_at,
                },
                AdminCommand::Remove {
                    list,
                    kind,
                    value,
                    id,
                } => AdminVerb::Remove {
                    list,
                    kind,
                    value,
                    id,
                },
                AdminCommand::Why {
                    phone,
                    username,
                    flow,
                } => {
                    let asked = [("phone", phone), ("username", username), ("flow", flow)]
                        .into_iter()
                        .filter_map(|(subject, value)| Some((subject, value?)))
                        .collect::<Vec<_>>();
                    let Ok([(subject, value)]) = <[_; 1]>::try_from(asked) else {
                        eprintln!("usage: otpgate admin why --phone P | --username U | --flow F");
                        return ExitCode::from(2);
                    };
                    AdminVerb::Why {
                        subject: subject.into(),
                        value,
                    }
                }
            };
            otpgate::admin_cli::admin(&otpgate::admin_cli::AdminTarget { url, token_file }, verb)
        }
        Command::Emulate { what } => match what {
            Emulator::Entra { listen, users } => {
                otpgate::cli::emulate_entra(listen, users.as_deref())
            }
            Emulator::Human { listen, script } => {
                otpgate::cli::emulate_human(listen, script.as_deref())
            }
            Emulator::Prove { listen, script } => {
                otpgate::cli::emulate_prove(listen, script.as_deref())
            }
        },
    }
}
