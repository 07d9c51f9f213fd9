//! The Streamgate janitor: the garbage collector that removes what dead gateways left in
//! Redis and keeps topic histories within retention, safe beside live services and other
//! janitors. Run by cron (one sweep) or in a loop (`--interval`).
//!
//! - [`settings`] — the janitor's settings and [`JanitorConfig`].
//! - [`mod@run`] — one sweep or a loop of sweeps, each reported as one JSON line.
//! - `sweep` — one bounded pass ([`Sweeper`]) and its [`SweepReport`].
//! - [`instances`] — dead instances: claim, remove, release.
//! - `groups` — group hashes: fields of dead instances and invalid counts.
//! - `topics` — histories: trimming and deletion of idle ones.
//! - `keyspace` — the full pass's SCAN, resumable across sweeps.
//! - `scripts` — the Lua scripts, each on one hash slot.
//! - [`metrics`] — a sweep's figures as Prometheus gauges, and the atomic textfile.
//! - [`push`] — the push of those figures to a Pushgateway.
//!
//! Architecture invariant: the janitor depends on the shared library only, never on the
//! gateway or producer; its one HTTP client is hyper's, in [`push`], for
//! `--pushgateway-url`. Every key name comes from `streamgate::keys`.

mod groups;
pub mod instances;
mod keyspace;
pub mod metrics;
pub mod push;
pub mod run;
mod scripts;
pub mod settings;
mod sweep;
mod topics;

pub use run::{RunError, RunOptions, run};
pub use settings::JanitorConfig;
pub use sweep::{SweepReport, Sweeper};
