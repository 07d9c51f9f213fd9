//! Configuration through the real binary: every layer overrides the one below, and a bad
//! value stops the process with one line and exit code 2.

use std::io::Write as _;
use std::process::Command;

use streamgate_tests::binaries::workspace_binary;

/// Runs the gateway with a file, an environment and flags, and returns (exit code, stderr).
fn run_gateway(file: Option<&str>, env: Option<&str>, flag: Option<&str>) -> (i32, String) {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    let mut command = Command::new(workspace_binary("gateway"));
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    // An address nothing listens on: if configuration passed, start-up would fail on Redis.
    command.env("REDIS_URL", "redis://127.0.0.1:1");
    if let Some(value) = file {
        writeln!(config, "heartbeat_interval = \"{value}\"").unwrap();
        command.arg("--config").arg(config.path());
    }
    if let Some(value) = env {
        command.env("HEARTBEAT_INTERVAL", value);
    }
    if let Some(value) = flag {
        command.arg("--set").arg(format!("HEARTBEAT_INTERVAL={value}"));
    }
    let output = command.output().expect("run gateway");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn bad_value_stops_with_one_line_naming_setting_value_and_what_is_allowed() {
    let (code, stderr) = run_gateway(None, Some("soon"), None);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: invalid HEARTBEAT_INTERVAL=\"soon\": expected a duration from 1s to 5m"
    );
}

#[test]
fn file_overrides_defaults_env_overrides_file_and_flags_override_env() {
    // Each layer carries a different invalid value; the error names the winning one.
    let (code, stderr) = run_gateway(Some("from-file"), None, None);
    assert_eq!(code, 2);
    assert!(stderr.contains("\"from-file\""), "{stderr}");
    let (_, stderr) = run_gateway(Some("from-file"), Some("from-env"), None);
    assert!(stderr.contains("\"from-env\""), "{stderr}");
    let (_, stderr) = run_gateway(Some("from-file"), Some("from-env"), Some("from-flag"));
    assert!(stderr.contains("\"from-flag\""), "{stderr}");
    // With valid values everywhere, configuration passes and start-up fails on Redis
    // instead (exit code 1): the defaults below the file were valid all along.
    let (code, stderr) = run_gateway(Some("3s"), Some("4s"), Some("5s"));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot use redis"), "{stderr}");
}

#[test]
fn unknown_key_in_the_configuration_file_is_refused() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    writeln!(config, "heartbeat_intervall = \"5s\"").unwrap();
    let output =
        Command::new(workspace_binary("gateway")).arg("--config").arg(config.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown setting \"heartbeat_intervall\""));
}
