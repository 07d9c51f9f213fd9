//! The harness that runs the service binaries (`streamgate_tests::rig`): a service whose
//! port another process took between `free_port` and its own bind is started again on
//! fresh ports, instead of failing the test it serves after a 20 s wait.

use streamgate_tests::redis_server::{RedisServer, unique_prefix};
use streamgate_tests::rig::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_port_was_taken_is_started_again_on_a_fresh_one() {
    let redis = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let env = vec![
        ("REDIS_URL".to_owned(), redis.url()),
        ("KEY_PREFIX".to_owned(), unique_prefix("rebind")),
        ("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
    ];
    let mut gateway = Service::spawn("gateway", "gateway", &[], port, env);

    gateway.wait_ready_or_rebind().await;

    assert_ne!(gateway.port, port, "moved off the taken port");
    assert!(gateway.log().contains("Address already in use"), "{}", gateway.log());
    let answer = reqwest::get(gateway.url("/readyz")).await.unwrap();
    assert_eq!(answer.status(), 200);
}
