//! The producer refuses, at start-up, settings that silently defeat each other: the real
//! binary exits with code 2 and one line naming both settings and their values.

use streamgate_tests::producer_app::producer_binary;

/// Runs `producer serve` with `settings` and returns its exit code and stderr. It never
/// gets as far as Redis: the configuration is checked first.
async fn serve_with(settings: &[(&str, &str)]) -> (Option<i32>, String) {
    let binary = tokio::task::spawn_blocking(producer_binary).await.unwrap();
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("serve")
        .env_remove(streamgate::config::CONFIG_FILE_ENV)
        .env("REDIS_URL", "redis://127.0.0.1:1");
    for (name, value) in settings {
        command.env(name, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the producer exits")
        .unwrap();
    (output.status.code(), String::from_utf8(output.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_defeat_each_other_stop_the_producer_with_one_line_naming_both() {
    for (settings, named) in [
        (
            &[("DEDUP_WINDOW", "2h"), ("HISTORY_MAX_AGE", "1h")][..],
            ["DEDUP_WINDOW=\"2h\"", "HISTORY_MAX_AGE=\"1h\""],
        ),
        (
            &[("DEDUP_WINDOW", "1m"), ("INGEST_CLAIM_IDLE", "45s")][..],
            ["DEDUP_WINDOW=\"1m\"", "INGEST_CLAIM_IDLE=\"45s\""],
        ),
        (
            &[("INGEST_STREAM", "in"), ("INGEST_DEAD_LETTER", "in")][..],
            ["INGEST_DEAD_LETTER=\"in\"", "INGEST_STREAM=\"in\""],
        ),
    ] {
        let (code, stderr) = serve_with(settings).await;

        assert_eq!(code, Some(2), "{settings:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        for name in named {
            assert!(stderr.contains(name), "{settings:?}: {stderr} should name {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_fit_together_pass_the_check() {
    // Unlimited retention, or a window inside it; no ingest, no claim rule.
    for settings in [
        &[("DEDUP_WINDOW", "7d"), ("HISTORY_MAX_AGE", "0")][..],
        &[("DEDUP_WINDOW", "1h"), ("HISTORY_MAX_AGE", "1h")][..],
        &[("DEDUP_WINDOW", "1s"), ("INGEST_ENABLED", "false")][..],
    ] {
        let (code, stderr) = serve_with(settings).await;

        // Past the configuration: it fails on the unreachable Redis instead.
        assert_eq!(code, Some(1), "{settings:?}: {stderr}");
        assert!(stderr.contains("cannot reach redis"), "{settings:?}: {stderr}");
    }
}
