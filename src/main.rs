//! The `idenfy-gateway` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use idenfy_gateway::config::{Config, LogFormat};
use idenfy_gateway::demo::{Demo, DemoAddrs};
use idenfy_gateway::simulator::{Simulator, SimulatorConfig};
use mimalloc::MiMalloc;

/// mimalloc: per-thread free lists make the request path's small, short-lived allocations a few
/// instructions each (glibc's malloc and free were a fifth of a proxied request's cost).
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// Exit status for a configuration that does not validate (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

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
    /// Validate a config file and exit 0, or print every problem and exit 64.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve the iDenfy simulator alone (for developing and testing against iDenfy offline).
    Simulate(SimulatorConfig),
    /// The simulator, with the gateway in front of it, on loopback; prints what to try with curl.
    Demo(DemoArgs),
}

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
        Some(Command::CheckConfig { config }) => check_config(&config),
        Some(Command::Simulate(config)) => simulate(config),
        Some(Command::Demo(args)) => demo(args),
        None if cli.run.config.is_some() => run(cli.run),
        None => {
            eprintln!("idenfy-gateway: give a subcommand or --config FILE (see --help)");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{}: invalid configuration:", path.display());
        for e in &errors.0 {
            eprintln!("  {}: {}", e.path, e.message);
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} account(s), {} team(s))",
                path.display(),
                config.accounts.len(),
                config.teams.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
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
    let mut config = match load(&path) {
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
    let _logs = idenfy_gateway::telemetry::init(config.log.format, &config.log.level);
    let result = runtime(args.workers)
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(idenfy_gateway::server::run(config, shutdown_signal())));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "gateway failed");
            eprintln!("idenfy-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an async main on a fresh runtime; an error is printed and exits 1.
fn block_on(
    workers: Option<usize>,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let result = runtime(workers)
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(main));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "failed");
            eprintln!("idenfy-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(config: SimulatorConfig) -> ExitCode {
    let _logs = idenfy_gateway::telemetry::init(LogFormat::Human, "info");
    block_on(None, async move {
        let sim = Simulator::start(config).await?;
        println!(
            "iDenfy simulator on {} (control API under {}/__sim/)",
            sim.url(),
            sim.url()
        );
        shutdown_signal().await;
        sim.shutdown().await;
        Ok(())
    })
}

fn demo(args: DemoArgs) -> ExitCode {
    let _logs = idenfy_gateway::telemetry::init(LogFormat::Human, "warn");
    block_on(None, async move {
        let addrs = DemoAddrs {
            proxy: args.proxy,
            admin: args.admin,
            simulator: args.simulator,
        };
        let demo = Demo::start(addrs).await?;
        println!("{}", demo.instructions());
        shutdown_signal().await;
        demo.shutdown().await;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
