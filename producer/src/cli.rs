//! The command line: `producer [serve]` and `producer publish ...`, plus the flags that
//! feed the configuration's flag layer (`--redis-url`, `--listen-addr`, `--set NAME=VALUE`).
//!
//! `publish` goes through the same validation and routing code as HTTP and the ingest
//! stream, and prints one JSON result line per event on stdout.
//!
//! It is safe to retry by construction: every event carries an idempotency key (the one
//! given, or a random 128-bit one generated here), and a failure that may clear up — Redis
//! unavailable (nothing written) or silent (outcome unknown) — is retried with backoff and
//! the same key for up to `--retry-for`, which must stay below `DEDUP_WINDOW` so a retry
//! always finds the record of an earlier attempt that did write.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use streamgate::config::{Sources, parse_duration};
use streamgate::redis::Backoff;

use crate::http::PublishResult;
use crate::input::{Rejection, parse_event};
use crate::publisher::{Publish, PublishError, Publisher};
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
    /// The data, delivered as this text; `{seq}` in it becomes the event's number (1, 2, …
    /// with --count), so subscribers can check the sequence.
    #[arg(long)]
    pub data: String,
    /// The SSE event name.
    #[arg(long)]
    pub event: Option<String>,
    /// An idempotency key; with --count above 1, event i (from 1) gets KEY-i. Without
    /// it, each event gets a random one, so retries never duplicate it.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// How many times to publish the event.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// The pause between two events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// How long to retry an event while Redis is unavailable or does not answer (0: no
    /// retries). Must be shorter than DEDUP_WINDOW.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_retry_for)]
    pub retry_for: Duration,
}

fn parse_retry_for(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| "expected a duration such as 0s, 30s or 2m".to_owned())
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
    /// `--retry-for` would let a retry outlive the idempotency record of an earlier attempt.
    #[error(
        "invalid --retry-for={retry_for:?}: expected less than DEDUP_WINDOW={dedup_window:?}, \
         or a retry could publish an event twice"
    )]
    RetryOutlivesDedup {
        /// `--retry-for`.
        retry_for: Duration,
        /// `DEDUP_WINDOW`.
        dedup_window: Duration,
    },
    /// Redis is unreachable at start.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// Publishing failed, for good or after retrying for `--retry-for`.
    #[error("publish failed after {attempts} attempt(s): {error}{}", hint(error, key))]
    Publish {
        /// The last failure.
        error: PublishError,
        /// How many attempts were made.
        attempts: u32,
        /// The event's idempotency key, to retry safely by hand.
        key: Option<String>,
    },
    /// stdout is gone.
    #[error("cannot write the result: {0}")]
    Output(#[from] std::io::Error),
}

/// How to retry by hand an event whose outcome is unknown.
fn hint(error: &PublishError, key: &Option<String>) -> String {
    match (error, key) {
        (PublishError::OutcomeUnknown(_), Some(key)) => {
            format!(" (it may be in history; retry with --idempotency-key {key} to be safe)")
        }
        _ => String::new(),
    }
}

impl PublishCommandError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            PublishCommandError::Invalid(_) | PublishCommandError::RetryOutlivesDedup { .. } => {
                EXIT_BAD_INPUT
            }
            _ => EXIT_FAILED,
        }
    }
}

/// A random 128-bit idempotency key, for an event given none.
fn generated_key() -> String {
    format!("cli-{:032x}", fastrand::u128(..))
}

/// Runs `producer publish`, writing one JSON line per event to `out`.
pub async fn publish(
    config: &ProducerConfig,
    args: &PublishArgs,
    out: &mut impl Write,
) -> Result<(), PublishCommandError> {
    if args.retry_for >= config.publisher.dedup_window {
        return Err(PublishCommandError::RetryOutlivesDedup {
            retry_for: args.retry_for,
            dedup_window: config.publisher.dedup_window,
        });
    }
    let key_of = |seq: u64| match &args.idempotency_key {
        Some(key) if args.count > 1 => format!("{key}-{seq}"),
        Some(key) => key.clone(),
        None => generated_key(),
    };
    // Validate every event before publishing the first, like a batch.
    let events = (1..=args.count)
        .map(|seq| {
            parse_event(
                &config.limits,
                args.topic.clone(),
                args.data.replace("{seq}", &seq.to_string()),
                args.event.clone(),
                Some(key_of(seq)),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let publisher = build_publisher(config).await?;
    for (index, event) in events.iter().enumerate() {
        if index > 0 && args.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        let mut result = PublishResult::from(&publish_with_retries(&publisher, event, args.retry_for).await?);
        // A key generated here is new to Redis: finding it already there means an earlier
        // attempt of this command wrote the event, which is no duplicate for the user.
        if args.idempotency_key.is_none() {
            result.duplicate = false;
        }
        let line = serde_json::to_string(&result).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

/// Publishes one event, retrying failures that may clear up with the same idempotency key,
/// with backoff, for up to `retry_for`.
async fn publish_with_retries(
    publisher: &Publisher,
    event: &Publish,
    retry_for: Duration,
) -> Result<crate::publisher::Published, PublishCommandError> {
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut backoff = Backoff::redis();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match publisher.publish(std::slice::from_ref(event)).await {
            Ok(mut published) if published.len() == 1 => {
                if attempts > 1 {
                    tracing::info!(attempts, "Published after retrying.");
                }
                return Ok(published.remove(0));
            }
            Ok(published) => {
                PublishError::UnexpectedReply(format!("{} results for one event", published.len()))
            }
            Err(error) => error,
        };
        let delay = backoff.next_delay();
        if !error.is_retryable() || tokio::time::Instant::now() + delay > deadline {
            return Err(PublishCommandError::Publish { error, attempts, key: event.idempotency_key.clone() });
        }
        tracing::warn!(%error, attempts, retry_in_ms = delay.as_millis() as u64, "Publish failed; retrying with the same idempotency key.");
        tokio::time::sleep(delay).await;
    }
}
