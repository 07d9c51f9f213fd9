//! The metrics the services export, the README's table of them and the Grafana dashboard
//! agree: every metric a running gateway, a running producer (after some traffic) or the
//! janitor's textfile exports has a row in the README with its type, every row names an
//! exported metric, and every `streamgate_*` name in a dashboard query is exported.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use streamgate_tests::world::TestWorld;

use crate::gateway_metrics::scrape;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/streamgate.json");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
/// The suffixes of a histogram's series.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Metric name → type, from the `# TYPE` lines of an exposition (OpenMetrics or the
/// Prometheus text format): a counter is named with its `_total` samples' name.
fn declared(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            let name = match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_owned(),
            };
            Some((name, kind.to_owned()))
        })
        .collect()
}

/// Everything exported: a gateway and a producer after an event went through both, and
/// the janitor's textfile.
async fn exported() -> BTreeMap<String, String> {
    let world = TestWorld::start("metrics-catalog");
    let gateway = world.gateway(&[]).await;
    let producer = world.producer(&[("ADMIN_LISTEN_ADDR", "127.0.0.1:0"), ("INGEST_ENABLED", "true")]).await;
    let mut subscriber = gateway.subscribe(&["t"], None).await;
    assert_eq!(producer.publish(&json!({"topic": "t", "data": "x"})).await.status(), 200);
    subscriber.take(1, Duration::from_secs(10)).await;

    let mut names = declared(&scrape(&gateway.admin_url("/metrics")).await);
    names.extend(declared(&scrape(&producer.admin_url("/metrics")).await));
    let janitor = janitor::metrics::render(&janitor::SweepReport::default(), SystemTime::now());
    names.extend(declared(&janitor));
    assert!(names.len() > 30, "too few metrics exported: {names:?}");
    producer.shutdown().await;
    names
}

/// Metric name → type, from the README's table of metrics.
fn documented() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(README).unwrap();
    let section = readme.split("\n## Metrics\n").nth(1).expect("a Metrics section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix("| `")?.split('|');
            let name = cells.next()?.trim().strip_suffix('`')?;
            let kind = cells.next()?.trim();
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// Every `expr` in the dashboard (panels and rows, however nested).
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => expressions(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, out)),
        _ => {}
    }
}

/// The `streamgate_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("streamgate_") {
        let word: String =
            rest[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[start + word.len()..];
        names.push(word);
    }
    names
}

/// Whether `name`, as a query names it, is a series of an exported metric: the metric
/// itself, or a histogram's `_bucket`, `_sum` or `_count`.
fn is_exported(name: &str, exported: &BTreeMap<String, String>) -> bool {
    exported.contains_key(name)
        || HISTOGRAM_SUFFIXES.iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| exported.get(base).is_some_and(|kind| kind == "histogram"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_table_lists_exactly_the_exported_metrics_with_their_types() {
    let exported = exported().await;
    let documented = documented();
    let undocumented: Vec<_> = exported.iter().filter(|(name, _)| !documented.contains_key(*name)).collect();
    let not_exported: Vec<_> = documented.iter().filter(|(name, _)| !exported.contains_key(*name)).collect();
    assert!(undocumented.is_empty(), "exported but not in README's table: {undocumented:?}");
    assert!(not_exported.is_empty(), "in README's table but not exported: {not_exported:?}");
    assert_eq!(documented, exported, "README's types differ from the exported ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut queries = Vec::new();
    expressions(&dashboard, &mut queries);
    let names: Vec<String> = queries.iter().flat_map(|expr| metric_names(expr)).collect();
    assert!(names.len() >= 20, "the dashboard queries too little: {queries:?}");
    let exported = exported().await;
    let unknown: Vec<&String> = names.iter().filter(|name| !is_exported(name, &exported)).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics nobody exports: {unknown:?}");
}

#[test]
fn names_are_found_in_promql_and_histogram_series_map_to_their_histogram() {
    let expr = "histogram_quantile(0.99, sum by (le) (rate(streamgate_gateway_x_seconds_bucket[5m]))) \
                / sum(streamgate_producer_y_total)";
    assert_eq!(metric_names(expr), ["streamgate_gateway_x_seconds_bucket", "streamgate_producer_y_total"]);
    let exported = BTreeMap::from([
        ("streamgate_gateway_x_seconds".to_owned(), "histogram".to_owned()),
        ("streamgate_g".to_owned(), "gauge".to_owned()),
    ]);
    assert!(is_exported("streamgate_gateway_x_seconds_bucket", &exported));
    assert!(is_exported("streamgate_gateway_x_seconds_count", &exported));
    assert!(!is_exported("streamgate_g_count", &exported), "a gauge has no _count series");
    assert!(!is_exported("streamgate_gateway_nothing_total", &exported));
}
