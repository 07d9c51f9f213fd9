//! Subscriber authorization against a real gateway: JWTs signed in the test (HS256, and
//! RS256/ES256 keys made by openssl, published as a JWKS file or URL), every rejection
//! class, the three token transports, expiry mid-stream, re-authorization before replay,
//! and a real subscribe hook (axum on port 0) that allows, denies, narrows and stalls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use streamgate_tests::gateway_app::TestGateway;
use streamgate_tests::sse_client::connect_with_headers;
use streamgate_tests::tokens::{KeyPair, SECRET, claims, hs256, unsigned, write_jwks};
use streamgate_tests::world::TestWorld;

const WAIT: Duration = Duration::from_secs(10);

/// A plain GET (no `Accept: text/event-stream`): status, headers and body.
async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // A 200 is an endless stream: only its head matters here.
    let body = if status == 200 { String::new() } else { response.text().await.unwrap() };
    (status, headers, body)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A gateway in `world` verifying HS256 tokens, with `public:` topics open to all.
async fn jwt_gateway(world: &TestWorld, extra: &[(&str, &str)]) -> TestGateway {
    let mut settings =
        vec![("SUBSCRIBE_AUTH", "jwt"), ("JWT_SECRET", SECRET), ("PUBLIC_TOPIC_PREFIXES", "public:")];
    settings.extend_from_slice(extra);
    world.gateway(&settings).await
}

#[tokio::test]
async fn every_invalid_token_gets_401_with_a_bearer_challenge_and_public_topics_need_none() {
    let world = TestWorld::start("jwt401");
    let gateway = jwt_gateway(&world, &[]).await;
    let keys = tempfile::tempdir().unwrap();
    let rsa = KeyPair::rsa(keys.path(), "rsa-1");
    let good = claims(&["order:*"], 60);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing token"),
        ("expired", Some(hs256(&claims(&["order:*"], -5), SECRET)), "token expired"),
        ("bad signature", Some(hs256(&good, "another-secret-0123456789-abcdefgh")), "signature"),
        ("alg none", Some(unsigned(&good)), "malformed"),
        (
            "RS256 where only HS256 is configured",
            Some(rsa.sign(&good, None)),
            "algorithm RS256 is not accepted",
        ),
        ("not a JWT", Some("abc.def".into()), "malformed"),
        ("no exp", Some(hs256(&json!({"topics": ["order:*"]}), SECRET)), "missing claim exp"),
    ];
    for (what, token, expected) in cases {
        let mut headers = Vec::new();
        let value = token.as_deref().map(bearer);
        if let Some(value) = &value {
            headers.push(("authorization", value.as_str()));
        }
        // An EventSource gets the 401 too: a new token is needed, retrying cannot help.
        headers.push(("accept", "text/event-stream"));
        let (status, response_headers, body) = get(&gateway.url("/events?topic=order:1"), &headers).await;
        assert_eq!(status, 401, "{what}: {body}");
        let challenge = response_headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        assert_eq!(challenge.contains("invalid_token"), token.is_some(), "{what}: {challenge}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains(expected), "{what}: {body}");
    }
    let (status, _, _) = get(&gateway.url("/events?topic=public:news"), &[]).await;
    assert_eq!(status, 200, "a public topic needs no token");
    let (status, _, _) = get(&gateway.url("/events?topic=public:news&topic=order:1"), &[]).await;
    assert_eq!(status, 401, "one guarded topic needs a token");
}

