//! The guarantee as a page sees it: Debian's Chromium, driven by playwright-core, opens the
//! gateway's demo page (which uses the JavaScript client, `clients/js`) through nginx in
//! front of three gateway processes, while events numbered per topic are published and
//! gateways die. Each page's received sequence is read back from the page
//! (`window.streamgateDemo`) and checked exactly. Screenshots go to
//! `target/test-artifacts/browser/`.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use streamgate::keys::Keys;
use streamgate::topic::Topic;
use streamgate_tests::browser::{Browser, Page, artifacts_dir};
use streamgate_tests::eventsource::Publisher;
use streamgate_tests::rig::{Rig, RigOptions};

const DEADLINE: Duration = Duration::from_secs(30);

fn page_url(rig: &Rig, topics: &[&str]) -> String {
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    rig.nginx.url(&format!("/?{}", query.join("&")))
}

fn publisher(rig: &Rig) -> Publisher {
    Publisher::new(rig.producers.iter().map(|p| p.url("")).collect())
}

/// The sequence numbers `page` received on `topic`, in arrival order.
async fn seqs(browser: &mut Browser, page: Page, topic: &str) -> Vec<u64> {
    browser.eval(page, &format!("window.streamgateDemo.seqs[{topic:?}] || []")).await
}

async fn wait_open(browser: &mut Browser, page: Page) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while browser.eval::<String>(page, "window.streamgateDemo.state").await != "open" {
        assert!(tokio::time::Instant::now() < until, "the page never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `page` has `n` events of `topic`, then requires exactly `0..n`.
async fn expect_exact(browser: &mut Browser, page: Page, topic: &str, n: u64) {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = seqs(browser, page, topic).await;
        if got.len() as u64 >= n || tokio::time::Instant::now() > until {
            let expected: Vec<u64> = (0..n).collect();
            assert_eq!(got, expected, "page on {topic}: missing, repeated or out of order");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counters(browser: &mut Browser, page: Page) -> (u64, u64) {
    browser.eval(page, "[window.streamgateDemo.gaps, window.streamgateDemo.duplicates]").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_keep_a_gapless_sequence_while_one_gateway_is_killed_and_another_stopped() {
    let mut rig = Rig::start("browser-deaths", RigOptions::default()).await;
    let mut browser = Browser::launch().await;
    let topics = ["b-0", "b-1", "b-2", "b-3"];
    let mut pages = Vec::new();
    for topic in topics {
        let page = browser.open(&page_url(&rig, &[topic])).await;
        wait_open(&mut browser, page).await;
        pages.push(page);
    }
    let mut publisher = publisher(&rig);
    for round in 0..60 {
        if round == 20 {
            rig.gateways[0].kill();
        }
        if round == 40 {
            rig.gateways[1].terminate(Duration::from_secs(10));
        }
        publisher.publish_round(&topics).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut reconnects = 0;
    for (page, topic) in pages.iter().zip(topics) {
        expect_exact(&mut browser, *page, topic, 60).await;
        assert_eq!(counters(&mut browser, *page).await, (0, 0), "the page's own counters");
        reconnects += browser.eval::<u64>(*page, "window.streamgateDemo.reconnects").await;
    }
    assert!(reconnects > 0, "some page was on a gateway that died");
    browser.screenshot(pages[0], &artifacts_dir().join("demo-after-gateway-deaths.png")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mid_stream_resumes_from_the_stored_cursor() {
    let rig = Rig::start("browser-reload", RigOptions::default()).await;
    let mut browser = Browser::launch().await;
    let page = browser.open(&page_url(&rig, &["reload"])).await;
    wait_open(&mut browser, page).await;
    let mut publisher = publisher(&rig);
    for _ in 0..20 {
        publisher.publish_round(&["reload"]).await;
    }
    expect_exact(&mut browser, page, "reload", 20).await;
    // Events published while the page reloads: what the old page did not get, the new one
    // replays from the stored cursor. The page keeps what it received across the reload
    // (sessionStorage), so the whole sequence must be exact.
    let reload = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        browser.reload(page).await;
    };
    let more = async {
        for _ in 0..20 {
            publisher.publish_round(&["reload"]).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::join!(reload, more);
    expect_exact(&mut browser, page, "reload", 40).await;
    assert_eq!(browser.eval::<u64>(page, "window.streamgateDemo.reloads").await, 1);
    assert_eq!(counters(&mut browser, page).await, (0, 0));
    browser.screenshot(page, &artifacts_dir().join("demo-after-reload.png")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_a_quiet_topic_gets_the_first_event_published_while_its_gateway_dies() {
    let mut rig = Rig::start("browser-quiet", RigOptions::default()).await;
    let mut browser = Browser::launch().await;
    let topics = ["quiet-0", "quiet-1", "quiet-2", "quiet-3", "quiet-4", "quiet-5"];
    let mut pages = Vec::new();
    for topic in topics {
        let page = browser.open(&page_url(&rig, &[topic])).await;
        wait_open(&mut browser, page).await;
        pages.push(page);
    }
    // No event yet: each stream holds only its first bytes (the cursor block).
    rig.gateways[0].kill();
    rig.gateways[1].kill();
    let mut publisher = publisher(&rig);
    publisher.publish_round(&topics).await;
    for (page, topic) in pages.iter().zip(topics) {
        expect_exact(&mut browser, *page, topic, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_history_shows_the_reset_callback() {
    let rig = Rig::start("browser-trim", RigOptions::default()).await;
    let mut browser = Browser::launch().await;
    let url = page_url(&rig, &["trim"]);
    let page = browser.open(&url).await;
    wait_open(&mut browser, page).await;
    let mut publisher = publisher(&rig);
    for _ in 0..3 {
        publisher.publish_round(&["trim"]).await;
    }
    expect_exact(&mut browser, page, "trim", 3).await;
    // Away (the page's storage keeps its cursor) while two more events come and retention
    // removes everything.
    browser.goto(page, "about:blank").await;
    publisher.publish_round(&["trim"]).await;
    publisher.publish_round(&["trim"]).await;
    let keys = Keys::new(&rig.prefix).unwrap();
    let mut conn = rig.redis().client().await;
    let _: () = conn
        .xtrim(keys.history(&Topic::parse("trim", 256).unwrap()), redis::streams::StreamMaxlen::Equals(0))
        .await
        .unwrap();
    browser.goto(page, &url).await;
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let resets: Vec<HashMap<String, String>> = browser.eval(page, "window.streamgateDemo.resets").await;
        if !resets.is_empty() {
            assert_eq!(resets[0]["topic"], "trim");
            assert_eq!(resets[0]["reason"], "trimmed");
            break;
        }
        assert!(tokio::time::Instant::now() < until, "no reset callback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.publish_round(&["trim"]).await;
    let until = tokio::time::Instant::now() + DEADLINE;
    // The page keeps what it received across the navigation: 0..2, then (after the reset)
    // the first event published after it.
    while seqs(&mut browser, page, "trim").await != [0, 1, 2, 5] {
        assert!(tokio::time::Instant::now() < until, "the event after the reset did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.screenshot(page, &artifacts_dir().join("demo-reset.png")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_topic_page_keeps_both_sequences_across_a_reconnect() {
    let mut rig = Rig::start("browser-multi", RigOptions::default()).await;
    let mut browser = Browser::launch().await;
    let mut pages = Vec::new();
    for _ in 0..3 {
        let page = browser.open(&page_url(&rig, &["m-a", "m-b"])).await;
        wait_open(&mut browser, page).await;
        pages.push(page);
    }
    let mut publisher = publisher(&rig);
    for round in 0..40 {
        if round == 15 {
            rig.gateways[0].kill();
            rig.gateways[1].kill();
        }
        publisher.publish_round(&["m-a", "m-b"]).await;
    }
    for page in pages {
        expect_exact(&mut browser, page, "m-a", 40).await;
        expect_exact(&mut browser, page, "m-b", 40).await;
    }
}
