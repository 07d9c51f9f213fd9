//! The admin API of real gateways against a real Redis: a topic's subscribers across two
//! gateways as streams open and close, its history page by page, the connection listing's
//! filters, closing one stream (its client resumes with nothing lost or repeated), bad
//! input, and the token on every new route.

use std::time::Duration;

use serde_json::Value;
use streamgate_tests::eventsource::Subscriber;
use streamgate_tests::gateway_app::TestGateway;
use streamgate_tests::publish::event;
use streamgate_tests::sse_client::{SseStream, connect};
use streamgate_tests::wait::wait_until;
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(15);
const TOKEN: &str = "admin-token-0123456789";

/// A request to `gateway`'s admin listener with the token; the status and the JSON body
/// (`Null` when the body is not JSON).
async fn admin(gateway: &TestGateway, method: &str, path: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = reqwest::Client::new()
        .request(method, gateway.admin_url(path))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(gateway: &TestGateway, path: &str) -> (u16, Value) {
    admin(gateway, "GET", path).await
}

async fn open(gateway: &TestGateway, query: &str) -> SseStream {
    let stream = connect(&gateway.url(&format!("/events?{query}")), None).await;
    assert_eq!(stream.status, 200);
    stream
}

/// `(instance, subscribers, alive)` of each gateway the topic view lists, and its total.
async fn subscribers(gateway: &TestGateway, topic: &str) -> (u64, Vec<(String, u64, bool)>) {
    let (status, body) = get(gateway, &format!("/admin/topics/{topic}")).await;
    assert_eq!(status, 200, "{body}");
    let per_gateway = body["subscribers"]["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["instance"].as_str().unwrap().to_owned(),
                g["subscribers"].as_u64().unwrap(),
                g["alive"] == true,
            )
        })
        .collect();
    (body["subscribers"]["total"].as_u64().unwrap(), per_gateway)
}

fn expect_bad_request(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: a JSON error, got {body}");
}

async fn two_gateways(world: &TestWorld) -> (TestGateway, TestGateway) {
    let a = world.gateway(&[("ADMIN_TOKEN", TOKEN), ("INSTANCE_ID", "gw-a")]).await;
    let b = world.gateway(&[("ADMIN_TOKEN", TOKEN), ("INSTANCE_ID", "gw-b")]).await;
    (a, b)
}

