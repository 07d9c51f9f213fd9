//! Streamgate's integration tests, in one binary so they compile once. Each module tests
//! one area against real processes (redis-server, the services on port 0).

mod admin_api;
mod admin_browser;
mod admin_cluster;
mod browser;
mod config_layers;
mod deploy_compose;
mod deploy_kubernetes;
mod docs;
mod e2e;
mod gateway_auth;
mod gateway_delivery;
mod gateway_http;
mod gateway_limits;
mod gateway_memory;
mod gateway_metrics;
mod gateway_resilience;
mod gateway_tls;
mod guarantee;
mod hostile;
mod janitor_sweep;
mod js_client;
mod metrics_catalog;
mod producer_config;
mod producer_group_commit;
mod producer_ingest;
mod producer_metrics;
mod producer_outcome;
mod producer_publish;
mod producer_security;
mod redis_acl;
mod redis_harness;
mod redis_topologies;
mod redis_topology_services;
mod service_harness;
mod traces;
