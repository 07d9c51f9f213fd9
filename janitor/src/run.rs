//! Running the janitor: one sweep (for cron) or a sweep every interval (for compose), each
//! printing its [`SweepReport`] as one JSON line.
//!
//! A single run fails — and the binary exits non-zero with one line — when Redis cannot be
//! reached or the sweep fails. A loop never exits on a failed sweep: it logs the error and
//! tries again at the next interval, until the shutdown token fires (SIGTERM, Ctrl-C); a
//! sweep in progress is finished first, so its claims are released.
//!
//! After each successful sweep its figures go to the metrics textfile and the Pushgateway
//! when asked ([`MetricsOutput`]). A single run whose figures cannot be written or pushed
//! exits non-zero after printing its report (the sweep itself stays done); a loop logs it.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use streamgate::redis::Redis;
use streamgate::redis::{RedisError, redacted_url};
use tokio_util::sync::CancellationToken;

use crate::settings::JanitorConfig;
use crate::sweep::{SweepError, SweepReport, Sweeper};

/// How the janitor runs, from its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Report what a sweep would do and change nothing.
    pub dry_run: bool,
    /// Sweep every interval until stopped; `None` for one sweep.
    pub interval: Option<Duration>,
    /// Where each sweep's figures go, besides the JSON line.
    pub metrics: MetricsOutput,
}

/// Where a sweep's figures go as Prometheus metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsOutput {
    /// `--metrics-file`: a textfile for node_exporter's textfile collector.
    pub file: Option<PathBuf>,
    /// `--pushgateway-url`: a Pushgateway to push to.
    pub pushgateway: Option<url::Url>,
}

impl MetricsOutput {
    /// Writes and pushes the figures of `report`, as asked; both are tried even if the
    /// first fails.
    pub async fn export(&self, report: &SweepReport) -> Result<(), MetricsError> {
        if self.file.is_none() && self.pushgateway.is_none() {
            return Ok(());
        }
        let text = crate::metrics::render(report, SystemTime::now());
        let written = match &self.file {
            Some(path) => crate::metrics::write_file(path, &text)
                .map_err(|source| MetricsError::File { path: path.clone(), source }),
            None => Ok(()),
        };
        let pushed = match &self.pushgateway {
            Some(url) => crate::push::push(url, text).await.map_err(MetricsError::Push),
            None => Ok(()),
        };
        written.and(pushed)
    }
}

/// Why a sweep's figures could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The textfile could not be written.
    #[error("cannot write the metrics file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The push failed.
    #[error(transparent)]
    Push(#[from] crate::push::PushError),
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Redis could not be reached (or its pool not built).
    #[error("cannot reach redis at {url}: {source}")]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// The cause.
        source: RedisError,
    },
    /// The sweep failed part-way; what it did until then stays done.
    #[error("sweep failed: {0}")]
    Sweep(#[from] SweepError),
    /// The report could not be written to stdout.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
    /// The sweep's figures could not be written or pushed (the sweep is done).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Runs one sweep, or sweeps every `options.interval` until `shutdown` fires, writing each
/// report as one JSON line to `out`.
pub async fn run(
    config: &JanitorConfig,
    options: RunOptions,
    out: &mut (impl Write + Send),
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let url = &config.common.redis_url;
    let unreachable = |source| RunError::Unreachable { url: redacted_url(url), source };
    let pool = Redis::new(
        url,
        &config.common.redis_topology,
        config.common.redis_pool_size,
        streamgate::redis::POOLED_RESPONSE_TIMEOUT,
    )
    .map_err(unreachable)?;
    let sweeper = Sweeper::new(pool.clone(), config.common.keys.clone(), config.sweep.clone());
    let Some(interval) = options.interval else {
        streamgate::redis::check_ready(&pool).await.map_err(unreachable)?;
        let report = sweeper.sweep(options.dry_run).await?;
        write_report(out, &report)?;
        return Ok(options.metrics.export(&report).await?);
    };

    let mut checked = false;
    loop {
        if !checked {
            checked = check(&pool, url).await;
        }
        if checked {
            // The sweep's span already logs its error.
            if let Ok(report) = sweeper.sweep(options.dry_run).await {
                write_report(out, &report)?;
                if let Err(error) = options.metrics.export(&report).await {
                    tracing::error!(%error, "Could not export the sweep's metrics; trying again after the next sweep.");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// The start-up check of a loop: logs instead of failing, since Redis may come up later.
async fn check(pool: &Redis, url: &str) -> bool {
    match streamgate::redis::check_ready(pool).await {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(%error, url = redacted_url(url), "Cannot reach Redis; retrying at the next interval.");
            false
        }
    }
}

/// Writes one report as one JSON line and flushes it, so a reader sees each sweep at once.
pub fn write_report(out: &mut impl Write, report: &SweepReport) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, report)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_one_json_line_with_every_field() {
        let mut out = Vec::new();
        let report = SweepReport { dead_instances: 2, dry_run: true, ..SweepReport::default() };
        write_report(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in [
            "dead_instances",
            "membership_fields_removed",
            "instance_streams_deleted",
            "topic_entries_trimmed",
            "topic_streams_deleted",
            "group_hashes_deleted",
            "malformed_keys_skipped",
            "claims_lapsed",
            "keys_examined",
            "budget_exhausted",
            "full_scan",
            "dry_run",
            "duration_ms",
        ] {
            assert!(value.get(field).is_some(), "{field} missing from {text}");
        }
        assert_eq!(value["dead_instances"], 2);
        assert_eq!(value["dry_run"], true);
    }
}
