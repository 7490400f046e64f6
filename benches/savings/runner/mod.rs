//! The savings scenario runner, shared by `cargo bench --bench savings` (every scenario, the
//! table and the chart) and `tests/savings.rs` (a short scenario, its invariants).
//!
//! # Layout
//!
//! - [`clock`]: the time scale: one simulated second is [`clock::SPEED`] times shorter in real
//!   time, for every duration of the run (the app's sleeps, faults, the gateway's config);
//! - [`client`]: the baseline, the client iDenfy's error-handling guide recommends;
//! - [`app`]: the app's users: arrivals in bursts, double clicks, reloads of live sessions;
//! - [`scenario`]: what iDenfy does in each scenario, and one run (direct or through the gateway);
//! - [`tally`]: what a run counted, from the simulator's counters and the clients' records.

pub mod app;
pub mod client;
pub mod clock;
pub mod scenario;
pub mod tally;
