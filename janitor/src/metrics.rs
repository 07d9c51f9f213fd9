//! The figures of a sweep as Prometheus metrics, for a batch job: written as a textfile
//! for node_exporter's textfile collector (`--metrics-file`), and/or pushed to a
//! Pushgateway (`--pushgateway-url`, see [`crate::push`]).
//!
//! A janitor run by cron lives for one sweep, so counters would restart at zero every run:
//! every figure is a gauge of the *last* sweep, plus the time it finished
//! (`streamgate_janitor_last_success_timestamp_seconds`), which is what an alert on a
//! janitor that stopped sweeping watches. A failed sweep writes and pushes nothing, so the
//! timestamp keeps the last success.
//!
//! The text is the Prometheus text format 0.0.4 (what the textfile collector and the
//! Pushgateway read), written here by hand: a dozen lines do not need a metrics library.
//! The file is replaced atomically (written to a temporary file in the same directory,
//! then renamed over it), so the collector never reads half a file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sweep::SweepReport;

/// Every metric name the janitor exports, with its help text.
pub const METRICS: [(&str, &str); 7] = [
    (
        "streamgate_janitor_last_sweep_removals",
        "Items the last sweep removed (in a dry run: would remove), by kind.",
    ),
    ("streamgate_janitor_last_sweep_duration_seconds", "How long the last sweep took."),
    (
        "streamgate_janitor_last_sweep_claims_lapsed",
        "Dead gateways the last sweep gave up on because its claim lapsed.",
    ),
    (
        "streamgate_janitor_last_sweep_keys_examined",
        "Keys the last sweep examined (bounded by SWEEP_BUDGET).",
    ),
    ("streamgate_janitor_last_sweep_malformed_keys", "Malformed keys the last sweep found and left alone."),
    (
        "streamgate_janitor_last_sweep_dry_run",
        "1 if the last sweep was a dry run (it changed nothing), else 0.",
    ),
    (
        "streamgate_janitor_last_success_timestamp_seconds",
        "When the last successful sweep finished (Unix time).",
    ),
];

/// The Prometheus text of `report`, a sweep that finished at `finished_at`.
pub fn render(report: &SweepReport, finished_at: SystemTime) -> String {
    let removals = [
        ("dead_instances", report.dead_instances),
        ("membership_fields", report.membership_fields_removed),
        ("instance_streams", report.instance_streams_deleted),
        ("topic_entries", report.topic_entries_trimmed),
        ("topic_streams", report.topic_streams_deleted),
        ("group_hashes", report.group_hashes_deleted),
    ];
    let finished_at = finished_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let values: [Vec<(Option<&str>, f64)>; 7] = [
        removals.iter().map(|(kind, n)| (Some(*kind), *n as f64)).collect(),
        vec![(None, report.duration_ms as f64 / 1000.0)],
        vec![(None, report.claims_lapsed as f64)],
        vec![(None, report.keys_examined as f64)],
        vec![(None, report.malformed_keys_skipped as f64)],
        vec![(None, if report.dry_run { 1.0 } else { 0.0 })],
        vec![(None, finished_at)],
    ];
    let mut text = String::new();
    for ((name, help), samples) in METRICS.iter().zip(values) {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} gauge");
        for (kind, value) in samples {
            match kind {
                Some(kind) => {
                    let _ = writeln!(text, "{name}{{kind=\"{kind}\"}} {value}");
                }
                None => {
                    let _ = writeln!(text, "{name} {value}");
                }
            }
        }
    }
    text
}

/// Replaces the file at `path` with `text` atomically: a temporary file beside it (not
/// ending in `.prom`, so the collector ignores it), then a rename.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temporary = PathBuf::from(path);
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    temporary.set_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_figure_is_a_gauge_with_help_and_removals_are_by_kind() {
        let report = SweepReport {
            dead_instances: 1,
            membership_fields_removed: 2,
            topic_entries_trimmed: 30,
            claims_lapsed: 1,
            keys_examined: 9,
            duration_ms: 1500,
            ..SweepReport::default()
        };
        let text = render(&report, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        for (name, _) in METRICS {
            assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{name}: {text}");
        }
        for line in [
            "streamgate_janitor_last_sweep_removals{kind=\"dead_instances\"} 1\n",
            "streamgate_janitor_last_sweep_removals{kind=\"membership_fields\"} 2\n",
            "streamgate_janitor_last_sweep_removals{kind=\"topic_entries\"} 30\n",
            "streamgate_janitor_last_sweep_removals{kind=\"group_hashes\"} 0\n",
            "streamgate_janitor_last_sweep_duration_seconds 1.5\n",
            "streamgate_janitor_last_sweep_claims_lapsed 1\n",
            "streamgate_janitor_last_sweep_dry_run 0\n",
            "streamgate_janitor_last_success_timestamp_seconds 1700000000\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from {text}");
        }
    }
}
