//! The `janitor` binary: parses flags, loads configuration, starts telemetry and runs one
//! sweep (or a loop of them), printing one JSON line per sweep on stdout.
//!
//! Exit codes: 0 success; 1 Redis unreachable or the sweep failed; 2 bad configuration.
//! Each failure is one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use streamgate::config::ServiceConfig as _;

use clap::Parser;
use janitor::run::MetricsOutput;
use janitor::{JanitorConfig, RunOptions};
use streamgate::config::parse_duration;
use streamgate::settings::bad_config;
use tokio_util::sync::CancellationToken;

/// Streamgate janitor: removes dead gateways' state and trims stale histories.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// `--config`, `--redis-url`, `--set`.
    #[command(flatten)]
    config: streamgate::cli::ConfigArgs,
    /// Sweep every interval (such as 60s) until SIGTERM, instead of once.
    #[arg(long, value_parser = parse_interval)]
    interval: Option<Duration>,
    /// Report what a sweep would do; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// After each sweep, write its figures to this file (Prometheus text, for node_exporter's
    /// textfile collector), replacing it atomically.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// After each sweep, push its figures to this Prometheus Pushgateway (PUT
    /// <URL>/metrics/job/streamgate_janitor).
    #[arg(long, value_name = "URL", value_parser = janitor::push::parse_url)]
    pushgateway_url: Option<url::Url>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .filter(|interval| *interval >= Duration::from_secs(1))
        .ok_or_else(|| "expected a duration of at least 1s, such as 60s or 5m".to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match JanitorConfig::load(&cli.config.sources(&[])) {
        Ok(config) => config,
        Err(error) => return bad_config(error),
    };
    let telemetry =
        match streamgate::telemetry::init("janitor", config.common.log_format, &config.common.traces) {
            Ok(guard) => guard,
            Err(error) => return bad_config(error),
        };
    let shutdown = CancellationToken::new();
    if cli.interval.is_some() {
        streamgate::shutdown::cancel_on_signal(shutdown.clone());
    }
    let metrics = MetricsOutput { file: cli.metrics_file, pushgateway: cli.pushgateway_url };
    let options = RunOptions { dry_run: cli.dry_run, interval: cli.interval, metrics };
    let code = match janitor::run(&config, options, &mut std::io::stdout(), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
