//! The `gateway` binary: parses flags, loads configuration, starts telemetry and serves.

use std::path::PathBuf;

use clap::Parser;
use gateway::{Application, GatewayConfig};
use streamgate::config::Sources;
use streamgate::settings::or_exit;
use tokio_util::sync::CancellationToken;

/// Streamgate gateway: Server-Sent Events with resume on any instance.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (also STREAMGATE_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (LISTEN_ADDR).
    #[arg(long)]
    listen_addr: Option<String>,
    /// Redis URL (REDIS_URL).
    #[arg(long)]
    redis_url: Option<String>,
    /// Instance id (INSTANCE_ID).
    #[arg(long)]
    instance_id: Option<String>,
    /// Any setting, as NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_pair)]
    set: Vec<(String, String)>,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected NAME=VALUE".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut flags = cli.set;
    let named =
        [("LISTEN_ADDR", cli.listen_addr), ("REDIS_URL", cli.redis_url), ("INSTANCE_ID", cli.instance_id)];
    for (name, value) in named {
        if let Some(value) = value {
            flags.push((name.to_owned(), value));
        }
    }
    let config = or_exit(GatewayConfig::load(&Sources::from_process(cli.config, flags)));
    let telemetry = match streamgate::telemetry::init("gateway", config.common.log_format) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(streamgate::config::EXIT_BAD_CONFIG);
        }
    };
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(%error, "Gateway failed to start.");
            eprintln!("error: {error}");
            telemetry.shutdown();
            std::process::exit(1);
        }
    };
    let stop = CancellationToken::new();
    streamgate::shutdown::cancel_on_signal(stop.clone());
    let result = application.run_until_stopped(stop).await;
    telemetry.shutdown();
    Ok(result?)
}
