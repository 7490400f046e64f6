//! Shared test support: a scripted upstream, an in-process gateway, a client.
#![allow(dead_code)]

pub mod gateway;
pub mod process;
pub mod upstream;
