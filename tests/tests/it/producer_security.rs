//! The producer's access control and abuse resistance against real Redis and the real
//! binary: refusing an open listener, token rotation and files, JWT topic grants,
//! idempotency keys scoped per publisher, passwords that never reach the output, slow
//! clients, oversize ingest entries, and topics whose names hold hash-tag braces.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use streamgate::keys::hash_tag;
use streamgate::topic::Topic;
use streamgate_tests::producer_app::{TestProducer, field, history, producer_binary, stream_entries};
use streamgate_tests::redis_server::RedisServer;
use streamgate_tests::world::TestWorld;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const WAIT: Duration = Duration::from_secs(10);
const JWT_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// Runs `producer <args>` with only `env` (and no config file), to its end.
fn run_producer(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(producer_binary());
    command.args(args).env_clear().envs(env.iter().copied()).stdin(Stdio::null());
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn producer");
    child.wait_with_output().expect("producer output")
}

async fn publish_with(
    producer: &TestProducer,
    body: &Value,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    producer.post_publish(body.to_string(), &headers).await
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A publish JWT signed like a token issuer would (HS256 unless `alg` is "none").
fn jwt(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

#[test]
fn a_producer_on_a_public_address_without_authentication_refuses_to_start() {
    // Redis is never reached: the refusal comes first.
    let output = run_producer(
        &["serve"],
        &[("LISTEN_ADDR", "0.0.0.0:0"), ("REDIS_URL", "redis://127.0.0.1:1"), ("RUST_LOG", "debug")],
    );

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("0.0.0.0:0") && stderr.contains("ALLOW_ANONYMOUS_PUBLISH"), "{stderr}");
}

#[tokio::test]
async fn a_public_address_is_served_with_a_token_or_anonymous_on_purpose() {
    let world = TestWorld::start("public");
    for extra in [("PUBLISH_TOKEN", "some-token"), ("ALLOW_ANONYMOUS_PUBLISH", "true")] {
        let producer = world.producer(&[("LISTEN_ADDR", "0.0.0.0:0"), extra]).await;
        assert_eq!(producer.get("/healthz").await.status(), 200, "{extra:?}");
    }
}

#[tokio::test]
async fn two_tokens_are_both_accepted_during_a_rotation_and_a_third_is_refused() {
    let world = TestWorld::start("rotation");
    let producer = world.producer(&[("PUBLISH_TOKEN", "old-token, new-token")]).await;
    let body = json!({"topic": "t", "data": "x"});

    for authorization in ["Bearer old-token", "bearer new-token", "BEARER  old-token"] {
        assert_eq!(
            publish_with(&producer, &body, Some(authorization)).await.status(),
            200,
            "{authorization}"
        );
    }
    for authorization in [Some("Bearer third-token"), Some("Basic old-token"), Some("Bearer old"), None] {
        let response = publish_with(&producer, &body, authorization).await;
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
}

#[tokio::test]
async fn tokens_are_read_from_a_file() {
    let world = TestWorld::start("token-file");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "file-token-1\nfile-token-2").unwrap();
    let path = file.path().to_str().unwrap();
    let producer = world.producer(&[("PUBLISH_TOKEN_FILE", path)]).await;
    let body = json!({"topic": "t", "data": "x"});

    assert_eq!(publish_with(&producer, &body, Some("Bearer file-token-1")).await.status(), 200);
    assert_eq!(publish_with(&producer, &body, Some("Bearer file-token-2")).await.status(), 200);
    assert_eq!(publish_with(&producer, &body, Some("Bearer file-token-3")).await.status(), 401);
}

#[tokio::test]
async fn a_jwt_may_publish_only_to_its_topics_and_a_refused_batch_writes_nothing() {
    let world = TestWorld::start("jwt");
    let producer = world.producer(&[("PUBLISH_JWT_SECRET", JWT_SECRET)]).await;
    let mut conn = world.conn().await;
    let token = jwt(json!({"sub": "billing", "exp": now_secs() + 300, "publish": ["orders:*", "news"]}));
    let bearer = format!("Bearer {token}");

    let ok = publish_with(&producer, &json!({"topic": "orders:1", "data": "paid"}), Some(&bearer)).await;
    assert_eq!(ok.status(), 200);
    let batch = json!([{"topic": "orders:2", "data": "a"}, {"topic": "newsletter", "data": "b"}]);
    let refused = publish_with(&producer, &batch, Some(&bearer)).await;

    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["index"], 1);
    assert!(body["error"].as_str().unwrap().contains("\"newsletter\""), "{body}");
    assert!(history(&mut conn, &producer.keys, "orders:2").await.is_empty(), "the batch is all or nothing");
    assert_eq!(history(&mut conn, &producer.keys, "orders:1").await.len(), 1);
}

