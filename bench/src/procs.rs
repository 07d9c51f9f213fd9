//! Processes of a benchmark: the system under test (release binaries, a private Redis) and
//! subscriber child processes; resident memory and CPU time from /proc.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sse::SubscriberReport;

pub use crate::host::free_port;

/// The release binaries' directory (next to this benchmark binary).
pub fn release_dir() -> PathBuf {
    std::env::current_exe().expect("current exe").parent().expect("target dir").to_path_buf()
}

/// A child process, killed on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Spawns `program args` with `env`, logs to `log_dir/name.log`. Every process spawned
    /// here belongs to the system under test: with `BENCH_SERVER_CPUS` set (a `taskset`
    /// CPU list, e.g. `0`), it runs on those CPUs only, apart from the load generator.
    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &[(&str, String)], log_dir: &Path) -> Proc {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).expect("log file");
        let mut command = pinned(program, SERVER_CPUS_ENV);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        command.env("RUST_LOG", "warn");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc { child }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// User + system CPU time so far, seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPUs (a `taskset -c` list) of the system under test.
pub const SERVER_CPUS_ENV: &str = "BENCH_SERVER_CPUS";
/// The CPUs of the load generator's subscriber processes.
pub const LOAD_CPUS_ENV: &str = "BENCH_LOAD_CPUS";

/// `program`, under `taskset -c $<cpus_env>` when that variable is set.
pub fn pinned(program: &Path, cpus_env: &str) -> Command {
    match std::env::var(cpus_env) {
        Ok(cpus) if !cpus.is_empty() => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(program);
            command
        }
        _ => Command::new(program),
    }
}

/// The command name of `pid` (`/proc/PID/comm`).
pub fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// The child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub use crate::host::{cpu_seconds, rss_kib};

/// Waits until `url` answers 200.
pub async fn wait_http_ok(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(url).await
            && response.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscriber child process (`streamgate-bench subscribe ...`).
pub struct SubscriberProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl SubscriberProc {
    /// Starts one with these `subscribe` arguments.
    pub fn spawn(args: &[String]) -> SubscriberProc {
        let mut child = pinned(&std::env::current_exe().expect("exe"), LOAD_CPUS_ENV)
            .arg("subscribe")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn subscriber");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        SubscriberProc { child, stdin, stdout }
    }

    /// Blocks until it reports its connections; returns how many connected.
    pub fn wait_connected(&mut self) -> u64 {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("subscriber output");
        line.trim().strip_prefix("connected ").and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Asks for its report and waits for it.
    pub fn finish(mut self) -> SubscriberReport {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("subscriber report");
        let _ = self.child.wait();
        serde_json::from_str(&line).unwrap_or_default()
    }
}

impl Drop for SubscriberProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
