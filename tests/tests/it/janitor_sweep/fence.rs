//! A janitor that outlives its claim on a dead instance — paused (GC, SIGSTOP, a frozen VM)
//! between extending the claim and removing the instance's group fields — must not remove
//! anything once the claim has lapsed: by then a gateway may be back under the same
//! instance id with fresh memberships.

use std::process::Command;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionLike;
use redis::aio::MultiplexedConnection;
use streamgate::keys::Keys;
use streamgate_tests::publish::event;
use streamgate_tests::rig::Service;
use streamgate_tests::sse_client::connect;

use super::support::{
    Target, WAIT, fabricate_dead_instance, free_port, instance, janitor_command, keys, topic, wait_until,
};

/// The fenced instance's id.
pub(super) const INSTANCE: &str = "gw-fence";

/// The dead instance's topics: enough for hundreds of sweep batches of `SCAN_COUNT` 1, and
/// more than Redis keeps in a compact set (128), so `SSCAN` pages through them.
const N_TOPICS: usize = 1000;
/// The janitor's claim TTL in this test (the shortest allowed, so the test waits little).
const CLAIM_TTL: &str = "3s";
/// How long a stopped janitor is left before its state is read: whatever it had sent by
/// then has been run by Redis.
const SETTLE: Duration = Duration::from_millis(150);
/// Attempts at stopping the janitor between reading a batch and removing it.
const MAX_STOP_ATTEMPTS: usize = 200;

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The command the janitor's connection ran last (`CLIENT LIST`'s `cmd=`), from every
/// client but the test's own.
async fn janitor_last_commands(conn: &mut MultiplexedConnection) -> Vec<String> {
    let own: i64 = redis::cmd("CLIENT").arg("ID").query_async(conn).await.unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await.unwrap();
    list.lines()
        .filter(|line| !line.starts_with(&format!("id={own} ")))
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("cmd=")).map(str::to_owned))
        .collect()
}

/// How many of `topics`' group hashes hold `field` = "1".
async fn registered(
    conn: &mut (impl ConnectionLike + Send),
    keys: &Keys,
    topics: &[String],
    field: &str,
) -> usize {
    let mut pipe = redis::pipe();
    for name in topics {
        pipe.hget(keys.group(&topic(name)), field);
    }
    let counts: Vec<Option<String>> = pipe.query_async(conn).await.unwrap();
    counts.iter().filter(|count| count.as_deref() == Some("1")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_janitor_stopped_past_its_claim_removes_nothing_of_a_gateway_back_under_the_same_id() {
    let redis = streamgate_tests::redis_server::RedisServer::start();
    let prefix = streamgate_tests::redis_server::unique_prefix("janitor-fence");
    a_janitor_stopped_past_its_claim_removes_nothing_on(
        &Target::single(&redis),
        &prefix,
        redis.client().await,
    )
    .await;
}

/// The scenario on `target` under `prefix`; `watch` is a connection to the server that holds
/// the instance's keys (its topic record, read with SSCAN), whose `CLIENT LIST` tells what
/// the janitor ran last there.
pub(super) async fn a_janitor_stopped_past_its_claim_removes_nothing_on(
    target: &Target,
    prefix: &str,
    mut watch: MultiplexedConnection,
) {
    let prefix = prefix.to_owned();
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    let id = INSTANCE;
    let topics: Vec<String> = (0..N_TOPICS).map(|n| format!("fence-{n}")).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    fabricate_dead_instance(&mut conn, &keys, id, &names).await;
    let sweep_key = keys.instance_sweep(&instance(id));

    // The janitor sweeps the dead instance one topic per batch...
    let mut janitor = janitor_command(
        target.url(),
        &prefix,
        &target.settings(&[("SCAN_COUNT", "1"), ("FULL_SCAN", "false"), ("SWEEP_CLAIM_TTL", CLAIM_TTL)]),
    )
    .spawn()
    .unwrap();
    let pid = janitor.id().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !conn.exists::<_, bool>(&sweep_key).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "the janitor never claimed the instance");
    }
    // ...and is stopped right after reading a batch, before removing its fields: the last
    // command its connection ran is that batch's SSCAN.
    let mut stopped_mid_batch = false;
    for _ in 0..MAX_STOP_ATTEMPTS {
        signal(pid, "STOP");
        tokio::time::sleep(SETTLE).await;
        if janitor_last_commands(&mut watch).await.iter().any(|cmd| cmd == "sscan") {
            stopped_mid_batch = true;
            break;
        }
        assert!(conn.exists::<_, bool>(&sweep_key).await.unwrap(), "the sweep ended before it was caught");
        signal(pid, "CONT");
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
    }
    assert!(stopped_mid_batch, "could not stop the janitor between a batch's read and its removal");
    let removed_before_the_pause = N_TOPICS - registered(&mut conn, &keys, &topics, id).await;
    assert!(removed_before_the_pause < N_TOPICS - 1, "the sweep was stopped mid-way");

    // The claim lapses while the janitor is stopped; the gateway comes back under its id.
    wait_until("the stopped janitor's claim lapsed", || {
        let (mut conn, sweep_key) = (conn.clone(), sweep_key.clone());
        async move { !conn.exists::<_, bool>(&sweep_key).await.unwrap() }
    })
    .await;
    let port = free_port();
    let mut env: Vec<(String, String)> =
        target.settings(&[]).into_iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
    env.extend(
        [
            ("REDIS_URL", target.url().to_owned()),
            ("KEY_PREFIX", prefix.clone()),
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("INSTANCE_ID", id.to_owned()),
            ("MAX_TOPICS_PER_CONNECTION", N_TOPICS.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value)),
    );
    let gateway = Service::spawn("gateway-fence", "gateway", &[], port, env);
    gateway.wait_ready().await;
    let query: Vec<String> = topics.iter().map(|name| format!("topic={name}")).collect();
    let mut stream = connect(&gateway.url(&format!("/events?{}", query.join("&"))), None).await;
    assert_eq!(stream.status, 200);
    wait_until("the gateway registered in every topic", || {
        let (mut conn, keys, topics) = (conn.clone(), keys.clone(), topics.clone());
        async move { registered(&mut conn, &keys, &topics, id).await == N_TOPICS }
    })
    .await;

    // The janitor wakes up and finishes its sweep.
    signal(pid, "CONT");
    let finished =
        tokio::time::timeout(WAIT * 3, janitor.wait()).await.expect("the janitor finishes").unwrap();
    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(janitor.stdout.as_mut().unwrap(), &mut stdout).await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(janitor.stderr.as_mut().unwrap(), &mut stderr).await.unwrap();

    assert!(finished.success(), "the janitor failed ({finished}): {stdout}{stderr}");
    assert_eq!(
        registered(&mut conn, &keys, &topics, id).await,
        N_TOPICS,
        "the late janitor removed fresh memberships of the gateway back under its id"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["claims_lapsed"], 1, "{report}");
    // And the live path works for every topic: one event each reaches the subscriber.
    let batch: Vec<_> = topics.iter().map(|name| event(name, None, name)).collect();
    target.publisher(&prefix).publish(&batch).await.unwrap();
    assert_eq!(stream.take(N_TOPICS, WAIT).await.len(), N_TOPICS);
}
