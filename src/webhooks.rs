//! Webhooks: iDenfy posts a verification's result to one URL per account; with a shared gateway
//! that URL belongs to no team, so the gateway becomes it. A third listener (`listen.webhook`)
//! serves `POST /webhooks/idenfy/{account}` and nothing else:
//!
//! - [`intake`]: checks `Idenfy-Signature` with the account's `webhook_key` (constant time),
//!   stores the raw body durably, then answers 200, within milliseconds whatever the teams'
//!   endpoints do; a redelivery of the same event is acknowledged and not queued twice; a final
//!   webhook ends replay for its scanRef ([`crate::dedup::SessionEnds`]);
//! - [`RouteBook`]: which team created each scanRef, learnt from the token responses the gateway
//!   relays, kept until `webhooks.max_age` past the token's expiry;
//! - [`delivery`]: delivers each webhook to its team's `webhook_url`, byte for byte, re-signed with
//!   the team's `webhook_key`, at least once and in order per scanRef, with retries and dead
//!   letters (listed and re-sent on the admin listener);
//! - [`schedule`]: what is due when, in memory (O(log n) per webhook, whatever the backlog);
//! - [`store`]: the storage trait; [`disk`]: redb under `webhooks.dir` (`state.backend =
//!   "memory"`); [`fleet`]: Redis (`state.backend = "redis"`), a Stream read by a consumer group
//!   so that any replica accepts and any replica delivers;
//! - [`signature`], [`metrics`].

pub mod delivery;
pub mod disk;
pub mod fleet;
pub mod intake;
pub mod metrics;
pub mod schedule;
pub mod signature;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::dedup::{SessionEnds, SessionObserver};
use crate::state::SharedState;
use fleet::FleetStore;

pub use delivery::{DeadLetters, HttpTransport, Queue, Transport, X_GATEWAY_DELIVERY_ID};
pub use intake::{Intake, WebhookKey};
pub use metrics::WebhookMetrics;
pub use schedule::Schedule;
pub use signature::{sign, IDENFY_SIGNATURE};
pub use store::WebhookStore;

/// Wall-clock milliseconds that advance with tokio's clock (so that paused-time tests move it):
/// the wall time at creation plus the tokio time elapsed since.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start: u64,
    start: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            wall_at_start: wall.as_millis() as u64,
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.wall_at_start + self.start.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Learns which team created each scanRef from the token responses dedup sees. Called on the
/// request path, so it only records the route in memory and hands it to a writer task, which
/// stores it (in batches); deliveries look in memory first, so a webhook that overtakes the write
/// is still routed. A crash in those few milliseconds forgets the route (`webhooks.unknown`
/// decides then).
pub struct RouteBook {
    teams: Vec<String>,
    keep_after_expiry: Duration,
    clock: Clock,
    recent: Arc<DashMap<String, String>>,
    writes: mpsc::UnboundedSender<(String, String, u64)>,
}

impl SessionObserver for RouteBook {
    fn created(&self, team: usize, scan_ref: &str, lifetime: Duration) {
        let Some(name) = self.teams.get(team) else {
            return;
        };
        let keep = lifetime + self.keep_after_expiry;
        let until = self.clock.now_ms() + keep.as_millis() as u64;
        self.recent.insert(scan_ref.to_owned(), name.clone());
        let _ = self.writes.send((scan_ref.to_owned(), name.clone(), until));
    }
}

/// Stores learnt routes until the channel closes, then forgets them from memory.
async fn write_routes(
    store: Arc<dyn WebhookStore>,
    recent: Arc<DashMap<String, String>>,
    mut writes: mpsc::UnboundedReceiver<(String, String, u64)>,
) {
    let mut batch = Vec::new();
    while writes.recv_many(&mut batch, 256).await > 0 {
        let routes = std::mem::take(&mut batch);
        let store = Arc::clone(&store);
        let written = tokio::task::spawn_blocking(move || store.learn(&routes).map(|_| routes))
            .await
            .map_err(|e| store::StoreError(e.to_string()))
            .and_then(|r| r);
        match written {
            Ok(routes) => {
                for (scan_ref, team, _) in routes {
                    recent.remove_if(&scan_ref, |_, t| *t == team);
                }
            }
            // Kept in memory: still routed while this process lives.
            Err(e) => tracing::warn!(error = %e, "scanRef routes not stored"),
        }
    }
}

/// The webhook machinery of one gateway: built before the proxy stack (which tells the route
/// book of new sessions), completed with the replay handle once the stack exists.
pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    recent: Arc<DashMap<String, String>>,
    routes: Arc<RouteBook>,
    route_writes: Option<mpsc::UnboundedReceiver<(String, String, u64)>>,
    metrics: WebhookMetrics,
    clock: Clock,
    wake: Arc<Notify>,
    schedule: Arc<Mutex<Schedule>>,
    /// The fleet's queue, with `state.backend = "redis"`.
    fleet: Option<Arc<FleetStore>>,
}

