//! Streamgate's shared library: the concepts every service speaks.
//!
//! - [`cli`] — the command-line flags every binary shares.
//! - [`config`] — layered settings (defaults < TOML file < environment < flags) with
//!   one-line errors.
//! - [`topic`] — validated names — [`topic::Topic`], [`topic::EventName`],
//!   [`topic::InstanceId`].
//! - [`cursor`] — positions in a topic's history (history id + epoch) and the SSE `id:`
//!   format that carries them.
//! - [`continuity`] — the one rule that decides whether delivery goes on, or a subscriber
//!   must be told that events were lost, given what the history holds.
//! - [`event`] — the event model and the one SSE encoder.
//! - [`keys`] — every Redis key name, with hash tags for Redis Cluster.
//! - [`liveness`] — the liveness protocol: the gateway's and the janitor's claim scripts,
//!   with typed replies.
//! - [`metrics`] — the Redis command latency and error metrics every service exports.
//! - [`topic_pattern`] — the topics a token grants: exact names and `prefix*` patterns.
//! - [`stream`] — history and routed entries as stored in Redis streams.
//! - [`redis`] — the connection pool, dedicated blocking connections, backoff, outage logs.
//! - [`settings`] — settings every service shares (Redis URL, key prefix, log format).
//! - [`telemetry`] — tracing subscriber and optional OTLP export.
//! - [`traces`] — sampling settings and the W3C `traceparent` carried from producer to
//!   gateways in routed entries.
//! - [`shutdown`] — Ctrl-C / SIGTERM handling.
//!
//! Architecture invariant: this crate knows nothing of HTTP or axum (the janitor links an
//! HTTP client only for its optional Pushgateway push).

pub mod cli;
pub mod config;
pub mod continuity;
pub mod cursor;
pub mod event;
pub mod keys;
pub mod liveness;
pub mod metrics;
pub mod redis;
pub mod settings;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod topic;
pub mod topic_pattern;
pub mod traces;
