//! The Redis client of the shared state: one [`ConnectionManager`] (multiplexed, reconnects on
//! its own), every operation bounded by `state.timeout`, timed and counted by [`Op`].
//!
//! # Up and down
//!
//! The backend is up until an operation fails, down until one succeeds again; each change is
//! logged once (not once per request) and sets `idenfy_gateway_state_backend_up`. While it is
//! down, requests do not wait on Redis at all ([`SharedState::is_down`]: their layers fall back
//! at once) and a background probe PINGs it every [`PROBE_EVERY`] until it answers.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use redis::{IntoConnectionInfo, RedisResult};
use tokio::time::Instant;

use super::metrics::StateMetrics;
use crate::config::{self, OnUnavailable};

/// How often a down backend is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How long one connection attempt may take (a TLS handshake included); each operation is still
/// bounded by `state.timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What an operation is for: the `operation` label of the state metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A team's or account's quota decision (with the account's pause, in the same script).
    Quota,
    /// An account paused by a throttled answer.
    Pause,
    /// The background probe of a down backend.
    Ping,
    /// A token request's entry into the fleet's flight: a stored answer, the lease, or a wait.
    Flight,
    /// A flight's lease renewed while its upstream call runs.
    Renew,
    /// A flight's end: its answer stored for replay and published to its followers.
    Finish,
    /// A follower's subscription to a flight's answer.
    Subscribe,
    /// A session over: its replay entry removed.
    End,
    /// The webhook queue's storage: a webhook stored, its delivery's state, the dead letters,
    /// the scanRef→team routes.
    Webhook,
    /// A replica's claim on webhook deliveries: new ones read, a dead replica's taken over, its
    /// own kept alive.
    Claim,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Quota => "quota",
            Op::Pause => "pause",
            Op::Ping => "ping",
            Op::Flight => "flight",
            Op::Renew => "renew",
            Op::Finish => "finish",
            Op::Subscribe => "subscribe",
            Op::End => "end",
            Op::Webhook => "webhook",
            Op::Claim => "claim",
        }
    }
}

/// Why an operation on the shared state failed. Never holds the URL or a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("redis failed: {0}")]
    Failed(String),
    /// Down: not asked (the background probe will tell when it is back).
    #[error("redis is down")]
    Down,
}

