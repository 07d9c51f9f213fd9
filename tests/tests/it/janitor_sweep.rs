//! The janitor against real Redis, real gateway processes and the real `janitor` binary:
//! dead instances removed while live ones keep their registrations, a gateway restarting
//! mid-sweep, two janitors at once, dry runs, retention, malformed keys, the budget, exit
//! codes and the JSON report. Each scenario that depends on where keys live is a function
//! of its [`Target`] (`…_on`), run here on one server and by [`cluster`] on a Redis Cluster.

mod cluster;
mod fence;
mod metrics;
mod support;

use janitor::SweepReport;
use janitor::instances::Claim;
use redis::AsyncCommands;
use streamgate::stream::field;
use streamgate_tests::binaries::workspace_binary;
use streamgate_tests::gateway_app::spawn_gateway;
use streamgate_tests::publish::publish_one;
use streamgate_tests::redis_server::{RedisServer, unique_prefix};
use streamgate_tests::sse_client::connect;
use support::{
    GatewayProcess, Target, WAIT, counts, dump, fabricate_dead_instance, free_port, id_ms, instance,
    janitor_command, keys, run_janitor, server_time_ms, sweeper, topic, wait_until,
};

/// A Redis whose streams hold one entry per macro node, so approximate trimming
/// (`XTRIM ~`, which removes whole nodes) is exact and tests can count what it removes.
fn redis_with_exact_trimming() -> RedisServer {
    RedisServer::builder().config("stream-node-max-entries", "1").start()
}

#[tokio::test]
async fn sigkilled_gateway_is_removed_while_a_live_gateway_keeps_its_registration() {
    let redis = RedisServer::start();
    sigkilled_gateway_is_removed_while_a_live_gateway_keeps_its_registration_on(&Target::single(&redis))
        .await;
}

async fn sigkilled_gateway_is_removed_while_a_live_gateway_keeps_its_registration_on(target: &Target) {
    let prefix = unique_prefix("janitor-sigkill");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    let live = spawn_gateway(target.url(), &prefix, &target.settings(&[])).await;
    let mut live_stream = connect(&live.url("/events?topic=news"), None).await;
    let mut dead = GatewayProcess::start(target, &prefix, "gw-doomed").await;
    let _dead_stream = connect(&dead.url("/events?topic=news&topic=sports"), None).await;
    let (news, sports) = (keys.group(&topic("news")), keys.group(&topic("sports")));
    wait_until("both gateways registered", || {
        let mut conn = conn.clone();
        let (news, sports, live) = (news.clone(), sports.clone(), live.instance.clone());
        async move {
            let news: Vec<String> = conn.hkeys(&news).await.unwrap();
            let sports: bool = conn.hexists(&sports, "gw-doomed").await.unwrap();
            news.contains(&live) && news.contains(&"gw-doomed".to_owned()) && sports
        }
    })
    .await;
    let publisher = target.publisher(&prefix);
    publish_one(&publisher, "news", "before").await;
    assert_eq!(live_stream.take(1, WAIT).await[0].data, "before");
    let doomed = instance("gw-doomed");
    let doomed_stream = keys.instance_stream(&doomed);
    assert!(conn.exists::<_, bool>(&doomed_stream).await.unwrap(), "the event was routed to both");

    dead.kill();
    let alive_key = keys.instance_alive(&doomed);
    wait_until("the killed gateway's liveness expired", || {
        let (mut conn, alive_key) = (conn.clone(), alive_key.clone());
        async move { !conn.exists::<_, bool>(&alive_key).await.unwrap() }
    })
    .await;
    let report = run_janitor(target.url(), &prefix, &[], &target.settings(&[])).await.report();

    assert_eq!(report["dead_instances"], 1, "{report}");
    assert_eq!(report["membership_fields_removed"], 2, "{report}");
    assert_eq!(report["instance_streams_deleted"], 1, "{report}");
    assert_eq!(report["group_hashes_deleted"], 1, "sports had no other subscriber: {report}");
    let news_fields: Vec<String> = conn.hkeys(&news).await.unwrap();
    assert_eq!(news_fields, [live.instance.as_str()]);
    assert!(!conn.exists::<_, bool>(&sports).await.unwrap());
    let leftovers: Vec<String> = conn.keys(format!("{prefix}:i:{{gw-doomed}}*")).await.unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let index: Vec<String> = conn.zrange(keys.instances(), 0, -1).await.unwrap();
    assert_eq!(index, [live.instance.as_str()]);
    // The live gateway noticed nothing.
    publish_one(&publisher, "news", "after").await;
    assert_eq!(live_stream.take(1, WAIT).await[0].data, "after");
}

