//! An egress gateway for the iDenfy identity-verification API.
//!
//! # Layout
//!
//! The request path, outermost first (assembled in [`stack`]):
//!
//! - [`server`]: the listeners: connection slots with eviction of the longest-idle, header limits
//!   and timeouts, its own HTTP/1.1 loop for plain requests (hyper for h2c and the rest),
//!   lingering close, graceful shutdown
//! - [`front`]: request id, deadline, identify, route, body limit (from the head, before the
//!   body); logs, metrics, errors → responses
//! - [`identify`]: which team sent the request (Bearer or Basic team:token)
//! - [`route`]: which iDenfy call it is (allow-list, canonical paths only, bounded labels)
//! - [`validate`]: refuses a token request iDenfy would refuse, and finds its `clientId`
//! - [`dedup`]: one clientId, one session: coalesces concurrent token requests, replays live
//!   tokens, within the team that created the session
//! - [`ratelimit`]: team quota on requests (before the retry loop), account quota on attempts
//!   (inside it), account pause after a 429
//! - [`retry`]: the retry loop: policy, full-jitter backoff, retry budget, attempt count
//! - [`credentials`]: the account's Basic key:secret in place of the caller's; rotation (a watch
//!   on changes, debounced)
//! - [`upstream`]: one attempt against iDenfy: a small HTTP/1.1 client (pooled, TLS, timeouts,
//!   identity coding, a written POST never sent twice)
//!
//! Around it:
//!
//! - [`config`]: the TOML file, validated into typed values (every duration within its range)
//! - [`error`]: every answer the gateway makes itself, in iDenfy's error shape
//! - [`body`]: the response body of the stack
//! - [`context`]: what outer layers hand to inner ones (caller, route, deadline, clientId)
//! - [`deadline`]: the whole-request deadline and the caller's `x-gateway-timeout`
//! - [`secret`]: secrets that cannot be printed, and their sources
//! - [`idenfy`]: iDenfy's facts in code: token field rules and the `clientId` key
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`
//! - [`reload`]: SIGHUP: the config file read again, validated whole, swapped in live
//! - [`metrics`]: the registry and the whole-request metrics
//! - [`telemetry`]: structured logs, never blocking a request (dropped and counted instead)
//! - `http1`: the HTTP/1.1 wire format of both hand-written peers (request and response heads,
//!   framing, chunked coding, encoders), with the RFC 9112 rules it enforces and relaxes
//! - [`tls`]: TLS on the proxy listener, the certificate re-read on change
//! - [`trace`]: W3C trace context passed through; the trace id in the access line
//! - [`headers`]: hop-by-hop headers removed; a header set without growing a full map
//! - `simulator` (feature `simulator`, on by default): a faithful stand-in for iDenfy on loopback
//!   (tests, demo, benchmarks)
//! - `demo` (feature `simulator`): the simulator with the gateway in front of it, for trying
//!   things with curl
//! - [`state`]: fleet mode (`state.backend = "redis"`): the quotas, account pauses, token
//!   flights and replay shared by the replicas through Redis, with the fallback while it is down
//! - [`webhooks`]: the third listener: iDenfy's webhooks verified, stored durably, acknowledged,
//!   and delivered to the team that created each scanRef (retries, dead letters)
//! - `fuzzing` (feature `fuzzing`): the parsers, reachable from `fuzz/` and the differential test

#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod config;
pub mod context;
pub mod credentials;
pub mod deadline;
pub mod dedup;
#[cfg(feature = "simulator")]
pub mod demo;
pub mod error;
pub mod front;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub(crate) mod http1;
pub mod idenfy;
pub mod identify;
pub mod metrics;
pub mod ratelimit;
pub mod reload;
pub mod retry;
pub mod route;
pub mod secret;
pub mod server;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod validate;
pub mod webhooks;
