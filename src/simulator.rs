//! The simulator: a stand-in for iDenfy (as stripe-mock is for Stripe), for tests, benchmarks and
//! `idenfy-gateway demo`. Tests start it in-process on `127.0.0.1:0`; `idenfy-gateway simulate`
//! serves it alone. HTTP/1.1 with keep-alive, and h2c, on one port.
//!
//! # The iDenfy API it serves
//!
//! | path | answers |
//! |---|---|
//! | `POST /api/v2/token` | 201 token; 400 `{"identifier","message"}` by [`crate::idenfy`]'s rules; 409 for an active clientId |
//! | `POST /kyb/tokens/` | 201 `tokenString`, `expiration`, `isActive`, `isValid`, …; 400 by the KYB rules |
//! | `POST /api/v2/status`, `/api/v2/data` | 200 for a known `scanRef`, 404 `NOT_FOUND` otherwise |
//! | `POST /api/v2/delete` | 400 `PARTNER_ERROR` "Token has not expired yet." until `expiryTime`, then 200 empty |
//! | anything else | 404 `{"identifier":"NOT_FOUND"}` |
//!
//! Every API request is checked in this order: known path, injected faults, Basic auth (401
//! `{"message":"Invalid authorization credentials"}`, no identifier, per iDenfy's table of
//! authentication errors), the hourly limit (429 `TOO_MANY_REQUESTS`, or 400 with
//! `legacy_rate_limit`), the method (405), then the endpoint.
//!
//! Choices where iDenfy's documentation is silent or disagrees (idenfy-api.md §3–§5):
//! - **409** `{"message":"Client ID already exists"}` (the docs' own words, no identifier since
//!   none is documented) while the clientId's newest session is active: not finished, not deleted
//!   and `expiryTime` not passed. On by default; `conflict_on_active = false` turns it off.
//! - Defaults `expiryTime` 3600 and `sessionLength` 600 (the GitHub docs); KYB `lifetime` 3600 and
//!   `tokenType` `FORM`.
//! - The hourly limit is a fixed window of simulated time; refused requests do not count.
//! - `dummyStatus` (APPROVED, DENIED, SUSPECTED, EXPIRED) finishes the session at once, as in
//!   iDenfy's DEV environment.
//!
//! # Control
//!
//! `/__sim/…` (see [`control`] for the table) and the same operations as methods of [`Simulator`]:
//! faults, counters, settings, the clock, finishing sessions (which sends the signed webhook), reset.
//! Time is simulated: [`Simulator::advance`] or `POST /__sim/clock/advance` moves it forward, so
//! expiry tests never wait.

mod api;
mod clock;
pub mod control;
mod counters;
mod faults;
mod limit;
mod reply;
mod server;
mod sessions;
mod state;
mod token;
mod verification;
mod webhook;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use counters::{AuthorizationSeen, Counters, Rejections, Webhooks, MAX_CLIENT_IDS};
pub use faults::{Fault, Faults};
pub use sessions::{DEFAULT_EXPIRY_TIME, DEFAULT_SESSION_LENGTH};
pub use state::{Credentials, Settings};
pub use token::{CONFLICT_MESSAGE, DEFAULT_KYB_LIFETIME};
pub use webhook::{sign, Attempt, Delivery, Finish, FinishError, FinishReport};

use self::clock::SimClock;
use self::limit::HourlyLimit;
use self::sessions::Sessions;
use self::state::{Shared, State};
use self::webhook::WebhookClient;

/// The API key the simulator accepts unless told otherwise (a public test value, not a secret).
pub const DEFAULT_API_KEY: &str = "sim-api-key";
/// The API secret the simulator accepts unless told otherwise (a public test value, not a secret).
pub const DEFAULT_API_SECRET: &str = "sim-api-secret";
/// iDenfy's documented default hourly request limit.
pub const DEFAULT_HOURLY_LIMIT: u32 = 10_000;
/// Sessions remembered before the oldest are forgotten.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// How to start a simulator: the flags of `idenfy-gateway simulate` (flatten it into a clap
/// subcommand), or `SimulatorConfig::default()` in tests, which listens on `127.0.0.1:0`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorConfig {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// API key accepted in Basic auth.
    #[arg(long, env = "IDENFY_SIM_API_KEY", default_value = DEFAULT_API_KEY)]
    pub api_key: String,
    /// API secret accepted in Basic auth.
    #[arg(long, env = "IDENFY_SIM_API_SECRET", default_value = DEFAULT_API_SECRET, hide_env_values = true)]
    pub api_secret: String,
    /// API requests allowed per hour before TOO_MANY_REQUESTS (0: no limit).
    #[arg(long, default_value_t = DEFAULT_HOURLY_LIMIT)]
    pub hourly_limit: u32,
    /// Answer the hourly limit with the older 400 instead of 429.
    #[arg(long)]
    pub legacy_rate_limit: bool,
    /// Create a second token for a clientId with an active session instead of answering 409.
    #[arg(long)]
    pub allow_duplicate_sessions: bool,
    /// Where webhooks go when a session has no callbackUrl.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Key of the webhooks' Idenfy-Signature HMAC; no signature when absent.
    #[arg(long, env = "IDENFY_SIM_WEBHOOK_KEY", hide_env_values = true)]
    pub webhook_key: Option<String>,
    /// Sessions remembered before the oldest are forgotten.
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,
    #[command(flatten)]
    pub faults: Faults,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: DEFAULT_API_KEY.to_owned(),
            api_secret: DEFAULT_API_SECRET.to_owned(),
            hourly_limit: DEFAULT_HOURLY_LIMIT,
            legacy_rate_limit: false,
            allow_duplicate_sessions: false,
            webhook_url: None,
            webhook_key: None,
            max_sessions: DEFAULT_MAX_SESSIONS,
            faults: Faults::default(),
        }
    }
}

