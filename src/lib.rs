//! An egress gateway for the iDenfy identity-verification API.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into typed values
//! - [`error`]: every answer the gateway makes itself, in iDenfy's error shape
//! - [`body`]: the response body of the stack
//! - [`context`]: what outer layers hand to inner ones (caller, route, deadline)
//! - [`secret`]: secrets that cannot be printed, and their sources
//! - [`idenfy`]: iDenfy's facts in code: token field rules and the `clientId` key
//! - [`validate`]: refuses a token request iDenfy would refuse, and finds its `clientId`
//! - [`simulator`]: a stand-in for iDenfy, for tests, benchmarks and the demo

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod context;
pub mod error;
pub mod idenfy;
pub mod secret;
pub mod simulator;
pub mod validate;
