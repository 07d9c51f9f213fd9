//! The gateway's HTTP contract that needs no publisher: request validation, headers, the
//! stream's opening, heartbeats, health and readiness, memberships in Redis.

use std::time::Duration;
use streamgate::config::ServiceConfig as _;

use redis::AsyncCommands;
use streamgate::cursor::topic_tag;
use streamgate::topic::InstanceId;
use streamgate_tests::gateway_app::spawn_gateway;
use streamgate_tests::redis_server::{RedisServer, unique_prefix};
use streamgate_tests::sse_client::{connect, read_raw_until};
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;

/// How long a membership change may take to reach Redis.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn each_bad_request_gets_400_with_a_json_error() {
    let world = TestWorld::start("bad");
    let gateway = world.gateway(&[("MAX_TOPICS_PER_CONNECTION", "2")]).await;
    let client = reqwest::Client::new();
    let cases = [
        ("/events", None, "no topic"),
        ("/events?topic=", None, "must not be empty"),
        ("/events?topic=a&topic=b&topic=c", None, "too many topics"),
        ("/events?topic=a%0Ab", None, "forbidden character"),
        ("/events?topic=a&lastEventId=nonsense", None, "malformed cursor"),
        ("/events?topic=a", Some("1-0"), "malformed cursor"),
    ];
    for (path, header, expected) in cases {
        let mut request = client.get(gateway.url(path));
        if let Some(header) = header {
            request = request.header("last-event-id", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(expected), "{path}: {message}");
    }
    let long = "x".repeat(257);
    let response = client.get(gateway.url(&format!("/events?topic={long}"))).send().await.unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn stream_opens_with_headers_retry_and_instance_comment() {
    let world = TestWorld::start("open");
    let gateway = world.gateway(&[]).await;
    let stream = connect(&gateway.url("/events?topic=order:1"), None).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    assert_eq!(stream.headers["x-streamgate-instance"], gateway.instance.as_str());
    let raw = read_raw_until(&gateway.url("/events?topic=order:1"), "instance", Duration::from_secs(5)).await;
    assert!(raw.starts_with("retry: 2000\n\n: streamgate instance "), "{raw:?}");
}

#[tokio::test]
async fn heartbeat_comments_arrive_at_the_configured_interval() {
    let world = TestWorld::start("hb");
    let gateway = world.gateway(&[("HEARTBEAT_INTERVAL", "1s")]).await;
    let started = std::time::Instant::now();
    let raw =
        read_raw_until(&gateway.url("/events?topic=quiet"), ": \n\n: \n\n", Duration::from_secs(10)).await;
    // Greeting, then at least two bare heartbeat comments.
    assert!(raw.matches(": \n\n").count() >= 2, "{raw:?}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "heartbeats came too fast");
}

#[tokio::test]
async fn memberships_are_counted_and_removed_when_the_last_subscriber_leaves() {
    let world = TestWorld::start("members");
    let gateway = world.gateway(&[]).await;
    let mut conn = world.conn().await;
    let group = streamgate_tests::keys::group(&world.prefix, "room");
    let first = connect(&gateway.url("/events?topic=room"), None).await;
    let second = connect(&gateway.url("/events?topic=room&topic=other"), None).await;
    wait_until("both subscribers counted", WAIT, || async {
        conn.clone().hget::<_, _, Option<i64>>(&group, &gateway.instance).await.unwrap() == Some(2)
    })
    .await;
    drop(first);
    drop(second);
    wait_until("the membership removed", WAIT, || async {
        !conn.clone().exists::<_, bool>(&group).await.unwrap()
    })
    .await;
    let alive: bool =
        conn.exists(world.keys.instance_alive(&InstanceId::parse(&gateway.instance).unwrap())).await.unwrap();
    assert!(alive);
}

#[tokio::test]
async fn health_and_readiness() {
    let mut world = TestWorld::start("ready");
    let gateway = world.gateway(&[]).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(gateway.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(gateway.url("/readyz")).send().await.unwrap().status(), 200);
    world.redis.stop();
    let response = client.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(client.get(gateway.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn graceful_shutdown_removes_memberships_and_liveness() {
    let world = TestWorld::start("bye");
    let gateway = world.gateway(&[("DRAIN_TIMEOUT", "2s")]).await;
    let mut conn = world.conn().await;
    let group = streamgate_tests::keys::group(&world.prefix, "t");
    let mut stream = connect(&gateway.url("/events?topic=t"), None).await;
    wait_until("the membership written", WAIT, || async {
        conn.clone().exists::<_, bool>(&group).await.unwrap()
    })
    .await;
    let instance = gateway.instance.clone();
    gateway.shutdown().await;
    assert!(stream.next_event(Duration::from_secs(5)).await.is_none(), "the stream ends");
    assert!(!conn.exists::<_, bool>(&group).await.unwrap());
    assert!(
        !conn
            .exists::<_, bool>(world.keys.instance_alive(&InstanceId::parse(&instance).unwrap()))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn over_the_connection_limit_gets_503_with_retry_after() {
    let world = TestWorld::start("limit");
    let gateway = world.gateway(&[("MAX_CONNECTIONS", "1")]).await;
    let _first = connect(&gateway.url("/events?topic=a"), None).await;
    let response = reqwest::get(gateway.url("/events?topic=a")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test]
async fn cors_origins_are_configurable_and_apply_to_events_only() {
    let world = TestWorld::start("cors");
    let gateway = world.gateway(&[("CORS_ORIGINS", "https://app.example")]).await;
    let client = reqwest::Client::new();
    let preflight = |url: String, origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "last-event-id")
            .send()
    };
    let allowed = preflight(gateway.url("/events?topic=a"), "https://app.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");
    let allowed_headers = allowed.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(allowed_headers.contains("last-event-id"), "{allowed_headers}");
    let other = preflight(gateway.url("/events?topic=a"), "https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let health =
        client.get(gateway.url("/healthz")).header("origin", "https://app.example").send().await.unwrap();
    assert!(health.headers().get("access-control-allow-origin").is_none(), "CORS is for /events only");

    let closed = world.gateway(&[]).await;
    let response = preflight(closed.url("/events?topic=a"), "https://app.example").await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn admin_lists_connections_on_its_own_port_and_the_demo_page_is_opt_in() {
    let world = TestWorld::start("admin");
    let gateway = world.gateway(&[("DEMO_PAGE", "true")]).await;
    let _stream = connect(&gateway.url("/events?topic=a&topic=b"), None).await;
    let admin: serde_json::Value =
        reqwest::get(gateway.admin_url("/admin/connections")).await.unwrap().json().await.unwrap();
    assert_eq!(admin["instance"], gateway.instance.as_str());
    assert_eq!(admin["totals"]["open"], 1);
    let connection = &admin["connections"][0];
    assert_eq!(connection["topics"], serde_json::json!(["a", "b"]));
    assert!(connection["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(connection["connectedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(connection["eventsSent"], 0);
    let lanes = format!("{}:0,{}:0", topic_tag("a"), topic_tag("b"));
    assert_eq!(connection["cursor"], lanes.as_str());

    let page = reqwest::get(gateway.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"import { subscribe } from "./streamgate.js""#), "{html}");
    let client = reqwest::get(gateway.url("/streamgate.js")).await.unwrap();
    assert_eq!(client.status(), 200);
    assert!(client.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let code = client.text().await.unwrap();
    assert!(code.contains("export function subscribe(") && code.contains("localStorage"));

    let without_demo = world.gateway(&[]).await;
    assert_eq!(reqwest::get(without_demo.url("/")).await.unwrap().status(), 404);
    assert_eq!(reqwest::get(without_demo.url("/streamgate.js")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_router_can_be_nested_in_another_application() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("nest");
    let config = gateway::GatewayConfig::with_overrides(&[
        ("REDIS_URL", redis.url().as_str()),
        ("KEY_PREFIX", prefix.as_str()),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ADMIN_LISTEN_ADDR", "off"),
    ])
    .unwrap();
    let application = gateway::Application::build(config).await.unwrap();
    let app = axum::Router::new().nest("/realtime", gateway::router(application.state().clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
    });
    let response = reqwest::get(format!("http://127.0.0.1:{port}/realtime/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    let stream = connect(&format!("http://127.0.0.1:{port}/realtime/events?topic=x"), None).await;
    assert_eq!(stream.status, 200);
}

#[tokio::test]
async fn a_redis_url_with_a_password_works() {
    let redis = RedisServer::start();
    let mut admin = redis.client().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://:s3cret@127.0.0.1:{}", redis.port());
    let gateway = spawn_gateway(&url, &unique_prefix("auth"), &[]).await;
    let response = reqwest::get(gateway.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 200);

    // A wrong password stops start-up with an error that does not print the password.
    let config = gateway::GatewayConfig::with_overrides(&[
        ("REDIS_URL", &format!("redis://:wrong@127.0.0.1:{}", redis.port())),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ADMIN_LISTEN_ADDR", "off"),
    ])
    .unwrap();
    let error = gateway::Application::build(config).await.err().expect("a wrong password is refused");
    let message = error.to_string();
    assert!(message.contains("cannot use redis") && !message.contains("wrong"), "{message}");
}
