//! An egress gateway for the iDenfy identity-verification API.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into typed values
//! - [`error`]: every answer the gateway makes itself, in iDenfy's error shape
//! - [`body`]: the response body of the stack
//! - [`context`]: what outer layers hand to inner ones (caller, route, deadline)
//! - [`secret`]: secrets that cannot be printed, and their sources
//! - [`dedup`]: one clientId, one session: coalesces concurrent token requests, replays live tokens

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod context;
pub mod dedup;
pub mod error;
pub mod secret;
