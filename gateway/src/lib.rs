//! The Streamgate gateway: serves Server-Sent Events to browsers and services.
//!
//! - [`settings`] — configuration.
//! - [`startup`] — `Application::build` / `run_until_stopped`, the shared `AppState`.
//! - [`http`] — routes (`/events`, `/healthz`, `/readyz`, `/admin/connections`, `/`).
//! - [`connection`] — one SSE connection: join, replay, live delivery.
//! - [`hub`] — per-topic sequencing and the encode-once broadcast.
//! - [`fanout`] — the broadcast ring that allocates only what it holds.
//! - [`membership`] — liveness and group-hash registration, batched.
//! - [`reader`] — the instance stream reader.
//! - [`history`] — reading a topic's history.
//! - [`error`] — HTTP errors.
//!
//! Architecture invariant: a connection never talks to Redis to join or leave a topic;
//! all membership writes go through the one batching task in [`membership`].

pub mod connection;
pub mod error;
pub mod fanout;
pub mod history;
pub mod http;
pub mod hub;
pub mod membership;
pub mod reader;
pub mod settings;
pub mod startup;

pub use http::router;
pub use settings::GatewayConfig;
pub use startup::{AppState, Application};
