//! The `producer` binary: parses flags, loads configuration, installs telemetry, and runs
//! `serve` (the default) or `publish`. Everything else lives in the library.

use std::process::ExitCode;
use streamgate::config::ServiceConfig as _;

use clap::Parser as _;
use producer::cli::{Cli, Command};
use producer::settings::ProducerConfig;
use producer::startup::Application;
use streamgate::settings::bad_config;
use tokio_util::sync::CancellationToken;

/// mimalloc, as in the gateway: allocation and freeing were ~7% of the producer's CPU per
/// single-event request with glibc's malloc (docs/BENCHMARKS.md, "Producer group commit").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match ProducerConfig::load(&cli.sources()) {
        Ok(config) => config,
        Err(error) => return bad_config(error),
    };
    let serving = matches!(cli.command, None | Some(Command::Serve));
    // Before telemetry, so the refusal is the one line on stderr.
    if serving && let Err(refusal) = config.check_exposure() {
        return bad_config(refusal);
    }
    let telemetry =
        match streamgate::telemetry::init("producer", config.common.log_format, &config.common.traces) {
            Ok(guard) => guard,
            Err(error) => return bad_config(error),
        };
    let code = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Publish(args) => {
            match producer::cli::publish(&config, &args, &mut std::io::stdout()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
    };
    telemetry.shutdown();
    code
}

async fn serve(config: ProducerConfig) -> ExitCode {
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(%error, "Producer failed to start.");
            eprintln!("error: {error}");
            return ExitCode::from(error.exit_code());
        }
    };
    let shutdown = CancellationToken::new();
    streamgate::shutdown::cancel_on_signal(shutdown.clone());
    match application.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "Producer stopped with an error.");
            ExitCode::FAILURE
        }
    }
}