impl Webhooks {
    /// Opens the store: the fleet's on `state` when there is one, else under `webhooks.dir`.
    pub fn open(
        config: &Config,
        registry: &prometheus::Registry,
        state: Option<&SharedState>,
    ) -> anyhow::Result<Self> {
        let Some(state) = state else {
            let store = Arc::new(disk::DiskStore::open(&config.webhooks.dir)?);
            return Self::with_store(config, registry, store);
        };
        let w = &config.webhooks;
        let fleet = Arc::new(FleetStore::new(state, w.max_age, w.reclaim_after));
        let mut webhooks = Self::with_store(config, registry, fleet.clone())?;
        webhooks.fleet = Some(fleet);
        Ok(webhooks)
    }

    /// Around a given store (tests, other backends).
    pub fn with_store(
        config: &Config,
        registry: &prometheus::Registry,
        store: Arc<dyn WebhookStore>,
    ) -> anyhow::Result<Self> {
        let clock = Clock::new();
        let recent: Arc<DashMap<String, String>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let routes = Arc::new(RouteBook {
            teams: config.teams.iter().map(|t| t.name.clone()).collect(),
            keep_after_expiry: config.webhooks.max_age,
            clock,
            recent: Arc::clone(&recent),
            writes: tx,
        });
        Ok(Webhooks {
            store,
            recent,
            routes,
            route_writes: Some(rx),
            metrics: WebhookMetrics::new(registry)?,
            clock,
            wake: Arc::new(Notify::new()),
            schedule: Arc::default(),
            fleet: None,
        })
    }

    /// Where stored webhooks are scheduled: here, or (a fleet) by the replica the group hands
    /// them to.
    fn local_schedule(&self) -> Option<Arc<Mutex<Schedule>>> {
        self.fleet.is_none().then(|| Arc::clone(&self.schedule))
    }

    /// What dedup tells of each session created.
    pub fn route_book(&self) -> Arc<dyn SessionObserver> {
        self.routes.clone()
    }

    /// The dead letters, for the admin listener.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            store: Arc::clone(&self.store),
            schedule: self.local_schedule(),
            wake: Arc::clone(&self.wake),
            clock: self.clock,
        }
    }

    /// The listener's handler: accounts with a webhook key, the replay handle, body limits.
    pub fn intake(&self, config: &Config, ends: SessionEnds) -> Arc<Intake> {
        let accounts: HashMap<String, WebhookKey> = config
            .accounts
            .iter()
            .filter_map(|a| Some((a.name.clone(), WebhookKey::new(a.webhook_key.clone()?))))
            .collect();
        Arc::new(Intake {
            accounts,
            store: Arc::clone(&self.store),
            ends,
            metrics: self.metrics.clone(),
            wake: Arc::clone(&self.wake),
            schedule: self.local_schedule(),
            max_body: config.limits.max_body,
            body_timeout: config.listen.body_read_timeout,
            clock: self.clock,
        })
    }

    /// The delivery queue over `transport`.
    pub fn queue(&self, config: &Config, transport: Arc<dyn Transport>) -> Arc<Queue> {
        let teams = config
            .teams
            .iter()
            .map(|t| delivery::Target {
                name: t.name.clone(),
                webhook: t
                    .webhook
                    .as_ref()
                    .map(|w| (w.url.clone(), WebhookKey::new(w.key.clone()))),
            })
            .collect();
        let w = &config.webhooks;
        Arc::new(Queue {
            store: Arc::clone(&self.store),
            teams,
            unknown: w.unknown.clone(),
            recent: Arc::clone(&self.recent),
            timing: delivery::Timing {
                retry_base: w.retry_base,
                retry_cap: w.retry_cap,
                max_age: w.max_age,
                delivery_timeout: w.delivery_timeout,
            },
            transport,
            metrics: self.metrics.clone(),
            clock: self.clock,
            wake: Arc::clone(&self.wake),
            schedule: Arc::clone(&self.schedule),
            fleet: self.fleet.clone(),
        })
    }

    /// Starts the route writer and the delivery queue (and a fleet's feed); all stop with `stop` (the writer when the
    /// route book is dropped).
    pub fn spawn(
        &mut self,
        queue: Arc<Queue>,
        stop: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(queue.run(stop.clone()))];
        if let Some(fleet) = &self.fleet {
            let (schedule, wake) = (Arc::clone(&self.schedule), Arc::clone(&self.wake));
            tasks.push(tokio::spawn(Arc::clone(fleet).feed(
                schedule,
                wake,
                stop.clone(),
            )));
        }
        if let Some(rx) = self.route_writes.take() {
            let writer = write_routes(Arc::clone(&self.store), Arc::clone(&self.recent), rx);
            let mut stop = stop;
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = writer => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }));
        }
        tasks
    }
}
