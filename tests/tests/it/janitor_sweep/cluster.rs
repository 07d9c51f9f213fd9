//! The sweep scenarios again, against a real Redis Cluster of three masters and three
//! replicas: every service (janitor, gateways, publisher) reaches it through
//! `REDIS_CLUSTER_NODES`, and each scenario's keys spread over every master, so a sweep
//! that scanned one node, or sent a multi-key command across slots, fails here.
//!
//! Forming a cluster takes seconds, so one cluster serves every scenario in turn, each
//! under its own key prefix (the janitor only ever touches its prefix).

use streamgate_tests::redis_cluster::RedisCluster;
use streamgate_tests::redis_server::unique_prefix;

use super::support::{Target, instance, keys};

/// Makes approximate trimming exact on every node, as `redis_with_exact_trimming` does
/// for one server: one entry per stream macro node.
async fn exact_trimming(cluster: &RedisCluster) {
    for node in &cluster.nodes {
        let mut conn = node.client().await;
        let mut set = redis::cmd("CONFIG");
        set.arg("SET").arg("stream-node-max-entries").arg(1);
        let () = set
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|error| panic!("CONFIG SET on {}: {error}", node.port()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sweep_scenario_passes_against_a_redis_cluster() {
    let cluster = RedisCluster::start();
    exact_trimming(&cluster).await;
    let target = Target::cluster(&cluster);

    super::sigkilled_gateway_is_removed_while_a_live_gateway_keeps_its_registration_on(&target).await;
    super::gateway_restarting_during_a_sweep_waits_for_it_and_keeps_its_registration_on(&target).await;
    super::an_instance_claimed_by_another_janitor_is_skipped_on(&target).await;
    super::two_janitors_at_once_remove_each_dead_instance_exactly_once_on(&target).await;
    super::dry_run_changes_nothing_and_reports_what_a_sweep_then_does_on(&target).await;
    super::histories_are_trimmed_to_the_maximum_length_on(&target).await;
    super::histories_are_trimmed_by_age_on_redis_clock_on(&target).await;
    super::an_idle_topic_is_deleted_unless_someone_subscribes_to_it_on(&target).await;
    super::malformed_keys_and_values_are_skipped_and_counted_on(&target).await;
    super::the_budget_bounds_each_sweep_and_the_next_resumes_the_scan_on(&target).await;

    // The fence: the janitor's SSCAN of the instance's topic record runs on the master of
    // the instance's slot, its removals on the masters of the topics' slots.
    let prefix = unique_prefix("janitor-fence");
    let topic_record = keys(&prefix).instance_topics(&instance(super::fence::INSTANCE));
    let watch = cluster.nodes[cluster.master_of(&topic_record)].client().await;
    super::fence::a_janitor_stopped_past_its_claim_removes_nothing_on(&target, &prefix, watch).await;
}