#[tokio::test]
async fn gateway_restarting_during_a_sweep_waits_for_it_and_keeps_its_registration() {
    let redis = RedisServer::start();
    gateway_restarting_during_a_sweep_waits_for_it_and_keeps_its_registration_on(&Target::single(&redis))
        .await;
}

async fn gateway_restarting_during_a_sweep_waits_for_it_and_keeps_its_registration_on(target: &Target) {
    let prefix = unique_prefix("janitor-restart");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    fabricate_dead_instance(&mut conn, &keys, "gw-pod-0", &["a", "b"]).await;
    let sweeper = sweeper(target, &prefix, &[]);
    let id = instance("gw-pod-0");

    // The janitor claims the dead instance...
    let Claim::Claimed(claim) = sweeper.claim_instance(&id).await.unwrap() else {
        panic!("a dead instance can be claimed");
    };
    // ...then a gateway starts under the same id (a StatefulSet pod coming back).
    let (url, gateway_prefix) = (target.url().to_owned(), prefix.clone());
    let settings: Vec<(String, String)> = target
        .settings(&[("INSTANCE_ID", "gw-pod-0"), ("LIVENESS_TTL", "3s")])
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let starting = tokio::spawn(async move {
        let settings: Vec<(&str, &str)> = settings.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        spawn_gateway(&url, &gateway_prefix, &settings).await
    });
    let index = keys.instances();
    wait_until("the gateway tried to claim its liveness", || {
        let (mut conn, index) = (conn.clone(), index.clone());
        async move { conn.zscore::<_, _, Option<u64>>(&index, "gw-pod-0").await.unwrap().is_some_and(|s| s > 1) }
    })
    .await;
    assert!(!conn.exists::<_, bool>(keys.instance_alive(&id)).await.unwrap(), "it waits for the sweep");
    assert!(!starting.is_finished());

    let report = sweeper.remove_claimed_instance(claim).await.unwrap();
    assert_eq!(report.dead_instances, 1);
    assert_eq!(report.membership_fields_removed, 2);
    assert_eq!(report.instance_streams_deleted, 1);
    let gateway =
        tokio::time::timeout(WAIT, starting).await.expect("gateway starts after the sweep").unwrap();
    let _stream = connect(&gateway.url("/events?topic=a"), None).await;
    let group = keys.group(&topic("a"));
    wait_until("the restarted gateway registered", || {
        let (mut conn, group) = (conn.clone(), group.clone());
        async move { conn.hget::<_, _, Option<String>>(&group, "gw-pod-0").await.unwrap().as_deref() == Some("1") }
    })
    .await;

    // A later sweep leaves the live gateway alone, and so does a claim on it.
    let report = sweeper.sweep(false).await.unwrap();
    assert_eq!(report.dead_instances, 0);
    assert_eq!(report.membership_fields_removed, 0);
    assert!(matches!(sweeper.claim_instance(&id).await.unwrap(), Claim::Live));
    let count: Option<String> = conn.hget(&group, "gw-pod-0").await.unwrap();
    assert_eq!(count.as_deref(), Some("1"));
    assert!(conn.exists::<_, bool>(keys.instance_alive(&id)).await.unwrap());
}

#[tokio::test]
async fn an_instance_claimed_by_another_janitor_is_skipped() {
    let redis = RedisServer::start();
    an_instance_claimed_by_another_janitor_is_skipped_on(&Target::single(&redis)).await;
}

async fn an_instance_claimed_by_another_janitor_is_skipped_on(target: &Target) {
    let prefix = unique_prefix("janitor-busy");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    fabricate_dead_instance(&mut conn, &keys, "gw-held", &["a"]).await;
    let sweeper = sweeper(target, &prefix, &[]);
    let Claim::Claimed(_held) = sweeper.claim_instance(&instance("gw-held")).await.unwrap() else {
        panic!("a dead instance can be claimed");
    };

    assert!(matches!(sweeper.claim_instance(&instance("gw-held")).await.unwrap(), Claim::Busy));
    let report = sweeper.sweep(false).await.unwrap();

    assert_eq!(report.dead_instances, 0);
    assert_eq!(report.membership_fields_removed, 0);
    assert!(conn.hexists::<_, _, bool>(keys.group(&topic("a")), "gw-held").await.unwrap());
}

