//! The command line: `producer [serve]` and `producer publish ...`, plus the flags that
//! feed the configuration's flag layer (`--redis-url`, `--listen-addr`, `--set NAME=VALUE`).
//!
//! `publish` goes through the same validation and routing code as HTTP and the ingest
//! stream, and prints one JSON result line per event on stdout.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use streamgate::config::Sources;

use crate::http::PublishResult;
use crate::input::{Rejection, parse_event};
use crate::publisher::PublishError;
use crate::settings::{LISTEN_ADDR, ProducerConfig};
use crate::startup::{StartupError, build_publisher};

/// The exit code of a `publish` whose arguments can never be valid (like a usage error).
pub const EXIT_BAD_INPUT: u8 = 2;
/// The exit code of a `publish` that failed (Redis unreachable or refusing).
pub const EXIT_FAILED: u8 = 1;

/// `producer`: puts events into topic histories and routes them to the gateways.
#[derive(Debug, Parser)]
#[command(name = "producer", version, about)]
pub struct Cli {
    /// `--config`, `--redis-url`, `--set`.
    #[command(flatten)]
    pub config: streamgate::cli::ConfigArgs,
    /// Overrides LISTEN_ADDR.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen_addr: Option<String>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and consume the ingest stream (the default).
    Serve,
    /// Publish events from the command line and print one JSON result line per event.
    Publish(PublishArgs),
}

/// Arguments of `producer publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// The data, delivered as this text.
    #[arg(long)]
    pub data: String,
    /// The SSE event name.
    #[arg(long)]
    pub event: Option<String>,
    /// An idempotency key; with --count above 1, event i (from 1) gets KEY-i.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// How many times to publish the event.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// The pause between two events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
}

impl Cli {
    /// The configuration sources: process environment, the `--config` file, and the
    /// flags (`--set` first, so the dedicated flags win over a `--set` of the same name).
    pub fn sources(&self) -> Sources {
        self.config.sources(&[(LISTEN_ADDR.name, self.listen_addr.as_ref())])
    }
}

/// Why `producer publish` failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishCommandError {
    /// The event can never be valid.
    #[error("invalid event: {0}")]
    Invalid(#[from] Rejection),
    /// Redis is unreachable at start.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// Publishing failed.
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    /// stdout is gone.
    #[error("cannot write the result: {0}")]
    Output(#[from] std::io::Error),
}

impl PublishCommandError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            PublishCommandError::Invalid(_) => EXIT_BAD_INPUT,
            _ => EXIT_FAILED,
        }
    }
}

/// Runs `producer publish`, writing one JSON line per event to `out`.
pub async fn publish(
    config: &ProducerConfig,
    args: &PublishArgs,
    out: &mut impl Write,
) -> Result<(), PublishCommandError> {
    let key_of = |seq: u64| match &args.idempotency_key {
        Some(key) if args.count > 1 => Some(format!("{key}-{seq}")),
        key => key.clone(),
    };
    // Validate every event before publishing the first, like a batch.
    let events = (1..=args.count)
        .map(|seq| {
            parse_event(
                &config.limits,
                args.topic.clone(),
                args.data.clone(),
                args.event.clone(),
                key_of(seq),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let publisher = build_publisher(config).await?;
    for (index, event) in events.iter().enumerate() {
        if index > 0 && args.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        for published in publisher.publish(std::slice::from_ref(event)).await? {
            let line =
                serde_json::to_string(&PublishResult::from(&published)).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
    Ok(())
}
