//! The `gateway` binary: parses flags, loads configuration, starts telemetry and serves.

use std::process::ExitCode;
use streamgate::config::ServiceConfig as _;

use clap::Parser;
use gateway::{Application, GatewayConfig};
use streamgate::settings::bad_config;
use tokio_util::sync::CancellationToken;

/// jemalloc, with background threads and a one-second decay (`.cargo/config.toml`), gives
/// freed memory back to the system while the gateway is idle: after a connection storm
/// closes (S1) and after subscribers have read everything (`gateway_memory` test). glibc's
/// malloc kept the freed event frames in its heaps; mimalloc returned pages only on later
/// allocations, which an idle gateway does not make (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Streamgate gateway: Server-Sent Events with resume on any instance.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// `--config`, `--redis-url`, `--set`.
    #[command(flatten)]
    config: streamgate::cli::ConfigArgs,
    /// Listen address (LISTEN_ADDR).
    #[arg(long)]
    listen_addr: Option<String>,
    /// Instance id (INSTANCE_ID).
    #[arg(long)]
    instance_id: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = cli
        .config
        .sources(&[("LISTEN_ADDR", cli.listen_addr.as_ref()), ("INSTANCE_ID", cli.instance_id.as_ref())]);
    let config = match GatewayConfig::load(&sources) {
        Ok(config) => config,
        Err(error) => return bad_config(error),
    };
    let telemetry =
        match streamgate::telemetry::init("gateway", config.common.log_format, &config.common.traces) {
            Ok(guard) => guard,
            Err(error) => return bad_config(error),
        };
    let code = serve(config).await;
    telemetry.shutdown();
    code
}

async fn serve(config: GatewayConfig) -> ExitCode {
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(%error, "Gateway failed to start.");
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    streamgate::shutdown::cancel_on_signal(stop.clone());
    match application.run_until_stopped(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "Gateway stopped with an error.");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
