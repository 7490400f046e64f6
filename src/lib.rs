//! An egress gateway for the iDenfy identity-verification API.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into typed values
//! - [`error`]: every answer the gateway makes itself, in iDenfy's error shape
//! - [`body`]: the response body of the stack
//! - [`context`]: what outer layers hand to inner ones (caller, route, deadline)
//! - [`secret`]: secrets that cannot be printed, and their sources

#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod config;
pub mod context;
pub mod credentials;
pub mod error;
pub mod front;
pub mod identify;
pub mod metrics;
pub mod route;
pub mod secret;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod upstream;