impl SimulatorConfig {
    /// The run-time settings this configuration starts with.
    pub fn settings(&self) -> Settings {
        Settings {
            credentials: vec![Credentials {
                api_key: self.api_key.clone(),
                api_secret: self.api_secret.clone(),
            }],
            conflict_on_active: !self.allow_duplicate_sessions,
            hourly_limit: self.hourly_limit,
            legacy_rate_limit: self.legacy_rate_limit,
            webhook_url: self.webhook_url.clone(),
            webhook_key: self.webhook_key.clone(),
            webhook_retry_delay_ms: 500,
        }
    }
}

/// A running simulator. Dropping it stops accepting connections; [`Simulator::shutdown`] also
/// waits for open ones.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<()>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Binds `config.listen` and serves in a background task.
    pub async fn start(config: SimulatorConfig) -> io::Result<Simulator> {
        config
            .faults
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                let message = format!("simulator: cannot listen on {}: {e}", config.listen);
                io::Error::new(e.kind(), message)
            })?;
        let addr = listener.local_addr()?;
        let max_sessions = config.max_sessions;
        let shared = Arc::new(Shared {
            clock: SimClock::new(),
            state: Mutex::new(State {
                settings: config.settings(),
                sessions: Sessions::new(max_sessions),
                counters: Counters::default(),
                faults: config.faults,
                limit: HourlyLimit::default(),
            }),
            webhooks: WebhookClient::new(),
            max_sessions,
        });
        let (shutdown, rx) = watch::channel(());
        let task = tokio::spawn(server::serve(listener, shared.clone(), rx));
        Ok(Simulator {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL to give a client or the gateway's `[upstream] url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `Authorization` value of the simulator's first key pair.
    pub fn authorization(&self) -> String {
        use base64::Engine;
        let settings = self.settings();
        let pair = settings
            .credentials
            .first()
            .map_or(String::new(), |c| format!("{}:{}", c.api_key, c.api_secret));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// A snapshot of what the simulator saw.
    pub fn counters(&self) -> Counters {
        self.shared.state().counters.clone()
    }

    /// The current faults (with what is left of `next` / `drop_next`).
    pub fn faults(&self) -> Faults {
        self.shared.state().faults.clone()
    }

    /// Replaces the faults; refuses out-of-range values.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        self.shared.state().faults = faults;
        Ok(())
    }

    /// No more faults: iDenfy is "up".
    pub fn clear_faults(&self) {
        self.shared.state().faults = Faults::default();
    }

    /// The run-time settings.
    pub fn settings(&self) -> Settings {
        self.shared.state().settings.clone()
    }

    /// Changes the run-time settings: `sim.update_settings(|s| s.conflict_on_active = false)`.
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut self.shared.state().settings);
    }

    /// Moves simulated time forward (token expiry, the hourly window).
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Finishes a session and delivers its webhook (see [`Finish`]).
    pub async fn finish(
        &self,
        scan_ref: &str,
        finish: Finish,
    ) -> Result<FinishReport, FinishError> {
        webhook::finish(&self.shared, scan_ref, finish).await
    }

    /// Forgets counters, sessions, faults and the hourly window; settings and the clock stay.
    pub fn reset(&self) {
        control::reset(&self.shared);
    }

    /// Stops accepting, then waits (up to 5 s) for open connections to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimulatorConfig,
    }

    #[test]
    fn flags_parse_into_the_config() {
        let cli = Cli::try_parse_from([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "k",
            "--api-secret",
            "s",
            "--hourly-limit",
            "5",
            "--allow-duplicate-sessions",
            "--fault-rate",
            "0.5",
            "--fault-status",
            "502",
        ])
        .unwrap();
        let settings = cli.sim.settings();
        assert_eq!(settings.credentials[0].api_key, "k");
        assert_eq!(settings.hourly_limit, 5);
        assert!(!settings.conflict_on_active);
        assert_eq!((cli.sim.faults.rate, cli.sim.faults.status), (0.5, 502));
    }

    #[test]
    fn flag_defaults_match_the_library_defaults() {
        let cli = Cli::try_parse_from(["simulate"]).unwrap();
        let default = SimulatorConfig::default();
        assert_eq!(cli.sim.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(cli.sim.settings(), default.settings());
        assert_eq!(cli.sim.faults, default.faults);
    }
}
