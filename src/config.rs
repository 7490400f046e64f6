//! Configuration: TOML with `${VAR}` interpolation, read into raw serde structs, then validated
//! into the typed values below. Every problem is reported with its key path.
//!
//! The typed structs are what the rest of the gateway sees; `raw` is the file's shape.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::{Secret, SecretSource};

mod load;
mod locate;
mod ranges;
mod raw;
mod show;
pub(crate) mod state;
mod structure;
mod telemetry;
mod tls;
mod tokens;
mod validate;
pub(crate) mod values;

pub use load::{read, ConfigError, ConfigErrors, LoadError, LoadOptions, ProblemKind};
pub use raw::DEFAULT_PREFIXES;
pub use show::{is_secret, show, starter, REDACTED};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    pub accounts: Vec<Account>,
    pub teams: Vec<Team>,
    pub retry: Retry,
    pub dedup: Dedup,
    pub validation: Validation,
    pub limits: Limits,
    pub routes: Routes,
    pub state: State,
    pub log: Log,
    pub webhooks: Webhooks,
    pub telemetry: Telemetry,
}

/// `[listen]`
#[derive(Debug, Clone)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Let a team without a token be served on a non-loopback listener.
    pub allow_unauthenticated: bool,
    pub max_connections: usize,
    /// A client must send its request head within this time (slowloris guard).
    pub header_read_timeout: Duration,
    /// A client must send a request's body within this time of its head (408 after it).
    pub body_read_timeout: Duration,
    /// A keep-alive connection may wait this long for its next request; then it is closed.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// SIGTERM/SIGINT: how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// Where iDenfy posts webhooks (`POST /webhooks/idenfy/{account}`); `None`: no listener.
    pub webhook: Option<SocketAddr>,
    /// TLS on the proxy listener (`tls_cert_file`, `tls_key_file`).
    pub tls: Option<Tls>,
    /// TLS on the webhook listener (`webhook_tls_cert_file`, `webhook_tls_key_file`).
    pub webhook_tls: Option<Tls>,
}

/// `listen.tls_cert_file` and `listen.tls_key_file` (or the webhook listener's
/// `listen.webhook_tls_*`): PEM files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `listen.tls_client_ca_file`: mutual TLS, client certificates verified against this CA.
    /// Optional on the proxy listener (a token may stand in), required on the webhook one.
    pub client_ca_file: Option<PathBuf>,
}

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    /// An extra CA bundle (PEM) trusted beside the webpki roots.
    pub ca_file: Option<PathBuf>,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

/// `[[account]]`: one iDenfy API key pair.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub api_key: SecretSource,
    pub api_secret: SecretSource,
    pub rate: Rate,
    pub burst: NonZeroU32,
    /// Verifies `Idenfy-Signature` of the account's webhooks; `None`: its webhooks are refused.
    pub webhook_key: Option<SecretSource>,
}

/// `[[team]]`: one caller of the gateway.
#[derive(Debug, Clone)]
pub struct Team {
    pub name: String,
    /// Index into `Config::accounts`.
    pub account: usize,
    /// The tokens the file gives (`token` and `tokens`), each valid. None here and no
    /// `token_file`: no caller authentication (requests without credentials belong to this team).
    pub tokens: Vec<Secret>,
    /// `token_file`: more valid tokens, one per line, re-read when the file changes.
    pub token_file: Option<PathBuf>,
    /// `client_cert_san`: a verified client certificate with this DNS name is this team's.
    pub client_cert_san: Option<String>,
    pub rate: Rate,
    pub burst: NonZeroU32,
    /// Where the team's webhooks are delivered, re-signed with `webhook_key`.
    pub webhook: Option<TeamWebhook>,
}

/// A team's webhook endpoint and the key its deliveries are signed with.
#[derive(Debug, Clone)]
pub struct TeamWebhook {
    pub url: http::Uri,
    pub key: SecretSource,
}

