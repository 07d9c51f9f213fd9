//! Test harness for Streamgate's integration tests (the `it` test binary in `tests/it`).
//!
//! - [`redis_server`]: a real `redis-server` child process per test or per group of
//!   tests, on a free port, that can be stopped, crashed and restarted; plus
//!   [`redis_server::unique_prefix`] to isolate tests sharing one server.
//! - [`binaries`]: paths of the real service binaries.
//! - [`browser`]: a real headless Chromium driven through playwright-core.
//! - [`eventsource`]: browser-like subscribers, a retrying publisher, the exact check.
//! - [`gateway_app`]: a real gateway in-process on port 0.
//! - [`ingest`]: the producers' ingest group set up by hand, and entries left pending in it.
//! - [`keys`]: topic key names for tests that touch Redis directly.
//! - [`last_event_id`]: the `lastEventId` a browser keeps, from a stream's raw bytes.
//! - [`otlp_collector`]: an OTLP/gRPC trace collector in-process, clear text or TLS.
//! - [`publish`]: the producer's routing core in-process.
//! - [`producer_app`]: a real producer in-process on port 0, and the producer binary.
//! - [`redis_cluster`]: a real Redis Cluster (3 masters, 3 replicas) and a real Sentinel
//!   set-up (a primary, 2 replicas, 3 Sentinels).
//! - [`rig`]: gateway and producer processes behind a real nginx, Redis with AOF.
//! - [`wait`]: [`wait::wait_until`], polling a condition with a deadline.
//! - [`sse_client`]: an SSE client with an independent parser.
//! - [`world`]: [`world::TestWorld`], one test's Redis, prefix, keys and publisher, with
//!   gateways started in it and streams opened on them (`gateway.subscribe`).
//! - [`tokens`]: subscriber JWTs signed in the test (HS256, and RS256/ES256 keys from the
//!   openssl CLI in a JWKS file).

pub mod binaries;
pub mod browser;
pub mod certificate;
pub mod eventsource;
pub mod gateway_app;
pub mod host;
pub mod http2;
pub mod ingest;
pub mod keys;
pub mod last_event_id;
pub mod otlp_collector;
pub mod producer_app;
pub mod publish;
pub mod redis_cluster;
pub mod redis_server;
pub mod rig;
pub mod sse_client;
pub mod tokens;
pub mod wait;
pub mod world;
