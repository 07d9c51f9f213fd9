//! The producer service: takes events from upstream services, makes each part of its
//! topic's history, and routes it to the gateways that have subscribers for the topic.
//!
//! - `auth`: who may publish (static tokens, JWTs with topic grants), and the scope of
//!   their idempotency keys.
//! - [`settings`]: every setting ([`settings::SETTINGS`]) and [`settings::ProducerConfig`].
//! - `input`: what upstreams hand in (HTTP body, ingest entry, command line), parsed once
//!   into [`publisher::Publish`] values under `input::Limits`.
//! - [`publisher`]: the routing core — one atomic append script per batch, liveness, one
//!   routing pipeline. Its semantics are the gateway's contract.
//! - `group`: group commit — concurrent `POST /publish` requests share one script call
//!   and one routing pipeline, each with its own result.
//! - `http`: the axum router (`POST /publish`, `/healthz`, `/readyz`).
//! - `error`: `error::AppError`, every refusal as a status code and a JSON body.
//! - `ingest`: the consumer-group loop over the ingest stream, with dead letters, and
//!   the timer that reads its backlog for the metrics.
//! - `metrics`: `metrics::ProducerMetrics`, served at `GET /metrics` on the admin
//!   listener (`ADMIN_LISTEN_ADDR`).
//! - [`startup`]: [`startup::Application`], which binds, serves and runs the ingest consumer,
//!   and `startup::AppState`, what every handler shares.
//! - `server`: the accept loop, with a header-read timeout.
//! - [`cli`]: the command line (`serve`, `publish`).
//!
//! Architecture invariant: only [`publisher`] writes histories and instance streams; the
//! three ingest paths differ in how they read input, never in how they route it.

mod auth;
pub mod cli;
mod error;
mod group;
mod http;
mod ingest;
mod input;
mod metrics;
pub mod publisher;
mod server;
pub mod settings;
pub mod startup;