#[tokio::test]
async fn expired_unsigned_or_foreign_jwts_are_401() {
    let world = TestWorld::start("jwt-bad");
    let producer = world.producer(&[("PUBLISH_JWT_SECRET", JWT_SECRET)]).await;
    let body = json!({"topic": "orders:1", "data": "x"});
    let grant = |exp: u64| json!({"sub": "billing", "exp": exp, "publish": ["*"]});
    let unsigned = {
        let encode = |value: &Value| streamgate_tests::tokens::base64url(value.to_string().as_bytes());
        format!("{}.{}.", encode(&json!({"alg": "none", "typ": "JWT"})), encode(&grant(now_secs() + 300)))
    };
    let foreign = {
        let key = jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-of-32-bytes-or-more").unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &grant(now_secs() + 300), &key).unwrap()
    };

    for (case, token) in
        [("expired", jwt(grant(now_secs() - 3600))), ("alg none", unsigned), ("foreign", foreign)]
    {
        let response = publish_with(&producer, &body, Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status(), 401, "{case}");
    }
    let valid = jwt(grant(now_secs() + 300));
    assert_eq!(publish_with(&producer, &body, Some(&format!("Bearer {valid}"))).await.status(), 200);
}

#[tokio::test]
async fn one_publisher_cannot_claim_another_publishers_idempotency_key() {
    let world = TestWorld::start("idem-scope");
    let producer =
        world.producer(&[("PUBLISH_TOKEN", "token-a,token-b"), ("PUBLISH_JWT_SECRET", JWT_SECRET)]).await;
    let publish = |authorization: String, data: &'static str| {
        let body = json!({"topic": "t", "data": data, "idempotencyKey": "order-42"});
        let producer = &producer;
        async move {
            let response = publish_with(producer, &body, Some(&authorization)).await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            (body["results"][0]["id"].as_str().unwrap().to_owned(), body["results"][0]["duplicate"].clone())
        }
    };
    let sub = |name: &str| {
        format!("Bearer {}", jwt(json!({"sub": name, "exp": now_secs() + 300, "publish": ["*"]})))
    };

    let (a_id, a_duplicate) = publish("Bearer token-a".into(), "from a").await;
    let (a_again, a_again_duplicate) = publish("Bearer token-a".into(), "from a, retried").await;
    let (b_id, b_duplicate) = publish("Bearer token-b".into(), "from b").await;
    let (alice, _) = publish(sub("alice"), "from alice").await;
    let (bob, bob_duplicate) = publish(sub("bob"), "from bob").await;
    let (alice_again, alice_duplicate) = publish(sub("alice"), "from alice, retried").await;

    assert_eq!((a_duplicate, a_again_duplicate), (json!(false), json!(true)));
    assert_eq!(a_again, a_id, "a retry by the same publisher finds its own event");
    assert_eq!(b_duplicate, json!(false), "B's key equal to A's is no duplicate");
    assert_ne!(b_id, a_id);
    assert_eq!((bob_duplicate, alice_duplicate), (json!(false), json!(true)));
    assert_ne!(alice, bob);
    assert_eq!(alice_again, alice);
    let mut conn = world.conn().await;
    let data: Vec<String> =
        history(&mut conn, &producer.keys, "t").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["from a", "from b", "from alice", "from bob"]);
}

#[tokio::test]
async fn the_redis_password_is_never_printed() {
    let redis = RedisServer::builder()
        .config("requirepass", "right-password-1")
        .auth("default", "right-password-1")
        .start();
    let secret = "hunter2-secret";
    let cases = [
        ("an invalid URL", format!("redis://:{secret}@127.0.0.1:notaport"), Some(2)),
        ("an unreachable host", format!("redis://user:{secret}@127.0.0.1:1"), Some(1)),
        ("an unknown host", format!("redis://:{secret}@no-such-host.invalid:6379"), Some(1)),
        ("a wrong password", redis.url_as("default", secret), Some(1)),
    ];
    for (case, url, code) in &cases {
        for args in [&["serve"][..], &["publish", "--topic", "t", "--data", "x", "--retry-for", "0s"]] {
            let output =
                run_producer(args, &[("REDIS_URL", url), ("RUST_LOG", "trace"), ("LOG_FORMAT", "json")]);
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(output.status.code(), *code, "{case} {args:?}: {printed}");
            assert!(!printed.is_empty(), "{case}: the failure is reported");
            assert!(!printed.contains(secret), "{case} {args:?} printed the password: {printed}");
        }
    }
    // And from a file: the same.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{secret}").unwrap();
    let output = run_producer(
        &["serve"],
        &[("REDIS_URL", "redis://user@127.0.0.1:1"), ("REDIS_PASSWORD_FILE", file.path().to_str().unwrap())],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(secret));
}

#[tokio::test]
async fn a_trickled_body_is_408_and_slow_headers_close_the_connection() {
    let world = TestWorld::start("slow");
    let producer =
        world.producer(&[("REQUEST_BODY_TIMEOUT", "500ms"), ("HEADER_READ_TIMEOUT", "500ms")]).await;
    let address = format!("127.0.0.1:{}", producer.port);

    let mut trickle = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head =
        "POST /publish HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n";
    trickle.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    for byte in br#"{"topic":"t","#.iter() {
        if trickle.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::timeout(WAIT, trickle.read_to_end(&mut response)).await.expect("the connection ends").ok();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /publish HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server closes a connection whose headers never end");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    let mut conn = world.conn().await;
    assert!(history(&mut conn, &producer.keys, "t").await.is_empty());
}

