//! The JavaScript client (`clients/js`) against a real gateway and producer: its own tests,
//! written for Node's built-in test runner, run here so `scripts/test` runs them too.

use std::path::PathBuf;
use std::process::Command;

use streamgate_tests::world::TestWorld;

/// `clients/js` in the repository.
pub fn js_client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_tests_pass_against_a_real_gateway() {
    let dir = js_client_dir();
    assert!(
        dir.join("node_modules/eventsource").exists(),
        "clients/js/node_modules is missing: run scripts/test (it runs `npm ci` there)"
    );
    let world = TestWorld::start("js-client");
    // Tokens are needed except for the `js-` topics, so the client's token handling is
    // tested against the real JWT check.
    let secret = "a-test-secret-of-at-least-32-bytes!!";
    let gateway = world
        .gateway(&[
            ("RETRY_INTERVAL", "200ms"),
            ("SUBSCRIBE_AUTH", "jwt"),
            ("JWT_SECRET", secret),
            ("ALLOW_QUERY_TOKEN", "true"),
            ("PUBLIC_TOPIC_PREFIXES", "js-"),
        ])
        .await;
    let producer = world.producer(&[]).await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--test", "--test-reporter=spec", "test/"])
            .current_dir(dir)
            .env("STREAMGATE_GATEWAY", gateway.url(""))
            .env("STREAMGATE_PRODUCER", producer.url(""))
            .env("STREAMGATE_JWT_SECRET", secret)
            .output()
            .expect("run node (installed by scripts/test)")
    })
    .await
    .unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{report}");
    assert!(output.status.success(), "node --test failed:\n{report}");
    assert!(report.contains("pass 7"), "all seven client tests ran:\n{report}");
}

#[test]
fn the_js_client_packs_with_its_module_and_types() {
    let output = Command::new("npm")
        .args(["pack", "--dry-run", "--json", "--ignore-scripts"])
        .current_dir(js_client_dir())
        .output()
        .expect("run npm (installed by scripts/test)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let packed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("npm pack --json");
    let files: Vec<&str> =
        packed[0]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for expected in ["package.json", "README.md", "src/streamgate.js", "src/streamgate.d.ts"] {
        assert!(files.contains(&expected), "{expected} not packed: {files:?}");
    }
    assert!(!files.iter().any(|f| f.starts_with("test/") || f.starts_with("node_modules/")), "{files:?}");
}
