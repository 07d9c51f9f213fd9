//! The admin dashboard (`GET /admin`) in Debian's Chromium, driven by playwright-core: it
//! takes the token from `?token=`, lists both live gateways, and shows a topic's
//! subscriber count that follows streams opening and closing on two gateways. A page
//! without the token asks for one. The screenshot lands in `target/test-artifacts/browser/`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use streamgate_tests::browser::{Browser, Page, artifacts_dir};
use streamgate_tests::world::TestWorld;

const DEADLINE: Duration = Duration::from_secs(30);
const TOKEN: &str = "admin-token-0123456789";

/// Waits until `expr` evaluates to `expected` in `page`.
async fn wait_for<T>(browser: &mut Browser, page: Page, expr: &str, expected: T)
where
    T: DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let value: T = browser.eval(page, expr).await;
        if value == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "{expr} is {value:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const GATEWAY_ROWS: &str = "[...document.querySelectorAll('#gateways tr[data-instance]')].map(r => r.dataset.instance + ':' + r.dataset.alive).sort()";
const ORDERS_SUBSCRIBERS: &str =
    "(document.querySelector('#topics tr[data-topic=\"orders\"] .subscribers') || {}).textContent || null";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_gateways_and_subscriber_counts_as_streams_come_and_go() {
    let world = TestWorld::start("admin-page");
    let settings = |id| [("INSTANCE_ID", id), ("ADMIN_TOKEN", TOKEN), ("LIVENESS_TTL", "3s")];
    let a = world.gateway(&settings("gw-a")).await;
    let b = world.gateway(&settings("gw-b")).await;
    let mut browser = Browser::launch().await;

    let page = browser.open(&a.admin_url(&format!("/admin?token={TOKEN}"))).await;
    wait_for(&mut browser, page, GATEWAY_ROWS, vec!["gw-a:true".to_owned(), "gw-b:true".to_owned()]).await;
    let search: String = browser.eval(page, "location.search").await;
    assert_eq!(search, "", "the token leaves the address bar");
    let kept: String = browser.eval(page, "sessionStorage.getItem('streamgate-admin-token')").await;
    assert_eq!(kept, TOKEN);
    let own: String = browser.eval(page, "document.getElementById('self').textContent").await;
    assert_eq!(own, "gw-a");

    let mut streams = Vec::new();
    for gateway in [&a, &a, &b] {
        let stream = gateway.subscribe(&["orders"], None).await;
        assert_eq!(stream.status, 200);
        streams.push(stream);
    }
    wait_for(&mut browser, page, ORDERS_SUBSCRIBERS, Some("3".to_owned())).await;
    for n in 0..20 {
        world.publish("orders", &format!("order {n}")).await;
    }
    wait_for(&mut browser, page, "window.streamgateAdmin.rates.some((rate) => rate > 0)", true).await;
    browser.screenshot(page, &artifacts_dir().join("admin-dashboard.png")).await;

    drop(streams.pop());
    wait_for(&mut browser, page, ORDERS_SUBSCRIBERS, Some("2".to_owned())).await;
    streams.clear();
    wait_for(&mut browser, page, ORDERS_SUBSCRIBERS, None::<String>).await;

    // A stopped gateway leaves the table.
    b.shutdown().await;
    wait_for(&mut browser, page, GATEWAY_ROWS, vec!["gw-a:true".to_owned()]).await;

    // Without the token (a new context has an empty sessionStorage) the page asks for it.
    let locked = browser.open(&a.admin_url("/admin")).await;
    wait_for(&mut browser, locked, "window.streamgateAdmin.error", Some("admin token required".to_owned()))
        .await;
    let asks: bool =
        browser.eval(locked, "document.getElementById('login').classList.contains('shown')").await;
    assert!(asks);
    let rows: Vec<String> = browser.eval(locked, GATEWAY_ROWS).await;
    assert!(rows.is_empty(), "nothing is shown without the token: {rows:?}");
}
