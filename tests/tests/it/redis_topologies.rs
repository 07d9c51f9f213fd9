//! The multi-node Redis set-ups the harness provides are real and fail over as Redis does:
//! a cluster whose master is killed promotes its replica, and Sentinels promote a replica
//! of a killed primary.

use redis::AsyncCommands;
use streamgate_tests::redis_cluster::{RedisCluster, RedisSentinels};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_every_slot_and_survives_the_loss_of_a_master() {
    let mut cluster = RedisCluster::start();
    let client = redis::cluster::ClusterClient::new(
        cluster.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port())).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    for n in 0..100 {
        let _: () = conn.set(format!("key-{n}"), n).await.unwrap();
    }
    let master = cluster.master_of("key-7");
    // Replication is asynchronous: wait until the master's replica has the writes.
    let mut direct = cluster.nodes[master].client().await;
    let mut replicated = 0;
    for _ in 0..50 {
        replicated = redis::cmd("WAIT").arg(1).arg(200).query_async(&mut direct).await.unwrap();
        if replicated == 1 {
            break;
        }
    }
    assert_eq!(replicated, 1);
    cluster.nodes[master].kill();
    let promoted = cluster.wait_master_moved("key-7", master);
    assert_ne!(promoted, master, "a replica took over the slot");
    let mut conn = client.get_async_connection().await.unwrap();
    let value: i64 = conn.get("key-7").await.unwrap();
    assert_eq!(value, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_promote_a_replica_when_the_primary_dies() {
    let mut set_up = RedisSentinels::start();
    let old = set_up.master_port().expect("the Sentinels know the primary");
    assert_eq!(old, set_up.servers[0].port());
    let mut conn = set_up.servers[0].client().await;
    let _: () = conn.set("before", 1).await.unwrap();
    // WAIT in short steps: the connection's own response timeout is 500 ms.
    let mut replicated = 0;
    for _ in 0..50 {
        replicated = redis::cmd("WAIT").arg(2).arg(200).query_async(&mut conn).await.unwrap();
        if replicated == 2 {
            break;
        }
    }
    assert_eq!(replicated, 2, "both replicas have the write");
    set_up.servers[0].kill();
    let new = set_up.wait_failover_from(old);
    let promoted = set_up.servers.iter().find(|s| s.port() == new).expect("one of ours");
    let mut conn = promoted.client().await;
    let value: i64 = conn.get("before").await.unwrap();
    assert_eq!(value, 1);
}