#[tokio::test]
async fn two_janitors_at_once_remove_each_dead_instance_exactly_once() {
    let redis = RedisServer::start();
    two_janitors_at_once_remove_each_dead_instance_exactly_once_on(&Target::single(&redis)).await;
}

async fn two_janitors_at_once_remove_each_dead_instance_exactly_once_on(target: &Target) {
    let prefix = unique_prefix("janitor-two");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    let live = spawn_gateway(target.url(), &prefix, &target.settings(&[])).await;
    let _stream = connect(&live.url("/events?topic=t0"), None).await;
    let t0 = keys.group(&topic("t0"));
    wait_until("the live gateway registered", || {
        let (mut conn, t0, live) = (conn.clone(), t0.clone(), live.instance.clone());
        async move { conn.hexists::<_, _, bool>(&t0, &live).await.unwrap() }
    })
    .await;
    let topics: Vec<String> = (0..10).map(|n| format!("t{n}")).collect();
    for n in 0..30 {
        let mine: Vec<&str> = (0..5).map(|k| topics[(n + k) % 10].as_str()).collect();
        fabricate_dead_instance(&mut conn, &keys, &format!("dead-{n}"), &mine).await;
    }

    // Small batches, so the two interleave on the same instances.
    let settings = target.settings(&[("SCAN_COUNT", "5")]);
    let url = target.url();
    let (first, second) =
        tokio::join!(run_janitor(url, &prefix, &[], &settings), run_janitor(url, &prefix, &[], &settings));
    let (first, second) = (first.report(), second.report());

    let total = |field: &str| first[field].as_u64().unwrap() + second[field].as_u64().unwrap();
    assert_eq!(total("dead_instances"), 30, "{first}\n{second}");
    assert_eq!(total("membership_fields_removed"), 150, "{first}\n{second}");
    assert_eq!(total("instance_streams_deleted"), 30, "{first}\n{second}");
    assert_eq!(total("group_hashes_deleted"), 9, "all but t0 lost every field: {first}\n{second}");
    let instance_keys: Vec<String> = conn.keys(format!("{prefix}:i:{{dead-*")).await.unwrap();
    assert!(instance_keys.is_empty(), "{instance_keys:?}");
    let index: Vec<String> = conn.zrange(keys.instances(), 0, -1).await.unwrap();
    assert_eq!(index, [live.instance.as_str()]);
    let t0_fields: Vec<String> = conn.hkeys(&t0).await.unwrap();
    assert_eq!(t0_fields, [live.instance.as_str()]);
    let groups: Vec<String> = conn.keys(format!("{prefix}:g:*")).await.unwrap();
    assert_eq!(groups, [t0]);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_reports_what_a_sweep_then_does() {
    let redis = redis_with_exact_trimming();
    dry_run_changes_nothing_and_reports_what_a_sweep_then_does_on(&Target::single(&redis)).await;
}

async fn dry_run_changes_nothing_and_reports_what_a_sweep_then_does_on(target: &Target) {
    let prefix = unique_prefix("janitor-dry");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    // A dead instance, and a live one sharing a topic with it.
    fabricate_dead_instance(&mut conn, &keys, "gw-dead", &["shared", "alone"]).await;
    let live = instance("gw-live");
    let _: () = conn.set_ex(keys.instance_alive(&live), "token", 60).await.unwrap();
    let _: () = conn.hset(keys.group(&topic("shared")), "gw-live", 2).await.unwrap();
    // A count that is not a number, and a key of the wrong type.
    let _: () = conn.hset(keys.group(&topic("shared")), "gw-gone", "many").await.unwrap();
    let _: () = conn.set(keys.history(&topic("wrong")), "not a stream").await.unwrap();
    // A history too long, and an idle one (its only entry from 1970).
    let publisher = target.publisher(&prefix);
    for n in 0..30 {
        publish_one(&publisher, "long", &n.to_string()).await;
    }
    let idle = topic("idle");
    let _: () = redis::cmd("XADD")
        .arg(keys.history(&idle))
        .arg("1000-0")
        .arg("d")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = conn.hset(keys.meta(&idle), field::META_EPOCH, "e1").await.unwrap();
    let _: () = conn.zadd(keys.topics(), "idle", 1000).await.unwrap();
    let settings = [("HISTORY_MAX_LEN", "10"), ("HISTORY_MAX_AGE", "1h")];
    let before = dump(&mut conn, &prefix).await;

    let dry = run_janitor(target.url(), &prefix, &["--dry-run"], &target.settings(&settings)).await.report();

    assert_eq!(dump(&mut conn, &prefix).await, before, "a dry run changed something");
    assert_eq!(dry["dry_run"], true);
    let real = run_janitor(target.url(), &prefix, &[], &target.settings(&settings)).await.report();
    assert_eq!(real["dry_run"], false);
    assert_eq!(counts(&dry), counts(&real), "dry: {dry}\nreal: {real}");
    assert_eq!(real["dead_instances"], 1, "{real}");
    assert_eq!(real["membership_fields_removed"], 3, "{real}");
    assert_eq!(real["instance_streams_deleted"], 1, "{real}");
    assert_eq!(real["group_hashes_deleted"], 1, "{real}");
    assert_eq!(real["topic_entries_trimmed"], 20, "{real}");
    assert_eq!(real["topic_streams_deleted"], 1, "{real}");
    assert_eq!(real["malformed_keys_skipped"], 1, "{real}");
    assert_ne!(dump(&mut conn, &prefix).await, before);
}

#[tokio::test]
async fn histories_are_trimmed_to_the_maximum_length() {
    let redis = redis_with_exact_trimming();
    histories_are_trimmed_to_the_maximum_length_on(&Target::single(&redis)).await;
}

async fn histories_are_trimmed_to_the_maximum_length_on(target: &Target) {
    let prefix = unique_prefix("janitor-maxlen");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    let publisher = target.publisher(&prefix);
    for n in 0..40 {
        publish_one(&publisher, "long", &n.to_string()).await;
    }
    for n in 0..5 {
        publish_one(&publisher, "short", &n.to_string()).await;
    }

    let report = run_janitor(target.url(), &prefix, &[], &target.settings(&[("HISTORY_MAX_LEN", "10")]))
        .await
        .report();

    assert_eq!(report["topic_entries_trimmed"], 30, "{report}");
    assert_eq!(report["topic_streams_deleted"], 0, "{report}");
    assert_eq!(conn.xlen::<_, u64>(keys.history(&topic("long"))).await.unwrap(), 10);
    assert_eq!(conn.xlen::<_, u64>(keys.history(&topic("short"))).await.unwrap(), 5);
    let history = streamgate_tests::producer_app::history(&mut conn, &keys, "long").await;
    let data: Vec<&str> = history.iter().map(|entry| entry.data.as_str()).collect();
    assert_eq!(data, ["30", "31", "32", "33", "34", "35", "36", "37", "38", "39"], "the newest stay");
}

#[tokio::test]
async fn histories_are_trimmed_by_age_on_redis_clock() {
    let redis = redis_with_exact_trimming();
    histories_are_trimmed_by_age_on_redis_clock_on(&Target::single(&redis)).await;
}

async fn histories_are_trimmed_by_age_on_redis_clock_on(target: &Target) {
    let prefix = unique_prefix("janitor-maxage");
    let keys = keys(&prefix);
    // Built now, not between publishing the recent events and sweeping: a build waiting on
    // cargo's lock could age them past the limit.
    workspace_binary("janitor");
    let mut conn = target.conn().await;
    let publisher = target.publisher(&prefix);
    let mut newest_old = String::new();
    for n in 0..4 {
        newest_old = publish_one(&publisher, "t", &format!("old-{n}")).await;
    }
    let old_ms = id_ms(&newest_old);
    wait_until("the old events are past the 2 s maximum age", || {
        let mut conn = conn.clone();
        async move { server_time_ms(&mut conn).await > old_ms + 2_100 }
    })
    .await;
    for n in 0..3 {
        publish_one(&publisher, "t", &format!("new-{n}")).await;
    }

    let report = run_janitor(target.url(), &prefix, &[], &target.settings(&[("HISTORY_MAX_AGE", "2s")]))
        .await
        .report();

    assert_eq!(report["topic_entries_trimmed"], 4, "{report}");
    assert_eq!(report["topic_streams_deleted"], 0, "a topic with recent events is not idle: {report}");
    let history = streamgate_tests::producer_app::history(&mut conn, &keys, "t").await;
    let data: Vec<&str> = history.iter().map(|entry| entry.data.as_str()).collect();
    assert_eq!(data, ["new-0", "new-1", "new-2"]);
}

#[tokio::test]
async fn an_idle_topic_is_deleted_unless_someone_subscribes_to_it() {
    let redis = RedisServer::start();
    an_idle_topic_is_deleted_unless_someone_subscribes_to_it_on(&Target::single(&redis)).await;
}

async fn an_idle_topic_is_deleted_unless_someone_subscribes_to_it_on(target: &Target) {
    let prefix = unique_prefix("janitor-idle");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    let gateway = spawn_gateway(target.url(), &prefix, &target.settings(&[])).await;
    let _subscriber = connect(&gateway.url("/events?topic=watched"), None).await;
    let watched_group = keys.group(&topic("watched"));
    wait_until("the subscriber is registered", || {
        let (mut conn, group) = (conn.clone(), watched_group.clone());
        async move { conn.exists::<_, bool>(&group).await.unwrap() }
    })
    .await;
    let publisher = target.publisher(&prefix);
    let first_idle = publish_one(&publisher, "idle", "x").await;
    let newest = publish_one(&publisher, "watched", "y").await;
    wait_until("both topics are idle past the 1 s maximum age", || {
        let mut conn = conn.clone();
        let newest_ms = id_ms(&newest);
        async move { server_time_ms(&mut conn).await > newest_ms + 1_100 }
    })
    .await;

    let report = run_janitor(target.url(), &prefix, &[], &target.settings(&[("HISTORY_MAX_AGE", "1s")]))
        .await
        .report();

    assert_eq!(report["topic_streams_deleted"], 1, "{report}");
    let (idle, watched) = (topic("idle"), topic("watched"));
    assert!(!conn.exists::<_, bool>(keys.history(&idle)).await.unwrap());
    assert!(!conn.exists::<_, bool>(keys.meta(&idle)).await.unwrap());
    assert_eq!(conn.zscore::<_, _, Option<u64>>(keys.topics(), "idle").await.unwrap(), None);
    assert!(conn.exists::<_, bool>(keys.history(&watched)).await.unwrap(), "a subscribed topic stays");
    assert!(conn.exists::<_, bool>(keys.meta(&watched)).await.unwrap());
    // Publishing again starts a new history with a new epoch, so old cursors get a reset.
    let second_idle = publish_one(&publisher, "idle", "z").await;
    let epoch = |cursor: &str| cursor.split_once('~').map(|(_, epoch)| epoch.to_owned());
    assert_ne!(epoch(&first_idle), epoch(&second_idle));
}

#[tokio::test]
async fn malformed_keys_and_values_are_skipped_and_counted() {
    let redis = RedisServer::start();
    malformed_keys_and_values_are_skipped_and_counted_on(&Target::single(&redis)).await;
}

async fn malformed_keys_and_values_are_skipped_and_counted_on(target: &Target) {
    let prefix = unique_prefix("janitor-malformed");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    let p = &prefix;
    let mut setup = redis::pipe();
    setup
        .set(keys.history(&topic("wrongtype")), "a string")
        .rpush(keys.group(&topic("listy")), "x")
        .sadd(keys.meta(&topic("setty")), "x")
        .cmd("XADD")
        .arg(format!("{p}:i:{{bad id!}}:s"))
        .arg("*")
        .arg("t")
        .arg("x")
        .set(format!("{p}:i:{{gw-ok}}:unknown-kind"), "x")
        .set(format!("{p}:h:{{unterminated"), "x")
        .zadd(keys.instances(), "bad id!", 1)
        .zadd(keys.topics(), "bad\ntopic", 1)
        .hset_multiple(
            keys.group(&topic("mixed")),
            &[("bad id!", "1"), ("gw-a", "abc"), ("gw-b", "0"), ("gw-c", "-3")],
        )
        .hset(keys.group(&topic("allbad")), "gw-d", "x");
    let () = setup.query_async(&mut conn).await.unwrap();
    let malformed = [
        keys.history(&topic("wrongtype")),
        keys.group(&topic("listy")),
        keys.meta(&topic("setty")),
        format!("{p}:i:{{bad id!}}:s"),
        format!("{p}:i:{{gw-ok}}:unknown-kind"),
        format!("{p}:h:{{unterminated"),
    ];
    let before = dump(&mut conn, &prefix).await;

    let run = run_janitor(target.url(), &prefix, &[], &target.settings(&[])).await;
    let report = run.report();

    assert_eq!(report["malformed_keys_skipped"], 9, "6 keys, 2 index members, 1 field: {report}");
    assert_eq!(report["membership_fields_removed"], 4, "{report}");
    assert_eq!(report["group_hashes_deleted"], 1, "{report}");
    assert!(run.stderr.contains("WARN"), "malformed keys are reported: {}", run.stderr);
    let after = dump(&mut conn, &prefix).await;
    for key in &malformed {
        assert_eq!(after.get(key), before.get(key), "{key} was touched");
    }
    let mixed: Vec<String> = conn.hkeys(keys.group(&topic("mixed"))).await.unwrap();
    assert_eq!(mixed, ["bad id!"], "only the field naming no instance stays");
    // Skipped, not fixed: the next sweep finds them again.
    let again = run_janitor(target.url(), &prefix, &[], &target.settings(&[])).await.report();
    assert_eq!(again["malformed_keys_skipped"], 9, "{again}");
    assert_eq!(again["membership_fields_removed"], 0, "{again}");
}

#[tokio::test]
async fn the_budget_bounds_each_sweep_and_the_next_resumes_the_scan() {
    let redis = RedisServer::start();
    the_budget_bounds_each_sweep_and_the_next_resumes_the_scan_on(&Target::single(&redis)).await;
}

async fn the_budget_bounds_each_sweep_and_the_next_resumes_the_scan_on(target: &Target) {
    let prefix = unique_prefix("janitor-budget");
    let keys = keys(&prefix);
    let mut conn = target.conn().await;
    // Orphans no index names: only the full pass finds them.
    let mut pipe = redis::pipe();
    for n in 0..60 {
        pipe.cmd("XADD")
            .arg(keys.instance_stream(&instance(&format!("orphan-{n}"))))
            .arg("*")
            .arg("t")
            .arg("x");
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let sweeper = sweeper(target, &prefix, &[("SWEEP_BUDGET", "10"), ("SCAN_COUNT", "5")]);

    let first = sweeper.sweep(false).await.unwrap();
    assert!(first.budget_exhausted);
    assert!(first.dead_instances < 60, "{first:?}");
    assert!(conn.exists::<_, bool>(keys.janitor_scan_cursor()).await.unwrap(), "the cursor is saved");
    let mut removed = first.dead_instances;
    for _ in 0..60 {
        let report = sweeper.sweep(false).await.unwrap();
        removed += report.dead_instances;
        if !report.budget_exhausted {
            break;
        }
    }

    assert_eq!(removed, 60);
    let left: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    assert!(left.is_empty(), "a finished pass forgets its cursor and leaves nothing: {left:?}");
}

#[tokio::test]
async fn the_report_is_one_json_line_with_every_field() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("janitor-json");

    let real = run_janitor(&redis.url(), &prefix, &[], &[]).await.report();
    let dry = run_janitor(&redis.url(), &prefix, &["--dry-run"], &[]).await.report();

    // Every field, with its type: the report has no optional fields, so the line parses
    // as one only when each is there (the janitor's unit test names them).
    let real: SweepReport = serde_json::from_value(real.clone()).unwrap_or_else(|e| panic!("{e}: {real}"));
    let dry: SweepReport = serde_json::from_value(dry.clone()).unwrap_or_else(|e| panic!("{e}: {dry}"));
    assert_eq!(real.dead_instances, 0);
    assert!(!real.budget_exhausted);
    assert!(real.full_scan);
    assert!(!real.dry_run);
    assert!(dry.dry_run);
}

#[tokio::test]
async fn unreachable_redis_exits_1_with_one_line() {
    let url = format!("redis://:secret@127.0.0.1:{}", free_port());

    let run = run_janitor(&url, "sg", &[], &[]).await;

    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:#?}");
    assert!(lines[0].starts_with("error: cannot reach redis at redis://:***@127.0.0.1:"), "{}", lines[0]);
}

#[tokio::test]
async fn bad_configuration_exits_2_with_one_line() {
    let run = run_janitor("redis://127.0.0.1:6379", "sg", &[], &[("SWEEP_BUDGET", "lots")]).await;

    assert_eq!(run.code, Some(2), "{run:#?}");
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        ["error: invalid SWEEP_BUDGET=\"lots\": expected a whole number from 1 to 1000000000"]
    );
}

#[tokio::test]
async fn interval_mode_sweeps_until_sigterm() {
    use tokio::io::AsyncBufReadExt as _;

    let redis = RedisServer::start();
    let prefix = unique_prefix("janitor-loop");
    let mut child = janitor_command(&redis.url(), &prefix, &[]).arg("--interval").arg("1s").spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();

    for _ in 0..2 {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("a sweep per second").unwrap();
        let report: serde_json::Value = serde_json::from_str(&line.expect("a line")).unwrap();
        assert_eq!(report["dead_instances"], 0);
    }
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(WAIT, child.wait()).await.expect("stops on SIGTERM").unwrap();

    assert_eq!(status.code(), Some(0));
}
