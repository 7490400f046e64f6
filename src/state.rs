//! Fleet state: what the replicas of one gateway share through Redis (or Valkey) when
//! `state.backend = "redis"`: the team and account quotas, the account pauses, and each token
//! key's flight and replay entry.
//!
//! # Layout
//!
//! - [`client`]: the Redis connection ([`SharedState`]): one operation, one timeout
//!   (`state.timeout`), reconnects on its own, the up/down state (logged once per change, probed
//!   in the background while down), and the keys, each with the account as its hash tag
//! - [`metrics`]: `idenfy_gateway_state_*`: backend up, round trips and errors by operation,
//!   fallbacks
//! - [`quota`]: the quota decision (GCRA on Redis's clock, the pause read in the same round trip;
//!   a request's team and first-attempt account decisions in one script) and the shared pause,
//!   each one Lua script
//!
//! The dedup flight's scripts live with dedup (`dedup/fleet.rs`). The layers use this module
//! through [`crate::ratelimit::Gate`] and the dedup layer's fleet part, both chosen once in
//! [`crate::stack`]: the memory path does not touch it.

pub mod client;
pub mod metrics;
pub mod quota;

pub use self::client::{Op, SharedState, StateError};
pub use self::metrics::StateMetrics;