#[tokio::test]
async fn the_topics_claim_opens_exact_names_and_prefix_patterns_only() {
    let world = TestWorld::start("jwt403");
    let gateway = jwt_gateway(&world, &[]).await;
    let token = hs256(&claims(&["order:*", "user:42:*", "status"], 60), SECRET);
    let authorization = bearer(&token);
    let cases = [
        ("order:1", 200, None),
        ("order:1:x", 200, None),
        ("order", 403, Some("order")),
        ("orders:1", 403, Some("orders:1")),
        ("user:42:inbox", 200, None),
        ("user:421:inbox", 403, Some("user:421:inbox")),
        ("status", 200, None),
        ("status:1", 403, Some("status:1")),
        ("public:anything", 200, None),
    ];
    for (topic, expected, refused) in cases {
        let (status, _, body) =
            get(&gateway.url(&format!("/events?topic={topic}")), &[("authorization", &authorization)]).await;
        assert_eq!(status, expected, "{topic}: {body}");
        if let Some(refused) = refused {
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["topic"], refused, "{body}");
        }
    }
    let (status, _, body) =
        get(&gateway.url("/events?topic=order:1&topic=secret"), &[("authorization", &authorization)]).await;
    assert_eq!(status, 403);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["topic"], "secret");

    let everything = bearer(&hs256(&claims(&["*"], 60), SECRET));
    let (status, _, _) =
        get(&gateway.url("/events?topic=any:thing"), &[("authorization", &everything)]).await;
    assert_eq!(status, 200);
    let nothing = bearer(&hs256(&json!({"exp": streamgate_tests::tokens::now() + 60}), SECRET));
    let (status, _, _) = get(&gateway.url("/events?topic=order:1"), &[("authorization", &nothing)]).await;
    assert_eq!(status, 403, "a token without topics opens only public topics");
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_a_jwks_file_by_kid_without_algorithm_confusion() {
    let world = TestWorld::start("jwks");
    let keys = tempfile::tempdir().unwrap();
    let rsa = KeyPair::rsa(keys.path(), "rsa-1");
    let ec = KeyPair::ec(keys.path(), "ec-1");
    let jwks = write_jwks(keys.path(), &[&rsa, &ec]);
    let gateway = world.gateway(&[("SUBSCRIBE_AUTH", "jwt"), ("JWKS_FILE", jwks.to_str().unwrap())]).await;
    let good = claims(&["t:*"], 60);
    let url = gateway.url("/events?topic=t:1");
    let status_of = |token: String| {
        let url = url.clone();
        async move { get(&url, &[("authorization", &bearer(&token))]).await.0 }
    };
    assert_eq!(status_of(rsa.sign(&good, None)).await, 200, "RS256 by kid");
    assert_eq!(status_of(ec.sign(&good, None)).await, 200, "ES256 by kid");
    assert_eq!(status_of(rsa.sign(&good, Some("ec-1"))).await, 401, "an RS256 token naming the EC key");
    assert_eq!(status_of(rsa.sign(&good, Some("gone"))).await, 401, "an unknown kid");
    // HS/RS confusion: an HS256 token whose HMAC key is the RSA public key's modulus text.
    let jsonwebtoken::jwk::AlgorithmParameters::RSA(public) = &rsa.public.algorithm else {
        panic!("an RSA key")
    };
    assert_eq!(status_of(hs256(&good, &public.n)).await, 401, "HS256 signed with the public key");
    assert_eq!(status_of(unsigned(&good)).await, 401, "alg none");
    let other = KeyPair::ec(keys.path(), "ec-1-impostor");
    assert_eq!(status_of(other.sign(&good, Some("ec-1"))).await, 401, "a key not in the set");
}

