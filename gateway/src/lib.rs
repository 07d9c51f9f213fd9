//! The Streamgate gateway: serves Server-Sent Events to browsers and services.
//!
//! - [`settings`] — configuration.
//! - `startup` — `Application::build` / `run_until_stopped`, the shared `AppState`.
//! - `http` — public routes (`/events`, `/healthz`, `/readyz`, `/` with `DEMO_PAGE`).
//! - `admin` — the admin listener: connections, topics, the cluster view, the dashboard.
//! - `summary` — this gateway's summary in Redis, for the cluster view.
//! - `access` — who may subscribe to what (`SUBSCRIBE_AUTH`: none, jwt, hook).
//! - `limits` — client addresses behind proxies, per-client caps and rates.
//! - `server` — the connection loop: header-read timeout, head size cap, HTTP/1.1 and /2.
//! - `http1_stream` — event streams on clear-text HTTP/1.1, served from the socket.
//! - `connection` — one SSE connection: join, replay, live delivery.
//! - `hub` — per-topic sequencing and the encode-once broadcast.
//! - `delivery_trace` — the `deliver` span of a sampled event, one per hub.
//! - `fanout` — the broadcast ring that allocates only what it holds.
//! - `sparse` — tables that give their room back once most entries are gone.
//! - `membership` — liveness and group-hash registration, batched.
//! - `reader` — the instance stream reader.
//! - [`history`] — reading a topic's history.
//! - `error` — HTTP errors.
//!
//! Architecture invariant: a connection never talks to Redis to join or leave a topic;
//! all membership writes go through the one batching task in `membership`.

mod access;
mod admin;
mod connection;
mod delivery_trace;
mod error;
mod fanout;
pub mod history;
mod http;
mod http1_stream;
mod hub;
mod limits;
mod membership;
mod metrics;
mod reader;
mod replay_reads;
mod server;
pub mod settings;
mod sparse;
mod startup;
mod summary;
mod tls;

pub use http::router;
pub use settings::GatewayConfig;
pub use startup::{AppState, Application};