#[tokio::test]
async fn a_topics_subscribers_per_gateway_follow_streams_opening_and_closing() {
    let world = TestWorld::start("admintopic");
    let (a, b) = two_gateways(&world).await;
    let (status, body) = get(&a, "/admin/topics/room").await;
    assert_eq!(status, 404, "nothing is known of the topic yet: {body}");
    assert!(body["error"].as_str().unwrap().contains("unknown topic"), "{body}");

    let on_a_1 = open(&a, "topic=room").await;
    let on_a_2 = open(&a, "topic=room&topic=other").await;
    let on_b = open(&b, "topic=room").await;
    let expected = |a_count: u64, b_count: u64| {
        let mut listed = Vec::new();
        if a_count > 0 {
            listed.push(("gw-a".to_owned(), a_count, true));
        }
        if b_count > 0 {
            listed.push(("gw-b".to_owned(), b_count, true));
        }
        (a_count + b_count, listed)
    };
    // Either gateway tells the same, cluster-wide.
    for asked in [&a, &b] {
        wait_until("two on gw-a and one on gw-b", WAIT, || async {
            subscribers(asked, "room").await == expected(2, 1)
        })
        .await;
    }
    drop(on_a_1);
    wait_until("one left on gw-a", WAIT, || async { subscribers(&b, "room").await == expected(1, 1) }).await;
    drop(on_b);
    wait_until("none left on gw-b", WAIT, || async { subscribers(&a, "room").await == expected(1, 0) }).await;
    assert_eq!(subscribers(&a, "other").await, (1, vec![("gw-a".to_owned(), 1, true)]));

    // A gateway that shuts down takes its subscribers with it; the history stays known.
    let first = world.publish("room", "one").await;
    let last = world.publish("room", "two").await;
    drop(on_a_2);
    a.shutdown().await;
    wait_until("no subscriber left", WAIT, || async { subscribers(&b, "room").await == (0, Vec::new()) })
        .await;
    let (status, body) = get(&b, "/admin/topics/room").await;
    assert_eq!(status, 200);
    let history = &body["history"];
    assert_eq!(history["length"], 2);
    let (first_id, epoch) = first.split_once('~').unwrap();
    assert_eq!(history["firstId"], first_id);
    assert_eq!(history["lastId"], last.split_once('~').unwrap().0);
    assert_eq!(history["epoch"], epoch);
    assert_eq!(history["lastCursor"], last.as_str());
    let published_ms: u64 = first_id.split('-').next().unwrap().parse().unwrap();
    let last_publish = body["lastPublishMs"].as_u64().expect("the topic index has the last publish");
    assert!(last_publish >= published_ms && last_publish < published_ms + 60_000, "{body}");
    assert!(body["lastPublishAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_topics_history_is_paged_after_an_exclusive_cursor() {
    let world = TestWorld::start("adminhist");
    let gateway = world.gateway(&[("ADMIN_TOKEN", TOKEN)]).await;
    let batch: Vec<_> = (0..105)
        .map(|n| event("log", (n % 2 == 0).then_some("even"), &format!("line {n}\nsecond line")))
        .collect();
    let published = world.publisher.publish(&batch).await.unwrap();
    let cursors: Vec<String> = published.iter().map(|p| p.cursor.to_string()).collect();

    let (status, first_page) = get(&gateway, "/admin/topics/log/history").await;
    assert_eq!(status, 200, "{first_page}");
    let events = first_page["events"].as_array().unwrap();
    assert_eq!(events.len(), 100, "the default page");
    assert_eq!(first_page["next"], events[99]["id"]);
    assert_eq!(events[0]["cursor"], cursors[0].as_str());
    assert_eq!(events[0]["event"], "even");
    assert_eq!(events[1]["event"], Value::Null);
    assert_eq!(events[1]["data"], "line 1\nsecond line");
    assert_eq!(events[1]["prev"], events[0]["id"]);
    assert_eq!(first_page["epoch"], cursors[0].split_once('~').unwrap().1);

    let mut seen = Vec::new();
    let mut after = String::new();
    for expected in [40, 40, 25] {
        let (status, page) = get(&gateway, &format!("/admin/topics/log/history?limit=40{after}")).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert_eq!(events.len(), expected, "{page}");
        seen.extend(events.iter().map(|e| e["cursor"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => assert_eq!(expected, 25, "only the last page has no next"),
        }
    }
    assert_eq!(seen, cursors, "every event once, in history order");

    // A cursor as clients hold it works as `after` too.
    let (_, page) = get(&gateway, &format!("/admin/topics/log/history?limit=1&after={}", cursors[103])).await;
    assert_eq!(page["events"][0]["cursor"], cursors[104].as_str());
    assert_eq!(page["next"], Value::Null);

    for query in ["limit=0", "limit=1001", "limit=x", "after=yesterday", "after=1-2~", "after=-1"] {
        let (status, body) = get(&gateway, &format!("/admin/topics/log/history?{query}")).await;
        expect_bad_request(status, &body, query);
    }
    let (status, body) = get(&gateway, "/admin/topics/nothing-here/history").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string());
    let long = "x".repeat(300);
    for path in [
        "/admin/topics/a%0Ab".to_owned(),
        format!("/admin/topics/{long}"),
        format!("/admin/topics/{long}/history"),
    ] {
        let (status, body) = get(&gateway, &path).await;
        expect_bad_request(status, &body, &path);
    }
}

#[tokio::test]
async fn connections_are_listed_by_topic_and_client_address() {
    let world = TestWorld::start("adminfilter");
    let gateway = world.gateway(&[("ADMIN_TOKEN", TOKEN)]).await;
    let _x = open(&gateway, "topic=x").await;
    let _y = open(&gateway, "topic=y").await;
    let _xy = open(&gateway, "topic=x&topic=y").await;
    let topics_of = |body: &Value| -> Vec<Vec<String>> {
        body["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["topics"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .collect()
    };
    let (_, by_x) = get(&gateway, "/admin/connections?topic=x").await;
    assert_eq!(topics_of(&by_x), [vec!["x"], vec!["x", "y"]]);
    let (_, by_y) = get(&gateway, "/admin/connections?topic=y").await;
    assert_eq!(topics_of(&by_y), [vec!["y"], vec!["x", "y"]]);
    let (_, by_z) = get(&gateway, "/admin/connections?topic=z").await;
    assert_eq!(topics_of(&by_z), Vec::<Vec<String>>::new());
    assert_eq!(by_z["totals"]["open"], 3, "totals stay the instance's");

    let (_, all) = get(&gateway, "/admin/connections?remote=127.0.0.1").await;
    assert_eq!(all["connections"].as_array().unwrap().len(), 3);
    let (_, elsewhere) = get(&gateway, "/admin/connections?remote=10.0.0.1").await;
    assert!(elsewhere["connections"].as_array().unwrap().is_empty());
    let both_addr = all["connections"][2]["remoteAddr"].as_str().unwrap().to_owned();
    let (_, one) = get(&gateway, &format!("/admin/connections?remote={both_addr}&topic=x")).await;
    assert_eq!(topics_of(&one), [vec!["x", "y"]]);

    // Filtered pages chain like unfiltered ones.
    let (_, page) = get(&gateway, "/admin/connections?topic=x&limit=1").await;
    assert_eq!(topics_of(&page), [vec!["x"]]);
    let next = page["next"].as_u64().expect("a second page");
    let (_, page) = get(&gateway, &format!("/admin/connections?topic=x&limit=1&after={next}")).await;
    assert_eq!(topics_of(&page), [vec!["x", "y"]]);
    assert_eq!(page["next"], Value::Null);

    for query in ["remote=nonsense", "topic=", "topic=a%0Ab", "limit=x", "limit=0", "after=-1"] {
        let (status, body) = get(&gateway, &format!("/admin/connections?{query}")).await;
        expect_bad_request(status, &body, query);
    }
}

#[tokio::test]
async fn closing_a_connection_ends_its_stream_and_its_client_resumes_without_loss_or_duplicate() {
    let world = TestWorld::start("adminclose");
    let gateway = world.gateway(&[("ADMIN_TOKEN", TOKEN)]).await;
    let subscriber = Subscriber::start(&gateway.url(""), &["room"], None);
    wait_until("the subscriber is connected", WAIT, || async { subscriber.is_connected() }).await;
    for seq in 0..5 {
        world.publish("room", &format!("room {seq}")).await;
    }
    wait_until("five events", WAIT, || async { subscriber.count("room") == 5 }).await;
    let (_, listed) = get(&gateway, "/admin/connections?topic=room").await;
    let id = listed["connections"][0]["id"].as_u64().unwrap();

    let (status, _) = admin(&gateway, "DELETE", &format!("/admin/connections/{id}")).await;
    assert_eq!(status, 204);
    // Published while the client is away: it must get them from its cursor.
    for seq in 5..10 {
        world.publish("room", &format!("room {seq}")).await;
    }
    wait_until("ten events", WAIT, || async { subscriber.count("room") == 10 }).await;
    let received = subscriber.received();
    assert_eq!(received.seqs["room"], (0..10).collect::<Vec<u64>>(), "nothing lost or repeated");
    assert!(received.resets.is_empty(), "{:?}", received.resets);
    assert_eq!(subscriber.connects.load(std::sync::atomic::Ordering::Relaxed), 2, "one reconnect");
    let (status, body) = admin(&gateway, "DELETE", &format!("/admin/connections/{id}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no open connection"));
    let (_, listed) = get(&gateway, "/admin/connections?topic=room").await;
    assert_ne!(
        listed["connections"][0]["id"].as_u64().unwrap(),
        id,
        "the client came back as a new connection"
    );

    let metrics = reqwest::Client::new()
        .get(gateway.admin_url("/metrics"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("streamgate_gateway_connections_closed_total{reason=\"admin\"} 1"), "{metrics}");
    let (status, body) = admin(&gateway, "DELETE", "/admin/connections/first").await;
    expect_bad_request(status, &body, "a connection id that is no number");
}

#[tokio::test]
async fn the_new_admin_routes_require_the_token_and_the_page_needs_none() {
    let world = TestWorld::start("admintoken");
    let gateway = world.gateway(&[("ADMIN_TOKEN", TOKEN)]).await;
    let client = reqwest::Client::new();
    let routes = [
        ("GET", "/admin/cluster"),
        ("GET", "/admin/topics/room"),
        ("GET", "/admin/topics/room/history"),
        ("GET", "/admin/connections?topic=room"),
        ("DELETE", "/admin/connections/1"),
    ];
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for authorization in [None, Some("Bearer wrong-token-0123456789")] {
            let mut request = client.request(method.clone(), gateway.admin_url(path));
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {authorization:?}");
        }
        let response =
            client.request(method.clone(), gateway.admin_url(path)).bearer_auth(TOKEN).send().await.unwrap();
        assert_ne!(response.status(), 401, "{method} {path} with the token");
    }
    let page = client.get(gateway.admin_url("/admin")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("window.streamgateAdmin") && html.contains("sessionStorage"));
    for path in ["/admin", "/admin/cluster", "/admin/topics/room"] {
        assert_eq!(
            client.get(gateway.url(path)).send().await.unwrap().status(),
            404,
            "{path} on the public port"
        );
    }
}
