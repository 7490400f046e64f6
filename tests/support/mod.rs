//! Shared test support: a scripted upstream (and a raw one), an in-process gateway, the binary as a process,
//! and a small HTTP client. (A folder with `mod.rs`: a `tests/support.rs` would be a test crate.)
#![allow(dead_code)]

pub mod commandstats;
pub mod deploy;
pub mod fleet;
pub mod gateway;
pub mod http;
pub mod process;
pub mod raw;
pub mod redis_server;
pub mod tls;
pub mod upstream;
pub mod wire;
