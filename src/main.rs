//! The `idenfy-gateway` command line.

#[cfg(feature = "simulator")]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use idenfy_gateway::config::{
    Config, ConfigErrors, LoadError, LoadOptions, LogFormat, ProblemKind,
};
#[cfg(feature = "simulator")]
use idenfy_gateway::demo::{Demo, DemoAddrs};
#[cfg(feature = "simulator")]
use idenfy_gateway::simulator::{Simulator, SimulatorConfig};
use idenfy_gateway::telemetry::LogGuard;
use mimalloc::MiMalloc;

/// mimalloc: per-thread free lists make the request path's small, short-lived allocations a few
/// instructions each (glibc's malloc and free were a fifth of a proxied request's cost).
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Exit status for a config file that is wrong (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status for a config file that cannot be read: missing, unreadable (sysexits EX_NOINPUT).
const EXIT_NO_CONFIG_FILE: u8 = 66;
/// Exit status for a right config file naming what this machine lacks: an environment variable,
/// a secret file, a CA file (sysexits EX_CONFIG).
const EXIT_ENVIRONMENT: u8 = 78;

/// An egress gateway for the iDenfy identity-verification API: holds the API key pair,
/// coalesces token requests per clientId, keeps the account under its rate limit, retries
/// what is safe to retry, and exports Prometheus metrics.
#[derive(Parser)]
#[command(name = "idenfy-gateway", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// With no subcommand: `run` this config file.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: the proxy on `listen.proxy`, the admin endpoints on `listen.admin`.
    Run(RunArgs),
    /// Validate a config file and exit 0; or print every problem and exit 64 when the file is
    /// wrong, 78 when only this machine lacks something it names (a variable, a secret file),
    /// 66 when the file cannot be read.
    CheckConfig(CheckArgs),
    /// See or start a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve the iDenfy simulator alone (for developing and testing against iDenfy offline).
    #[cfg(feature = "simulator")]
    Simulate(SimulatorConfig),
    /// The simulator, with the gateway in front of it, on loopback; prints what to try with curl.
    #[cfg(feature = "simulator")]
    Demo(DemoArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The TOML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Check the file alone (for CI): read no environment variable and no file it names
    /// (secrets, CA); the keys that depend on them are not checked.
    #[arg(long)]
    offline: bool,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective config: every key with its value, defaults filled in, secrets and
    /// tokens redacted. Exits like check-config when the config is not valid.
    Show(CheckArgs),
    /// Write a commented starter config: the sidecar's, or with --shared a shared gateway's.
    Init {
        /// A shared egress gateway (many teams with tokens, secrets from files).
        #[arg(long)]
        shared: bool,
        /// Write to this file (never over an existing one) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[cfg(feature = "simulator")]
#[derive(Args)]
struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    proxy: SocketAddr,
    /// Where the gateway's admin endpoints listen.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// Where the simulator listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    simulator: SocketAddr,
}

#[derive(Args)]
struct RunArgs {
    /// The TOML config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log format, overriding `log.format`: json or human.
    #[arg(long, value_parser = ["json", "human"])]
    log_format: Option<String>,
    /// Worker threads of the runtime (default: the CPUs this process may use).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Run(args)) => run(args),
        Some(Command::CheckConfig(args)) => check_config(&args),
        Some(Command::Config(ConfigCommand::Show(args))) => show_config(&args),
        Some(Command::Config(ConfigCommand::Init { shared, output })) => {
            init_config(shared, output.as_deref())
        }
        #[cfg(feature = "simulator")]
        Some(Command::Simulate(config)) => simulate(config),
        #[cfg(feature = "simulator")]
        Some(Command::Demo(args)) => demo(args),
        None if cli.run.config.is_some() => run(cli.run),
        None => {
            eprintln!("idenfy-gateway: give a subcommand or --config FILE (see --help)");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn load(path: &Path, options: LoadOptions) -> Result<Config, ExitCode> {
    Config::load_with(path, options).map_err(|error| report(path, &error))
}

/// Prints why a config cannot be used, once, and gives the exit status that says why.
fn report(path: &Path, error: &LoadError) -> ExitCode {
    let errors = match error {
        LoadError::Unreadable { error, .. } => {
            eprintln!(
                "idenfy-gateway: cannot read config file {}: {error} \
                 (`idenfy-gateway config init --output FILE` writes a starter)",
                path.display()
            );
            return ExitCode::from(EXIT_NO_CONFIG_FILE);
        }
        LoadError::Invalid(errors) => errors,
    };
    print_problems(path, errors, ProblemKind::File, "invalid configuration");
    print_problems(
        path,
        errors,
        ProblemKind::Environment,
        "missing on this machine",
    );
    if errors.environment_only() {
        eprintln!(
            "  (check-config --offline checks the file without reading variables or secret files)"
        );
        ExitCode::from(EXIT_ENVIRONMENT)
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

fn print_problems(path: &Path, errors: &ConfigErrors, kind: ProblemKind, title: &str) {
    let problems: Vec<_> = errors.0.iter().filter(|e| e.kind == kind).collect();
    if problems.is_empty() {
        return;
    }
    eprintln!(
        "{}: {title} ({} problem(s)):",
        path.display(),
        problems.len()
    );
    for e in problems {
        match e.location {
            Some((line, column)) => {
                eprintln!("  line {line}, column {column}: {}: {}", e.path, e.message)
            }
            None => eprintln!("  {}: {}", e.path, e.message),
        }
    }
}

fn check_config(args: &CheckArgs) -> ExitCode {
    let options = LoadOptions {
        offline: args.offline,
    };
    match load(&args.config, options) {
        Ok(config) => {
            let offline = match args.offline {
                true => "; offline: variables and files it names not read",
                false => "",
            };
            println!(
                "{}: ok ({} account(s), {} team(s){offline})",
                args.config.display(),
                config.accounts.len(),
                config.teams.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn show_config(args: &CheckArgs) -> ExitCode {
    let options = LoadOptions {
        offline: args.offline,
    };
    let shown = idenfy_gateway::config::read(&args.config).and_then(|text| {
        let env = |name: &str| std::env::var(name).ok();
        idenfy_gateway::config::show(&text, &env, options).map_err(LoadError::Invalid)
    });
    match shown {
        Ok(text) => {
            println!(
                "# Effective configuration of {}:\n\
                 # every key with its value, defaults filled in, secrets and tokens redacted.\n\n{text}",
                args.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => report(&args.config, &error),
    }
}

fn init_config(shared: bool, output: Option<&Path>) -> ExitCode {
    let text = idenfy_gateway::config::starter(shared);
    let Some(path) = output else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
    match written {
        Ok(()) => {
            eprintln!(
                "wrote {}; check it with `idenfy-gateway check-config --config {}`",
                path.display(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("idenfy-gateway: cannot write {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The runtime: with one worker (a sidecar's usual CPU budget, or `--workers 1`) the
/// single-threaded scheduler, which serves every connection on the thread that calls
/// `block_on`: no work-stealing queues, no cross-thread wake-ups, no idle worker parking. It
/// costs less CPU per request than a one-worker multi-threaded runtime (see docs/benchmarks.md).
/// With more workers, the multi-threaded scheduler with that many threads.
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build()
}

fn run(args: RunArgs) -> ExitCode {
    let Some(path) = args.config else {
        eprintln!("idenfy-gateway run: --config FILE is required");
        return ExitCode::from(EXIT_CONFIG);
    };
    let mut config = match load(&path, LoadOptions::default()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(format) = args.log_format {
        config.log.format = if format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Human
        };
    }
    let logs = idenfy_gateway::telemetry::init(config.log.format, &config.log.level);
    let result = runtime(args.workers)
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let stop = shutdown_signal()?;
                idenfy_gateway::server::run_from(path, config, stop).await
            })
        });
    exit(logs, result)
}

/// Runs an async main on a fresh runtime, then [`exit`]s.
#[cfg(feature = "simulator")]
fn block_on(
    logs: LogGuard,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let result = runtime(None)
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(main));
    exit(logs, result)
}

/// Flushes the logs, then prints a fatal error once (a plain line for a person, after every log
/// line: not also a log event) and exits 1.
fn exit(logs: LogGuard, result: anyhow::Result<()>) -> ExitCode {
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("idenfy-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "simulator")]
fn simulate(config: SimulatorConfig) -> ExitCode {
    let logs = idenfy_gateway::telemetry::init(LogFormat::Human, "info");
    block_on(logs, async move {
        let stop = shutdown_signal()?;
        let sim = Simulator::start(config).await?;
        println!(
            "iDenfy simulator on {} (control API under {}/__sim/)",
            sim.url(),
            sim.url()
        );
        stop.await;
        sim.shutdown().await;
        Ok(())
    })
}

#[cfg(feature = "simulator")]
fn demo(args: DemoArgs) -> ExitCode {
    let logs = idenfy_gateway::telemetry::init_demo();
    block_on(logs, async move {
        let stop = shutdown_signal()?;
        let addrs = DemoAddrs {
            proxy: args.proxy,
            admin: args.admin,
            simulator: args.simulator,
        };
        let demo = Demo::start(addrs).await?;
        println!("{}", demo.instructions());
        stop.await;
        demo.shutdown().await;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (inside the
/// runtime, before anything listens), not when the future is first polled: a signal sent the
/// moment the gateway says it is ready would otherwise meet the default action and kill the
/// process without its drain and exit code.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use anyhow::Context as _;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