#[tokio::test]
async fn a_jwks_url_is_fetched_at_start_up() {
    let world = TestWorld::start("jwksurl");
    let keys = tempfile::tempdir().unwrap();
    let rsa = KeyPair::rsa(keys.path(), "rsa-url");
    let document =
        serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![rsa.public.clone()] }).unwrap();
    let app = axum::Router::new().route("/jwks.json", axum::routing::get(move || async move { document }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway = world.gateway(&[("SUBSCRIBE_AUTH", "jwt"), ("JWKS_URL", &jwks_url)]).await;
    let token = rsa.sign(&claims(&["t"], 60), None);
    let (status, _, body) = get(&gateway.url("/events?topic=t"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_cookie_carries_the_token_and_a_browser_like_reconnect_resumes_exactly() {
    let world = TestWorld::start("cookie");
    let gateway =
        world.gateway(&[("SUBSCRIBE_AUTH", "jwt"), ("JWT_SECRET", SECRET), ("AUTH_COOKIE", "sg")]).await;
    let cookie = format!("theme=dark; sg={}", hs256(&claims(&["room:*"], 60), SECRET));
    let mut stream = connect_with_headers(&gateway.url("/events?topic=room:1"), &[("cookie", &cookie)]).await;
    assert_eq!(stream.status, 200);
    for n in 0..3 {
        world.publish("room:1", &n.to_string()).await;
    }
    let seen = stream.take(3, WAIT).await;
    drop(stream);
    for n in 3..5 {
        world.publish("room:1", &n.to_string()).await;
    }
    let cursor = seen[2].id.clone();
    let mut resumed = connect_with_headers(
        &gateway.url("/events?topic=room:1"),
        &[("cookie", &cookie), ("last-event-id", &cursor)],
    )
    .await;
    let data: Vec<String> = resumed.take(2, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["3", "4"]);
    resumed.expect_silence(Duration::from_millis(300)).await;

    let (status, _, _) = get(&gateway.url("/events?topic=room:1"), &[("cookie", "streamgate_token=x")]).await;
    assert_eq!(status, 401, "only the configured cookie name counts");
}

#[tokio::test]
async fn a_query_token_is_accepted_only_when_enabled() {
    let world = TestWorld::start("query");
    let token = hs256(&claims(&["q"], 60), SECRET);
    let path = format!("/events?topic=q&token={token}");
    let closed = jwt_gateway(&world, &[]).await;
    assert_eq!(get(&closed.url(&path), &[]).await.0, 401);
    let open = jwt_gateway(&world, &[("ALLOW_QUERY_TOKEN", "true")]).await;
    assert_eq!(get(&open.url(&path), &[]).await.0, 200);
}

#[tokio::test]
async fn a_token_expiring_mid_stream_ends_it_with_auth_expired_and_a_reconnect_is_checked_before_replay() {
    let world = TestWorld::start("expiry");
    let gateway = world.gateway(&[("SUBSCRIBE_AUTH", "jwt"), ("JWT_SECRET", SECRET)]).await;
    let short = bearer(&hs256(&claims(&["news"], 2), SECRET));
    let mut stream =
        connect_with_headers(&gateway.url("/events?topic=news"), &[("authorization", &short)]).await;
    assert_eq!(stream.status, 200);
    world.publish("news", "before").await;
    let events = stream.until_end(WAIT).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["message", "streamgate.auth_expired"], "{events:?}");
    assert_eq!(events[0].data, "before");
    let notice: serde_json::Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(notice, json!({"reason": "token_expired", "topics": ["news"]}));
    // The notice carries no id: the browser's lastEventId stays the cursor of "before".
    let cursor = events[0].id.clone();
    assert_eq!(events[1].id, cursor);

    world.publish("news", "after").await;
    // The browser reconnects by itself with the expired token: refused before any replay.
    let (status, _, body) =
        get(&gateway.url("/events?topic=news"), &[("authorization", &short), ("last-event-id", &cursor)])
            .await;
    assert_eq!(status, 401);
    assert!(!body.contains("after"), "{body}");
    // The page gets a new token and resumes exactly.
    let fresh = bearer(&hs256(&claims(&["news"], 60), SECRET));
    let mut resumed = connect_with_headers(
        &gateway.url("/events?topic=news"),
        &[("authorization", &fresh), ("last-event-id", &cursor)],
    )
    .await;
    let data: Vec<String> = resumed.take(1, WAIT).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["after"]);
}

/// A subscribe hook that decides by the bearer token it receives and counts its calls.
struct Hook {
    url: String,
    calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

async fn start_hook() -> Hook {
    use axum::http::{HeaderMap, StatusCode};
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (counter, log) = (Arc::clone(&calls), Arc::clone(&seen));
    let handler = move |headers: HeaderMap, axum::Json(body): axum::Json<serde_json::Value>| {
        let counter = Arc::clone(&counter);
        let log = Arc::clone(&log);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let cookie = headers.get("cookie").map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push(json!({"body": body, "cookie": cookie}));
            let token =
                headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            match token.as_str() {
                "Bearer allow" => (StatusCode::OK, String::new()),
                "Bearer narrow" => (StatusCode::OK, json!({"topics": ["mine:*"]}).to_string()),
                "Bearer deny" => (StatusCode::FORBIDDEN, String::new()),
                "Bearer slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (StatusCode::OK, String::new())
                }
                "Bearer broken" => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                _ => (StatusCode::UNAUTHORIZED, String::new()),
            }
        }
    };
    let app = axum::Router::new().route("/authorize", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/authorize", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Hook { url, calls, seen }
}

#[tokio::test]
async fn the_subscribe_hook_allows_denies_narrows_and_is_cached_per_credential() {
    let world = TestWorld::start("hook");
    let hook = start_hook().await;
    let gateway = world
        .gateway(&[
            ("SUBSCRIBE_AUTH", "hook"),
            ("SUBSCRIBE_AUTH_URL", &hook.url),
            ("SUBSCRIBE_AUTH_CACHE", "30s"),
            ("PUBLIC_TOPIC_PREFIXES", "public:"),
        ])
        .await;
    let status = |topics: &'static str, token: &'static str| {
        let url = gateway.url(&format!("/events?{topics}"));
        async move {
            let authorization = format!("Bearer {token}");
            get(&url, &[("authorization", &authorization), ("cookie", "session=s1")]).await
        }
    };
    assert_eq!(status("topic=a&topic=public:x", "allow").await.0, 200);
    let seen = hook.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["body"]["topics"], json!(["a"]), "public topics are not asked about");
    assert_eq!(seen["body"]["clientIp"], "127.0.0.1");
    assert_eq!(seen["cookie"], "session=s1");
    assert_eq!(status("topic=a&topic=public:x", "allow").await.0, 200);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1, "the second request is answered from the cache");

    assert_eq!(status("topic=mine:1", "narrow").await.0, 200);
    let (code, _, body) = status("topic=mine:1&topic=theirs:1", "narrow").await;
    assert_eq!(code, 403);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["topic"], "theirs:1");
    assert_eq!(status("topic=a", "deny").await.0, 403);
    let (code, headers, _) = status("topic=a", "nobody").await;
    assert_eq!(code, 401);
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let calls = hook.calls.load(Ordering::SeqCst);
    assert_eq!(status("topic=a", "deny").await.0, 403);
    assert_eq!(hook.calls.load(Ordering::SeqCst), calls, "denials are cached too");
    let (code, _, _) = get(&gateway.url("/events?topic=a"), &[]).await;
    assert_eq!(code, 401, "no credentials: the hook is not asked");
    assert_eq!(hook.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn a_hook_that_times_out_or_fails_is_a_retryable_refusal_and_never_cached() {
    let world = TestWorld::start("hookslow");
    let hook = start_hook().await;
    let gateway = world
        .gateway(&[
            ("SUBSCRIBE_AUTH", "hook"),
            ("SUBSCRIBE_AUTH_URL", &hook.url),
            ("SUBSCRIBE_AUTH_TIMEOUT", "300ms"),
            ("RETRY_INTERVAL", "1s"),
        ])
        .await;
    let started = std::time::Instant::now();
    let (status, headers, body) =
        get(&gateway.url("/events?topic=a"), &[("authorization", "Bearer slow")]).await;
    assert!(started.elapsed() < Duration::from_secs(2), "the timeout is enforced: {:?}", started.elapsed());
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    // An EventSource gets a 200 that only sets retry:, so it keeps trying.
    let raw = reqwest::Client::new()
        .get(gateway.url("/events?topic=a"))
        .header("accept", "text/event-stream")
        .header("authorization", "Bearer broken")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let text = raw.text().await.unwrap();
    assert!(text.starts_with("retry: ") && !text.contains("id:") && !text.contains("data:"), "{text:?}");
    let calls = hook.calls.load(Ordering::SeqCst);
    let _ = get(&gateway.url("/events?topic=a"), &[("authorization", "Bearer broken")]).await;
    assert_eq!(hook.calls.load(Ordering::SeqCst), calls + 1, "an unavailable answer is not cached");
}
