//! The Redis ACL users of `deploy/redis/users.acl.in` are neither too tight nor too wide.
//!
//! `deploy/make-secrets.sh` (the script compose users run) creates passwords and renders
//! the ACL file; a real redis-server loads it; the real `gateway`, `producer` and `janitor`
//! binaries each run as their own user, with the password from a file
//! (`REDIS_PASSWORD_FILE`), through a round of publish (HTTP and the ingest stream) →
//! delivery over SSE → the gateway's admin views → a dead gateway swept by the janitor. Redis' `ACL LOG` must then hold
//! no denial of theirs. The `ingest` and `default` users are probed command by command.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use streamgate_tests::binaries::sweep_once;
use streamgate_tests::keys::InstanceKey;
use streamgate_tests::redis_server::RedisServer;
use streamgate_tests::rig::{Service, free_port};
use streamgate_tests::sse_client::connect;

const WAIT: Duration = Duration::from_secs(10);
/// Short, so the killed gateway is dead for the janitor soon (the gateway's minimum).
const LIVENESS_TTL: &str = "3s";

fn read_secret(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap().trim_end().to_owned()
}

/// Creates the secrets and the ACL file with the deployment's own script.
fn make_secrets(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-secrets.sh");
    let status =
        Command::new("sh").arg(script).arg(dir).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "make-secrets.sh failed");
}

/// The settings a service needs to reach Redis as `user`, its password in a file.
fn redis_as(redis: &RedisServer, secrets: &Path, user: &str) -> Vec<(String, String)> {
    vec![
        ("REDIS_URL".to_owned(), format!("redis://{user}@127.0.0.1:{}", redis.port())),
        (
            "REDIS_PASSWORD_FILE".to_owned(),
            secrets.join(format!("redis-{user}-password")).to_str().unwrap().to_owned(),
        ),
    ]
}

