//! What the services' Prometheus metrics have in common: the timing of Redis commands.
//!
//! Each service (gateway, producer) keeps its own registry, one per instance, so tests can
//! run several in one process. Here is only the pair of families every service that talks
//! to Redis exports: `redis_command_duration_seconds{command}` and
//! `redis_command_errors_total{command}`, where `command` is one of a small fixed set of
//! names the service defines (`history_read`, `append`, ...), never a key or a topic.

use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// The label set of a Redis command's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CommandLabels {
    /// One of the service's fixed command names.
    pub command: &'static str,
}

/// Latency buckets of a Redis round trip: 100 µs to ~3.3 s, doubling.
fn command_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Registers `metric` in `registry` as `name` (under the registry's prefix) with `help`, and
/// returns it: each metric of a service is built by one call that names and describes it.
pub fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Latency and errors of a service's Redis commands, by command name.
#[derive(Debug, Clone)]
pub struct RedisCommandMetrics {
    duration: Family<CommandLabels, Histogram, fn() -> Histogram>,
    errors: Family<CommandLabels, Counter>,
}

impl RedisCommandMetrics {
    /// Registers both families in `registry` (under its prefix), with an error count of
    /// zero for each of `commands` (so a rate of errors exists before the first one).
    pub fn register(registry: &mut Registry, commands: &[&'static str]) -> RedisCommandMetrics {
        let metrics = RedisCommandMetrics {
            duration: registered(
                registry,
                "redis_command_duration_seconds",
                "Time from sending a Redis command (script, pipeline) to its answer or failure, by command",
                Family::new_with_constructor(command_histogram as fn() -> Histogram),
            ),
            errors: registered(
                registry,
                "redis_command_errors",
                "Redis commands that failed (no connection, an error reply, no answer), by command",
                Family::default(),
            ),
        };
        for command in commands {
            let _ = metrics.errors.get_or_create(&CommandLabels { command });
        }
        metrics
    }

    /// Runs `command` (one round trip, connection checkout included), observing its
    /// duration under `name`, and counting it as an error when it fails.
    pub async fn time<T, E>(
        &self,
        name: &'static str,
        command: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = command.await;
        let labels = CommandLabels { command: name };
        self.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.error(name);
        }
        result
    }

    /// Counts one failure of `name` whose duration is not observed (a blocking read, whose
    /// duration is its wait).
    pub fn error(&self, name: &'static str) {
        self.errors.get_or_create(&CommandLabels { command: name }).inc();
    }
}
