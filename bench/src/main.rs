//! `streamgate-bench`: a load generator written for Streamgate's benchmarks.
//!
//! - `subscribe` (run as a child process by `scenario`, one per ~9,500 connections, since a
//!   process may hold 20,000 files here) opens SSE connections, reports when they are
//!   connected, and on a line on stdin (or EOF) prints its measurements as JSON.
//! - `scenario NAME` starts the system under test from release binaries, drives it, and
//!   prints one JSON result and one Markdown table row.

// Shared with the test rig as a file, not a dependency: see its header. The rig uses
// parts of it the benchmark does not.
#[path = "../../tests/src/host.rs"]
#[allow(dead_code)]
mod host;
mod procs;
mod publish;
mod redis_setup;
mod scenario;
mod sse;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::io::AsyncBufReadExt;

/// Streamgate load generator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open SSE connections (used by `scenario`).
    Subscribe {
        /// Servers, comma-separated (`127.0.0.1:8080,127.0.0.1:8081`); connection i uses
        /// server i mod n.
        #[arg(long, value_delimiter = ',')]
        servers: Vec<SocketAddr>,
        /// Request path with `{topic}` for the topic name.
        #[arg(long)]
        path_template: String,
        /// Topic `n` is named `bench-{n}`; connection i subscribes to topic (offset + i) mod topics.
        #[arg(long)]
        topics: usize,
        /// First topic number.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Connections to open.
        #[arg(long)]
        connections: usize,
        /// First source address index (see `sse::source_address`).
        #[arg(long, default_value_t = 0)]
        source_offset: usize,
        /// `Last-Event-ID` to send.
        #[arg(long)]
        last_event_id: Option<String>,
        /// Streams per HTTP/2 connection (clear text, prior knowledge); 0: one HTTP/1.1
        /// connection per stream.
        #[arg(long, default_value_t = 0)]
        h2_streams: usize,
    },
    /// Run a benchmark scenario.
    Scenario {
        /// s1, s1c, s1h2, s2 to s9, s5i (the ingest stream), or p1.
        name: String,
        /// Seconds of load, where the scenario has a load phase.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Scale the connection counts (1.0 = the counts the targets are set for).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// The system under test: `streamgate`, `nchan` (s1, s1c, s3, s3i, s4, s4i, s8, s9) or `cluster` (s3, s4, s5:
        /// Streamgate on a Redis Cluster of three masters).
        #[arg(long, default_value = "streamgate")]
        system: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Subscribe {
            servers,
            path_template,
            topics,
            offset,
            connections,
            source_offset,
            last_event_id,
            h2_streams,
        } => {
            let layout = Layout { topics, offset, connections, source_offset, h2_streams };
            subscribe(servers, path_template, layout, last_event_id).await
        }
        Command::Scenario { name, duration, scale, system } => {
            scenario::run(&name, &system, duration, scale).await
        }
    }
}

/// Which streams a subscriber process opens.
struct Layout {
    topics: usize,
    offset: usize,
    connections: usize,
    source_offset: usize,
    h2_streams: usize,
}

async fn subscribe(
    servers: Vec<SocketAddr>,
    path_template: String,
    layout: Layout,
    last_event_id: Option<String>,
) -> anyhow::Result<()> {
    let Layout { topics, offset, connections, source_offset, h2_streams } = layout;
    let metrics = sse::Metrics::new();
    // Connect in waves so the listen backlog is not overrun.
    let connecting = Arc::new(tokio::sync::Semaphore::new(512));
    if h2_streams > 0 {
        anyhow::ensure!(last_event_id.is_none(), "--h2-streams does not send Last-Event-ID");
        for (n, first) in (0..connections).step_by(h2_streams).enumerate() {
            let paths = (first..connections.min(first + h2_streams))
                .map(|i| path_template.replace("{topic}", &format!("bench-{}", (offset + i) % topics)))
                .collect();
            let permit = Arc::clone(&connecting).acquire_owned().await?;
            tokio::spawn(sse::run_h2_connection(
                servers[n % servers.len()],
                sse::source_address(source_offset + first),
                paths,
                Arc::clone(&metrics),
                permit,
            ));
        }
    }
    for i in (0..connections).filter(|_| h2_streams == 0) {
        let topic = format!("bench-{}", (offset + i) % topics);
        let target = sse::Target {
            server: servers[i % servers.len()],
            path: path_template.replace("{topic}", &topic),
            source: sse::source_address(source_offset + i),
            last_event_id: last_event_id.clone(),
        };
        let permit = Arc::clone(&connecting).acquire_owned().await?;
        tokio::spawn(sse::run_connection(target, Arc::clone(&metrics), permit));
    }
    sse::wait_connected(&metrics, connections as u64, Duration::from_secs(60)).await;
    println!("connected {}", metrics.connected());
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let _ = stdin.next_line().await;
    println!("{}", serde_json::to_string(&metrics.report().await)?);
    // At once, without the runtime's shutdown: it would wait for the blocking thread that
    // reads stdin, and tens of thousands of connection tasks have nothing left to do.
    std::process::exit(0);
}