/// `[webhooks]`: the durable queue between iDenfy's webhooks and the teams' endpoints.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// The embedded store (queue, scanRef→team map) with `state.backend = "memory"`.
    pub dir: PathBuf,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// A delivery is retried this long after receipt, then dead-lettered; and a scanRef's team is
    /// remembered this long past its token's expiry.
    pub max_age: Duration,
    /// What becomes of a webhook whose scanRef no token response named.
    pub unknown: UnknownScanRef,
    /// One delivery attempt's bound.
    pub delivery_timeout: Duration,
    /// With `state.backend = "redis"`: a delivery claimed by a replica that has not kept its
    /// claim alive for this long (it died) is taken over by another.
    pub reclaim_after: Duration,
}

/// `webhooks.unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownScanRef {
    /// Straight to dead letters.
    Dead,
    /// Delivered to this team (an index into `Config::teams`).
    Team(usize),
}

impl Team {
    /// Whether callers must present one of the team's tokens.
    pub fn authenticates(&self) -> bool {
        !self.tokens.is_empty() || self.token_file.is_some() || self.client_cert_san.is_some()
    }
}

/// `[retry]`
#[derive(Debug, Clone)]
pub struct Retry {
    pub max_attempts: NonZeroU32,
    pub base: Duration,
    pub cap: Duration,
    pub budget_ratio: f32,
    pub min_retries_per_second: u32,
    /// Retry `POST /api/v2/token` after a 5xx or a timeout once the request was sent
    /// (iDenfy may have created the session). Off by default.
    pub retry_token_after_send: bool,
}

/// `[dedup]`
#[derive(Debug, Clone)]
pub struct Dedup {
    pub replay: bool,
    /// Token lifetime when neither the response nor the request names one.
    pub default_lifetime: Duration,
    /// Replay stops this long before the token expires.
    pub safety_margin: Duration,
    /// Replay store bound, in entries.
    pub max_entries: u64,
    /// Replay store bound, in bytes of stored responses (default 64 MiB).
    pub max_bytes: u64,
    /// An entry whose session was last known live longer ago than this is rechecked with
    /// `POST /api/v2/status` before it is replayed (zero: always).
    pub recheck_after: Duration,
}

/// `[validation]`
#[derive(Debug, Clone)]
pub struct Validation {
    pub enabled: bool,
}

/// `[limits]`
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_wait: Duration,
    pub max_body: u64,
}

/// `[routes]`
#[derive(Debug, Clone)]
pub struct Routes {
    /// Path prefixes forwarded to iDenfy.
    pub prefixes: Vec<String>,
}

/// `[state]`: where the quotas, pauses and dedup state live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// In the process: each replica its own (the default).
    Memory,
    /// Shared by the fleet through Redis (or Valkey).
    Redis(Redis),
}

/// `state.backend = "redis"`: the server and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    /// `state.redis_url` (`redis://` or `rediss://`), which may hold a user and password.
    pub url: Secret,
    /// `state.redis_password_file`: the password, read from a file (in place of the URL's).
    pub password_file: Option<PathBuf>,
    /// `state.redis_ca_file`: the CAs (PEM) a `rediss://` server's certificate is checked
    /// against, in place of the public roots.
    pub ca_file: Option<PathBuf>,
    /// `state.key_prefix`: every key starts with it (default `idenfy-gateway:`).
    pub key_prefix: String,
    /// `state.timeout`: the longest one Redis operation may take (default 50 ms).
    pub timeout: Duration,
    /// `state.on_unavailable`: what a request does while Redis cannot answer.
    pub on_unavailable: OnUnavailable,
}

/// `state.on_unavailable`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Fall back to the replica's own memory state (the default); replicas drift apart.
    Local,
    /// Answer 503 `state_unavailable`.
    Refuse,
}

/// `[log]`
#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `idenfy_gateway=debug`.
    pub level: String,
}

/// `[telemetry]`
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// Span export over OTLP/HTTP; `None` (the default) exports nothing.
    pub otlp: Option<Otlp>,
}

/// `telemetry.otlp_*`: where spans go, and under which service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// The collector's traces URL: `telemetry.otlp_endpoint` + `/v1/traces`.
    pub traces_url: String,
    pub service_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Human,
}

/// A rate: `count` per `per` (`"20/s"`, `"600/m"`, `"10000/h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    /// Time between two cells: the GCRA emission interval.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }
}
