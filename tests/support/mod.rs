//! Shared helpers of the black-box tests. (`mod.rs`, not `support.rs`: Cargo would build every
//! `tests/*.rs` file as a test crate of its own.)
#![allow(dead_code)]

pub mod http;
