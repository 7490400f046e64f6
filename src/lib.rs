//! An egress gateway for the iDenfy identity-verification API.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into typed values
//! - [`error`]: every answer the gateway makes itself, in iDenfy's error shape
//! - [`body`]: the response body of the stack
//! - [`context`]: what outer layers hand to inner ones (caller, route, deadline)
//! - [`deadline`]: the whole-request deadline and the caller's `x-gateway-timeout`
//! - [`ratelimit`]: team quota on requests, account quota on attempts, account pause after a 429
//! - [`retry`]: the retry loop: policy, full-jitter backoff, retry budget, attempt count
//! - [`secret`]: secrets that cannot be printed, and their sources

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod context;
pub mod deadline;
pub mod error;
pub mod ratelimit;
pub mod retry;
pub mod secret;
