//! The janitor's figures as Prometheus metrics: `--metrics-file` (node_exporter's textfile
//! collector, replaced atomically) and `--pushgateway-url` (a `PUT` to a real HTTP listener
//! in the test, which records what it receives).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::any;
use streamgate_tests::redis_server::{RedisServer, unique_prefix};

use super::support::{fabricate_dead_instance, keys, run_janitor};

/// The value of the sample named exactly `series` in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test]
async fn the_metrics_file_holds_the_last_sweeps_figures_and_is_replaced_whole() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("janitor-textfile");
    let mut conn = redis.client().await;
    fabricate_dead_instance(&mut conn, &keys(&prefix), "gw-dead", &["a", "b"]).await;
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("streamgate_janitor.prom");
    let args = ["--metrics-file", file.to_str().unwrap()];

    let before = now_seconds();
    run_janitor(&redis.url(), &prefix, &args, &[]).await.report();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(&text, r#"streamgate_janitor_last_sweep_removals{kind="dead_instances"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"streamgate_janitor_last_sweep_removals{kind="membership_fields"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(&text, "streamgate_janitor_last_sweep_claims_lapsed"), Some(0.0), "{text}");
    assert!(sample(&text, "streamgate_janitor_last_sweep_duration_seconds").is_some(), "{text}");
    let finished = sample(&text, "streamgate_janitor_last_success_timestamp_seconds").unwrap();
    assert!(finished >= before.floor() && finished <= now_seconds() + 1.0, "{finished}: {text}");

    // The next sweep finds nothing to remove: the file says so, and nothing else is left
    // in the directory (the temporary file was renamed over it).
    run_janitor(&redis.url(), &prefix, &args, &[]).await.report();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(&text, r#"streamgate_janitor_last_sweep_removals{kind="dead_instances"}"#),
        Some(0.0),
        "{text}"
    );
    let names: Vec<_> =
        std::fs::read_dir(directory.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["streamgate_janitor.prom"]);
}

/// What the fake Pushgateway received: method, path, content type, body.
type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A Pushgateway stand-in on 127.0.0.1: records every request; answers 500 under
/// `/broken`, 200 elsewhere.
async fn fake_pushgateway() -> (u16, Received) {
    async fn record(State(received): State<Received>, request: Request) -> StatusCode {
        let (parts, body) = request.into_parts();
        let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let content_type = parts.headers.get("content-type").map_or("", |v| v.to_str().unwrap()).to_owned();
        let path = parts.uri.path().to_owned();
        let broken = path.starts_with("/broken");
        received.lock().unwrap().push((
            parts.method.to_string(),
            path,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        ));
        if broken { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
    }
    let received = Received::default();
    let app = Router::new().fallback(any(record)).with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

#[tokio::test]
async fn the_figures_are_put_to_the_pushgateway_and_a_failed_push_fails_the_run_after_the_report() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("janitor-push");
    let mut conn = redis.client().await;
    fabricate_dead_instance(&mut conn, &keys(&prefix), "gw-dead", &["a"]).await;
    let (port, received) = fake_pushgateway().await;

    let url = format!("http://127.0.0.1:{port}/ops");
    run_janitor(&redis.url(), &prefix, &["--pushgateway-url", &url], &[]).await.report();
    let pushes = received.lock().unwrap().clone();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let (method, path, content_type, body) = &pushes[0];
    assert_eq!((method.as_str(), path.as_str()), ("PUT", "/ops/metrics/job/streamgate_janitor"));
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert_eq!(
        sample(body, r#"streamgate_janitor_last_sweep_removals{kind="dead_instances"}"#),
        Some(1.0),
        "{body}"
    );
    assert!(body.contains("# TYPE streamgate_janitor_last_success_timestamp_seconds gauge\n"), "{body}");

    let broken = format!("http://127.0.0.1:{port}/broken");
    let run = run_janitor(&redis.url(), &prefix, &["--pushgateway-url", &broken], &[]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.stdout.lines().count(), 1, "the sweep's report is printed all the same: {run:#?}");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: cannot push metrics to http://127.0.0.1:"), "{run:#?}");
    assert!(last.contains("500"), "{run:#?}");

    let refused = run_janitor(&redis.url(), &prefix, &["--pushgateway-url", "ftp://somewhere"], &[]).await;
    assert_eq!(refused.code, Some(2), "a bad URL is a usage error: {refused:#?}");
}