fn sha1_hex(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()
}

#[tokio::test]
async fn an_oversize_ingest_entry_is_dead_lettered_with_a_digest_not_a_copy() {
    let world = TestWorld::start("ingest-oversize");
    let producer = world.producer(&[("INGEST_ENABLED", "true"), ("MAX_EVENT_BYTES", "1KiB")]).await;
    let stream = producer.config.ingest.stream.clone();
    let mut conn = world.conn().await;
    let big = vec![b'x'; 4 << 20];
    let big_id: String =
        conn.xadd(&stream, "*", &[("topic", b"t".as_slice()), ("data", big.as_slice())]).await.unwrap();
    let many_fields: Vec<(String, String)> = (0..1000).map(|i| (format!("f{i}"), "v".to_owned())).collect();
    let many_id: String = conn.xadd(&stream, "*", &many_fields).await.unwrap();
    let huge_name = "n".repeat(10_000);
    let name_id: String =
        conn.xadd(&stream, "*", &[("topic", "t"), ("data", "x"), (huge_name.as_str(), "v")]).await.unwrap();
    let _: String = conn.xadd(&stream, "*", &[("topic", "t"), ("data", "fine")]).await.unwrap();

    wait_until_empty(&mut conn, &stream).await;

    let letters = stream_entries(&mut conn, &producer.config.ingest.dead_letter).await;
    let by_source: BTreeMap<String, &redis::streams::StreamId> =
        letters.iter().map(|letter| (field(letter, "source_id").unwrap(), letter)).collect();
    assert_eq!(by_source.len(), 3);
    let letter = by_source[&big_id];
    assert_eq!(field(letter, "data:sha1").as_deref(), Some(sha1_hex(&big).as_str()));
    assert_eq!(field(letter, "data:bytes").as_deref(), Some("4194304"));
    assert_eq!(field(letter, "data"), None, "no copy of the payload");
    assert_eq!(field(letter, "topic").as_deref(), Some("t"));
    assert!(field(letter, "reason").unwrap().contains("MAX_EVENT_BYTES"));
    assert!(field(by_source[&many_id], "reason").unwrap().contains("1000 fields"));
    assert_eq!(by_source[&many_id].map.len(), 2, "reason and source_id only");
    let name_letter = by_source[&name_id];
    let digest_field = format!("sha1:{}:sha1", sha1_hex(huge_name.as_bytes()));
    assert_eq!(field(name_letter, &digest_field).as_deref(), Some(sha1_hex(b"v").as_str()));
    let data: Vec<String> =
        history(&mut conn, &producer.keys, "t").await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["fine"]);
}

async fn wait_until_empty(conn: &mut MultiplexedConnection, stream: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let len: usize = conn.xlen(stream).await.unwrap();
        if len == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{len} ingest entries left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag, modulo 16384.
fn slot(key: &str) -> u16 {
    let crc = hash_tag(key).bytes().fold(0u16, |crc, byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 }
        })
    });
    crc % 16384
}

#[tokio::test]
async fn topics_with_braces_keep_their_keys_on_one_slot_and_round_trip() {
    assert_eq!(slot("foo"), 12182, "the CRC16 Redis Cluster uses");
    assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    let world = TestWorld::start("braces");
    let producer = world.producer(&[]).await;
    let keys = &world.keys;
    let topics = ["a{b}c", "{x}", "}{", "plain"];
    for topic in topics {
        let body = json!({"topic": topic, "data": topic, "idempotencyKey": "k"});
        assert_eq!(producer.publish(&body).await.status(), 200, "{topic}");
    }
    let mut conn = world.conn().await;

    let names: Vec<String> = conn.keys(format!("{}:*", world.prefix)).await.unwrap();
    let mut slots: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for name in names.iter().filter(|name| !name.ends_with(":topics")) {
        let topic = topics
            .iter()
            .find(|topic| {
                let topic = Topic::parse(**topic, 256).unwrap();
                [keys.history(&topic), keys.meta(&topic), keys.idempotency(&topic, None, "k")].contains(name)
            })
            .unwrap_or_else(|| panic!("{name} is no key of a published topic"));
        slots.entry((*topic).to_owned()).or_default().insert(slot(name));
        if let Some((_, parsed)) = keys.topic_key_of(name) {
            assert_eq!(parsed, *topic, "the janitor reads the topic back from {name}");
        }
    }
    for topic in topics {
        assert_eq!(slots[topic].len(), 1, "{topic}'s keys are on one slot: {slots:?}");
        let entries = history(&mut conn, &producer.keys, topic).await;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].data, topic);
    }
}