async fn connect_as(redis: &RedisServer, user: &str, password: &str) -> MultiplexedConnection {
    redis::Client::open(redis.url_as(user, password))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The error code of a command, or "OK".
async fn outcome(conn: &mut MultiplexedConnection, command: &[&str]) -> String {
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    match cmd.query_async::<redis::Value>(conn).await {
        Ok(_) => "OK".to_owned(),
        Err(error) => error.code().unwrap_or("?").to_owned(),
    }
}

#[tokio::test]
async fn each_service_runs_as_its_own_redis_user_and_ingest_may_only_xadd() {
    let secrets = tempfile::tempdir().unwrap();
    make_secrets(secrets.path());
    let redis = RedisServer::builder()
        .config("aclfile", secrets.path().join("redis-users.acl").to_str().unwrap())
        .auth("admin", read_secret(secrets.path(), "redis-admin-password"))
        .start();
    let token_file = secrets.path().join("publish-token");
    let publish_token = read_secret(secrets.path(), "publish-token");

    let gateway_env = |instance: &str| {
        let mut env = redis_as(&redis, secrets.path(), "gateway");
        env.extend([
            ("INSTANCE_ID".to_owned(), instance.to_owned()),
            ("LIVENESS_TTL".to_owned(), LIVENESS_TTL.to_owned()),
            ("HEARTBEAT_INTERVAL".to_owned(), "1s".to_owned()),
        ]);
        env
    };
    let port = free_port();
    let mut gateway_env_1 = gateway_env("gw-acl-1");
    gateway_env_1.push(("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")));
    gateway_env_1.push(("ADMIN_LISTEN_ADDR".to_owned(), format!("127.0.0.1:{}", free_port())));
    let mut gateway = Service::spawn("gateway", "gateway", &[], port, gateway_env_1);
    let producer_port = free_port();
    let mut producer_env = redis_as(&redis, secrets.path(), "producer");
    producer_env.extend([
        ("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{producer_port}")),
        ("PUBLISH_TOKEN_FILE".to_owned(), token_file.to_str().unwrap().to_owned()),
        ("INGEST_ENABLED".to_owned(), "true".to_owned()),
        ("INGEST_CLAIM_IDLE".to_owned(), "1s".to_owned()),
        ("HISTORY_MAX_LEN".to_owned(), "2".to_owned()),
    ]);
    let producer = Service::spawn("producer", "producer", &["serve"], producer_port, producer_env);
    gateway.wait_ready().await;
    producer.wait_ready().await;

    // Publish over HTTP and through the ingest stream (as the ingest user); both arrive.
    let mut stream = connect(&gateway.url("/events?topic=acl"), None).await;
    let published = streamgate_tests::publish::over_http(
        &producer.url(""),
        Some(&publish_token),
        &json!({"topic": "acl", "data": "over http", "idempotencyKey": "k-1"}),
    )
    .await;
    assert_eq!(published["results"][0]["duplicate"], false);
    let mut ingest =
        connect_as(&redis, "ingest", &read_secret(secrets.path(), "redis-ingest-password")).await;
    for fields in
        [&["topic", "acl", "data", "through ingest"][..], &["topic", "acl", "data", "x", "bogus", "1"]]
    {
        let mut xadd = redis::cmd("XADD");
        xadd.arg("streamgate:ingest").arg("*").arg(fields);
        let _: String = xadd.query_async(&mut ingest).await.unwrap();
    }
    let events = stream.take(2, WAIT).await;
    let data: Vec<&str> = events.iter().map(|event| event.data.as_str()).collect();
    assert_eq!(data, ["over http", "through ingest"]);

    // The admin views read what they show as the gateway's user.
    for path in ["/admin/cluster", "/admin/topics/acl", "/admin/topics/acl/history"] {
        let response = reqwest::get(gateway.admin_url(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}: {}", response.text().await.unwrap());
    }
    let cluster: Value =
        reqwest::get(gateway.admin_url("/admin/cluster")).await.unwrap().json().await.unwrap();
    assert_eq!(cluster["gateways"][0]["instance"], "gw-acl-1", "{cluster}");
    assert_eq!(cluster["topTopics"][0]["topic"], "acl", "{cluster}");
    assert_eq!(cluster["ingest"]["groupExists"], true, "{cluster}");
    assert_eq!(cluster["ingest"]["deadLetters"], 1, "{cluster}");

    // A gateway that dies is swept by the janitor as its own user.
    gateway.kill();
    let mut admin = redis.client().await;
    wait_until_gone(
        &mut admin,
        &streamgate_tests::keys::instance("streamgate", "gw-acl-1", InstanceKey::Alive),
    )
    .await;
    let mut env = redis_as(&redis, secrets.path(), "janitor");
    env.push(("HISTORY_MAX_LEN".to_owned(), "2".to_owned()));
    let report = sweep_once(env);
    assert_eq!(report["dead_instances"], 1, "{report}");
    assert_eq!(report["malformed_keys_skipped"], 0, "{report}");

    // Nothing any service did was denied.
    let denials: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query_async(&mut admin).await.unwrap();
    assert!(denials.is_empty(), "ACL denials: {denials:?}\n{}", producer.log());
    let dead_letters: usize =
        redis::cmd("XLEN").arg("streamgate:ingest:dead").query_async(&mut admin).await.unwrap();
    assert_eq!(dead_letters, 1, "the producer may dead-letter");

    // The ingest user may XADD to the ingest stream and do nothing else.
    let denied_to_ingest: &[&[&str]] = &[
        &["XADD", "streamgate:ingest:dead", "*", "a", "b"],
        &["XADD", "streamgate:h:{x}:x", "*", "a", "b"],
        &["XRANGE", "streamgate:ingest", "-", "+"],
        &["XREAD", "STREAMS", "streamgate:ingest", "0"],
        &["XLEN", "streamgate:ingest"],
        &["XDEL", "streamgate:ingest", "1-1"],
        &["XTRIM", "streamgate:ingest", "MAXLEN", "0"],
        &["DEL", "streamgate:ingest"],
        &["GET", "streamgate:anything"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["EVAL", "return 1", "0"],
        &["PUBLISH", "channel", "x"],
        &["CONFIG", "GET", "*"],
        &["FLUSHALL"],
        &["PING"],
    ];
    for command in denied_to_ingest {
        assert_eq!(outcome(&mut ingest, command).await, "NOPERM", "ingest may not {command:?}");
    }
    assert_eq!(
        outcome(&mut ingest, &["XADD", "streamgate:ingest", "*", "topic", "t", "data", "d"]).await,
        "OK"
    );

    // Without credentials: PING (health checks), nothing else.
    let mut anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(outcome(&mut anonymous, &["PING"]).await, "OK");
    for command in
        [&["GET", "streamgate:topics"][..], &["XADD", "streamgate:ingest", "*", "a", "b"], &["INFO"]]
    {
        assert_eq!(outcome(&mut anonymous, command).await, "NOPERM", "default may not {command:?}");
    }
}

async fn wait_until_gone(conn: &mut MultiplexedConnection, key: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exists: bool = redis::cmd("EXISTS").arg(key).query_async(conn).await.unwrap();
        if !exists {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{key} still exists");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
