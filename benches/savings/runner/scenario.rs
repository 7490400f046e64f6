//! The scenarios: what iDenfy (the simulator) does while the app's users arrive, and one run of
//! a scenario on one path: the app calling the simulator directly, or through a gateway
//! configured as `config/sidecar.toml` ships (every duration and rate scaled, see [`super::clock`]).

use std::time::{Duration, Instant};

use idenfy_gateway::config::Config;
use idenfy_gateway::simulator::{
    Faults, Simulator, SimulatorConfig, DEFAULT_API_KEY, DEFAULT_API_SECRET,
};

use super::app::{Plan, Traffic};
use super::client::Baseline;
use super::clock::{config, real, retry_after_header, secs, SPEED};
use super::tally::Tally;

/// iDenfy's answer time for a token, simulated (the simulator adds it to every answer).
pub const LATENCY: Duration = Duration::from_millis(300);

/// Where the app sends its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Gateway,
}

/// What iDenfy does during a run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The table's name.
    pub name: &'static str,
    /// The chart's label.
    pub short: &'static str,
    /// From each simulated instant on, these faults (latency added); none before the first.
    pub faults: Vec<(Duration, Faults)>,
    /// Requests the account has left this hour (0: no limit).
    pub hourly_limit: u32,
    /// iDenfy answers 409 to a token for a clientId with a live session (the simulator's
    /// default, per iDenfy's error-handling guide); `false`: it creates and bills a second one.
    pub conflict_on_active: bool,
    /// The gateway's `retry.retry_token_after_send`.
    pub retry_token_after_send: bool,
}

impl Scenario {
    fn new(name: &'static str, short: &'static str) -> Self {
        Scenario {
            name,
            short,
            faults: Vec::new(),
            hourly_limit: 0,
            conflict_on_active: true,
            retry_token_after_send: false,
        }
    }
}

/// 30 % of calls answered 503; one in five of those after iDenfy created the session (a load
/// balancer that gave up on a request iDenfy went on to serve). Nobody publishes the real share.
fn unavailable_30() -> Faults {
    Faults {
        rate: 0.3,
        after_effect: 0.2,
        ..Faults::down(503)
    }
}

/// The benchmark's scenarios, in the table's order.
pub fn all() -> Vec<Scenario> {
    let throttled = Faults {
        retry_after: Some(retry_after_header(secs(20))),
        ..Faults::down(429)
    };
    vec![
        Scenario::new("calm day", "calm"),
        Scenario {
            conflict_on_active: false,
            ..Scenario::new(
                "calm day, iDenfy bills a second session instead of 409",
                "calm, no 409",
            )
        },
        Scenario {
            faults: vec![(Duration::ZERO, unavailable_30())],
            ..Scenario::new("30 % of calls 503", "30% 503")
        },
        Scenario {
            faults: vec![(Duration::ZERO, unavailable_30())],
            retry_token_after_send: true,
            ..Scenario::new(
                "30 % of calls 503, gateway with `retry_token_after_send = true`",
                "30% 503, retry after send",
            )
        },
        Scenario {
            faults: vec![(secs(60), throttled), (secs(90), Faults::default())],
            ..Scenario::new("429 with `Retry-After: 20` for 30 s", "429 + Retry-After")
        },
        Scenario {
            hourly_limit: 200,
            ..Scenario::new("hourly limit reached (200 requests left)", "hourly limit")
        },
        Scenario {
            faults: vec![
                (secs(60), Faults::down(503)),
                (secs(120), Faults::default()),
            ],
            ..Scenario::new("60 s outage (503)", "60 s outage")
        },
    ]
}

/// The gateway's config: `config/sidecar.toml`'s values, every duration and rate scaled.
pub fn gateway_config(upstream: &str, retry_token_after_send: bool) -> String {
    format!(
        r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstream]
url = "{upstream}"
connect_timeout = "{connect}"
attempt_timeout = "{attempt}"
deadline = "{deadline}"

[[account]]
name = "main"
api_key = "{DEFAULT_API_KEY}"
api_secret = "{DEFAULT_API_SECRET}"
rate = "{account_rate}/h"
burst = 50

[[team]]
name = "app"
rate = "{team_rate}/s"
burst = 40

[retry]
max_attempts = 4
base = "{base}"
cap = "{cap}"
budget_ratio = 0.2
min_retries_per_second = 1
retry_token_after_send = {retry_token_after_send}

[dedup]
replay = true

[limits]
max_wait = "{max_wait}"

[log]
format = "human"
level = "off"
"#,
        connect = config(secs(2)),
        attempt = config(secs(15)),
        deadline = config(secs(30)),
        account_rate = 10_000 * SPEED,
        team_rate = 20 * SPEED,
        base = config(Duration::from_millis(200)),
        cap = config(secs(5)),
        max_wait = config(secs(2)),
    )
}

/// Runs `scenario` on `path` with the users of `traffic`.
pub async fn run(scenario: &Scenario, traffic: &Traffic, path: Path) -> anyhow::Result<Tally> {
    let plan = Plan::draw(traffic);
    let latency = |f: Faults| Faults {
        latency_ms: real(LATENCY).as_millis() as u64,
        ..f
    };
    let sim = Simulator::start(SimulatorConfig {
        hourly_limit: scenario.hourly_limit,
        allow_duplicate_sessions: !scenario.conflict_on_active,
        faults: latency(Faults::default()),
        ..SimulatorConfig::default()
    })
    .await?;
    let gateway = match path {
        Path::Direct => None,
        Path::Gateway => {
            let text = gateway_config(&sim.url(), scenario.retry_token_after_send);
            let config = Config::parse(&text, &|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(idenfy_gateway::server::start(config).await?)
        }
    };
    let client = match &gateway {
        None => Baseline::new(&sim.url(), Some(sim.authorization())),
        Some(gw) => Baseline::new(&format!("http://{}", gw.proxy_addr), None),
    };
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let schedule = async {
        for (at, faults) in &scenario.faults {
            tokio::time::sleep_until(start + real(*at)).await;
            sim.set_faults(latency(faults.clone()))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        anyhow::Ok(())
    };
    let (calls, scheduled) = tokio::join!(plan.run(&client), schedule);
    scheduled?;
    let wall = started.elapsed();
    let counters = sim.counters();
    if let Some(gw) = gateway {
        gw.shutdown().await;
    }
    sim.shutdown().await;
    Ok(Tally::count(&calls, plan.visits, &counters, wall))
}