/// The shared state's client. Clones share the connection.
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// For subscriptions, each on a connection of its own.
    client: redis::Client,
    timeout: Duration,
    prefix: String,
    on_unavailable: OnUnavailable,
    metrics: StateMetrics,
    health: AtomicU8,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// The client of `config`, connecting lazily (a Redis that is down at start is not an error:
    /// requests fall back or are refused until it answers). Needs a tokio runtime.
    pub fn connect(config: &config::Redis, metrics: StateMetrics) -> anyhow::Result<Self> {
        let mut info = config.url.expose().into_connection_info()?;
        if let Some(file) = &config.password_file {
            let password = crate::credentials::read_secret_file(Path::new(file))
                .map_err(|e| anyhow::anyhow!("state.redis_password_file: {e}"))?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match &config.ca_file {
            Some(file) => {
                let pem = config::state::read_ca(file)
                    .map_err(|e| anyhow::anyhow!("state.redis_ca_file: {e}"))?;
                let trust = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, trust)?
            }
            None => redis::Client::open(info)?,
        };
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())?;
        metrics.up.set(0);
        let state = SharedState {
            inner: Arc::new(Inner {
                conn,
                client,
                timeout: config.timeout,
                prefix: config.key_prefix.clone(),
                on_unavailable: config.on_unavailable,
                metrics,
                health: AtomicU8::new(UNKNOWN),
            }),
        };
        tokio::spawn(probe(Arc::downgrade(&state.inner)));
        Ok(state)
    }

    /// `{prefix}{account}:{rest}`: the account is the key's hash tag, so that all of one
    /// account's keys share a Redis Cluster slot (and one script may use them together).
    pub fn key(&self, account: &str, rest: &str) -> String {
        format!("{}{{{account}}}:{rest}", self.inner.prefix)
    }

    /// What a request does while Redis cannot answer.
    pub fn on_unavailable(&self) -> OnUnavailable {
        self.inner.on_unavailable
    }

    pub fn metrics(&self) -> &StateMetrics {
        &self.inner.metrics
    }

    /// Whether the last operation failed (and none has succeeded since).
    pub fn is_down(&self) -> bool {
        self.inner.health.load(Ordering::Relaxed) == DOWN
    }

    /// Runs one operation on the connection, within `state.timeout`; not at all while the
    /// backend is down ([`StateError::Down`]).
    pub async fn run<T, F>(
        &self,
        op: Op,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StateError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        if self.is_down() && op != Op::Ping {
            return Err(StateError::Down);
        }
        let timeout = self.inner.timeout;
        self.inner
            .run(op, self.inner.conn.clone(), timeout, call)
            .await
    }

    /// [`run`](Self::run) for an operation off the request path, which may move more than a
    /// request's (a webhook's body): within the connection timeout when that is longer than
    /// `state.timeout`.
    pub async fn run_slow<T, F>(
        &self,
        op: Op,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StateError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let timeout = self.inner.timeout.max(CONNECT_TIMEOUT);
        self.run_on(op, &self.inner.conn, timeout, call).await
    }

    /// A connection of its own, for blocking reads: on the shared connection, a read that
    /// waits would hold up every operation queued behind it. Connects lazily, reconnects on its
    /// own.
    pub fn dedicated(&self) -> Result<ConnectionManager, StateError> {
        ConnectionManager::new_lazy_with_config(self.inner.client.clone(), manager_config())
            .map_err(|e| StateError::Failed(e.category().to_string()))
    }

    /// One operation on `conn` (from [`dedicated`](Self::dedicated)), within `timeout`.
    pub async fn run_on<T, F>(
        &self,
        op: Op,
        conn: &ConnectionManager,
        timeout: Duration,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StateError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        if self.is_down() {
            return Err(StateError::Down);
        }
        self.inner.run(op, conn.clone(), timeout, call).await
    }

    /// A subscription to `channel`, on a connection of its own: a new connection (a TLS
    /// handshake with `rediss://`), so within the connection timeout rather than
    /// `state.timeout`. Bounded by the waiting caller's deadline all the same.
    pub async fn subscribe(&self, channel: &str) -> Result<PubSubStream, StateError> {
        if self.is_down() {
            return Err(StateError::Down);
        }
        let client = self.inner.client.clone();
        let channel = channel.to_string();
        let call = |_| async move {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok(pubsub.into_on_message())
        };
        let timeout = self.inner.timeout.max(CONNECT_TIMEOUT);
        let conn = self.inner.conn.clone();
        self.inner.run(Op::Subscribe, conn, timeout, call).await
    }
}

impl Inner {
    async fn run<T, F>(
        &self,
        op: Op,
        conn: ConnectionManager,
        timeout: Duration,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StateError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let start = Instant::now();
        let result = match tokio::time::timeout(timeout, call(conn)).await {
            Ok(Ok(value)) => Ok(value),
            // The category only: a server's message may quote a key (which names an account),
            // never the URL, but stays out of the logs all the same.
            Ok(Err(e)) => Err(StateError::Failed(e.category().to_string())),
            Err(_) => Err(StateError::TimedOut(timeout)),
        };
        match &result {
            Ok(_) => {
                self.metrics.answered(op, start.elapsed());
                self.mark(UP, None);
            }
            Err(e) => {
                self.metrics.failed(op);
                self.mark(DOWN, Some(e));
            }
        }
        result
    }

    /// Records the backend's health; a change is logged once.
    fn mark(&self, health: u8, error: Option<&StateError>) {
        let before = self.health.swap(health, Ordering::Relaxed);
        if before == health {
            return;
        }
        self.metrics.up.set(i64::from(health == UP));
        match (health, error) {
            (UP, _) if before == UNKNOWN => tracing::info!("state backend (redis) connected"),
            (UP, _) => tracing::warn!("state backend (redis) answers again"),
            (_, Some(error)) => {
                let fallback = match self.on_unavailable {
                    OnUnavailable::Local => "each replica's own state",
                    OnUnavailable::Refuse => "refused with 503",
                };
                tracing::error!(%error, "state backend (redis) down; until it answers: {fallback}");
            }
            _ => {}
        }
    }
}

/// Connections time out on connecting; each operation is bounded by its caller.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(100))
}

/// PINGs the backend while it is down, until the client is dropped.
async fn probe(inner: Weak<Inner>) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.health.load(Ordering::Relaxed) != UP {
            let ping = |mut conn: ConnectionManager| async move {
                redis::cmd("PING").query_async::<()>(&mut conn).await
            };
            // Not on the request path: the time a new connection (a TLS handshake) needs.
            let timeout = inner.timeout.max(CONNECT_TIMEOUT);
            let _ = inner.run(Op::Ping, inner.conn.clone(), timeout, ping).await;
        }
    }
}
