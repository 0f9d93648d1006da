//! The `parapet` command: parse arguments, load the config, run.

use clap::{Parser, Subcommand};
use parapet::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: per-thread free lists make the many small per-request allocations (headers,
/// futures, buffers) about 4x cheaper than glibc's malloc. Its v2 line: v3 kept freed memory
/// committed (benches/README.md, per-change table).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "conf/parapet.toml";
const DEFAULT_CERT_DIR: &str = "certs";
/// The shipped config, for `parapet demo` run outside the source tree.
const SHIPPED_CONFIG: &str = include_str!("../conf/parapet.toml");

/// Parapet: a reverse proxy, load balancer and edge cache built on Pingora.
#[derive(Parser)]
#[command(name = "parapet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a config file.
    Run {
        /// Config file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take the listening sockets over from a running Parapet (after sending it SIGQUIT).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config file, print every problem as FILE:LINE:KEY: message, and exit.
    Check {
        /// Config file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the config's admin listener for /healthz: exit 0 when it answers 200, else 1 (for
    /// container health checks in an image without curl).
    Health {
        /// Config file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Make development certificates: a local CA and a localhost leaf it signs.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Run the shipped config with built-in demo origins on its loopback server addresses.
    Demo {
        /// Config file (TOML); without it, conf/parapet.toml or the copy built into the binary.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Send staged, open-model load to a URL and judge it by thresholds (exit 0 pass, 1 fail,
    /// 2 bad input); with --admin, split each percentile into proxy and upstream time.
    Load(Box<parapet::load::LoadArgs>),
}

#[derive(Subcommand)]
enum CertsAction {
    /// Write what DIR lacks of ca.crt/ca.key and localhost.crt/localhost.key (localhost,
    /// 127.0.0.1, ::1): a missing leaf is signed by the CA already there. Keys are readable by
    /// their owner only. Trust ca.crt in a browser or pass it to clients (curl --cacert); never
    /// use in production.
    Dev {
        /// Where to write the files.
        #[arg(short, long, value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
        dir: PathBuf,
        /// Remake the leaf, signed by the existing CA (clients keep trusting it).
        #[arg(long)]
        force: bool,
        /// Remake the CA and the leaf (clients that trusted the old CA stop trusting).
        #[arg(long)]
        force_ca: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // pingora-cache warns once that no header-compression dictionary is loaded; that is
        // only a missed optimisation for its on-disk formats, not something to act on.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora_cache::meta=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("{error}");
        ExitCode::from(2)
    })
}

/// What `certs dev` replaces: `--force-ca` the CA and the leaf, `--force` the leaf.
fn replacing(force: bool, force_ca: bool) -> parapet::tls::Replace {
    use parapet::tls::Replace;
    match (force, force_ca) {
        (_, true) => Replace::CaAndLeaf,
        (true, false) => Replace::Leaf,
        (false, false) => Replace::Missing,
    }
}

/// The shipped config's TLS listener uses development certificates: make them when missing.
fn ensure_dev_certificates() {
    let dir = Path::new(DEFAULT_CERT_DIR);
    if dir.join("localhost.crt").exists() && dir.join("localhost.key").exists() {
        return;
    }
    match parapet::tls::make_dev_certificates(dir) {
        Ok(_) => println!(
            "Parapet demo: made development certificates in {}/ (trust {}/ca.crt to avoid warnings)",
            dir.display(),
            dir.display()
        ),
        Err(message) => eprintln!("{message}"),
    }
}

fn demo_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    match path {
        Some(path) => load(&path),
        None if Path::new(DEFAULT_CONFIG).exists() => load(Path::new(DEFAULT_CONFIG)),
        None => Config::parse(SHIPPED_CONFIG, Path::new("(built-in) conf/parapet.toml")).map_err(
            |error| {
                eprintln!("{error}");
                ExitCode::from(2)
            },
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(loaded) => {
                for warning in loaded.warning_lines() {
                    eprintln!("{warning}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Health { config } => match load(&config) {
            Ok(config) => parapet::probe::run(&config),
            Err(code) => code,
        },
        Command::Certs {
            action:
                CertsAction::Dev {
                    dir,
                    force,
                    force_ca,
                },
        } => match parapet::tls::write_dev_certificates(&dir, replacing(force, force_ca)) {
            Ok(files) if files.is_empty() => {
                eprintln!(
                    "{} already has a CA and a leaf: nothing written (--force remakes the leaf with this CA, --force-ca the CA too)",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Ok(files) => {
                for file in files {
                    println!("wrote {}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, upgrade } => {
            parapet::signals::catch_early();
            init_logging();
            match load(&config) {
                Ok(config) => {
                    config.log_warnings();
                    parapet::server::run(config, upgrade)
                }
                Err(code) => code,
            }
        }
        Command::Load(args) => parapet::load::run(*args),
        Command::Demo { config } => {
            parapet::signals::catch_early();
            init_logging();
            ensure_dev_certificates();
            let config = match demo_config(config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Err(error) =
                parapet::demo::start_origins(parapet::demo::origin_addresses(&config))
            {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
            for listener in &config.listeners {
                match listener.is_tls() {
                    true => println!(
                        "Parapet demo: try  curl -i --cacert {DEFAULT_CERT_DIR}/ca.crt https://localhost:{}/",
                        listener.address.port()
                    ),
                    false => println!("Parapet demo: try  curl -i http://{}/", listener.address),
                }
            }
            parapet::server::run(config, false)
        }
    }
}
