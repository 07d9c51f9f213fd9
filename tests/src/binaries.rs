//! Paths of the workspace's binaries, for tests that run the real processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The path of workspace binary `name` (`gateway`, `producer`, `janitor`), built once per
/// test process with `cargo build -p NAME --bin NAME` (a no-op when it is up to date).
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().expect("binaries lock");
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // <target>/<profile>/deps/it-<hash> → <target>/<profile>/<name>
    let test_binary = std::env::current_exe().expect("current test executable");
    let profile_dir = test_binary.parent().and_then(|deps| deps.parent()).expect("target profile directory");
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", name, "--bin", name]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.current_dir(&workspace).status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {name} failed: {status}");
    let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "no {name} binary at {}", binary.display());
    built.insert(name.to_owned(), binary.clone());
    binary
}

/// Runs the `janitor` binary once with `env` (no configuration file, `RUST_LOG=warn`),
/// requires it to succeed and returns its report, the one JSON line it prints.
pub fn sweep_once<K, V>(env: impl IntoIterator<Item = (K, V)>) -> serde_json::Value
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(workspace_binary("janitor"))
        .env_remove(streamgate::config::CONFIG_FILE_ENV)
        .env("RUST_LOG", "warn")
        .envs(env)
        .output()
        .expect("run the janitor");
    assert!(output.status.success(), "janitor: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the janitor's report: one JSON line")
}
