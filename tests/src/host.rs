//! What the test rig and the benchmark both ask of this host, with the standard library
//! only: a free port, a process's resident memory, CPU time and state from `/proc`, and
//! forming a Redis Cluster with `redis-cli --cluster create`.
//!
//! The benchmark includes this file as a module of its own (`#[path]`) rather than
//! depending on this crate: its release build then compiles none of the test crate's
//! dependencies. So this file may use nothing but `std`.

use std::process::Command;

/// A free TCP port on 127.0.0.1 (bound to port 0, read back, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Resident memory of `pid` in KiB (`VmRSS`), 0 when the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The fields of `/proc/PID/stat` after the parenthesised command name (which may hold
/// spaces and parentheses itself), or `None` when the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system) `pid` has used, 0 when the process is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid).unwrap_or_default();
    // utime and stime, the 14th and 15th fields of the line, in clock ticks (100 a second
    // on Linux whatever the kernel's HZ).
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Whether `pid` has ended: gone, or a zombie not yet reaped.
pub fn has_exited(pid: u32) -> bool {
    stat_fields(pid).is_none_or(|fields| fields.first().map(String::as_str) == Some("Z"))
}

/// Joins the Redis servers at `addresses` (`host:port`, started with
/// `--cluster-enabled yes`) into one cluster with `replicas` replicas per master, the
/// slots spread evenly. Panics with `redis-cli`'s output when it fails.
pub fn create_cluster(addresses: &[String], replicas: u32) {
    let output = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(addresses)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster create (installed with redis-server)");
    assert!(
        output.status.success(),
        "redis-cli --cluster create failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
