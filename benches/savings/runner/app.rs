//! The app's users, as a plan drawn from a fixed seed (the same users in every run):
//! - arrivals spread over a window, with bursts where a share of the users comes within seconds;
//! - on a visit a user clicks "verify" once, or double-clicks: 2 or 3 requests for the same
//!   clientId within one second, each a request of its own in the app's backend;
//! - some users reload the page later, and the app asks again for a token for a clientId whose
//!   session is still live (what iDenfy answers with 409).
//!
//! Each click runs the baseline client's whole retry loop on its own task.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::client::{Baseline, Call};
use super::clock::{real, secs};

/// The shape of the traffic.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub users: usize,
    pub seed: u64,
    /// First visits are spread over `[0, spread)`, simulated time.
    pub spread: Duration,
    /// Bursts: (start, width, share of the users arriving in it).
    pub bursts: Vec<(Duration, Duration, f64)>,
    /// Share of visits that are double clicks (2 or 3 requests within one second).
    pub double_click: f64,
    /// Share of users who reload the page, after `reload_after` (a range, simulated time).
    pub reload: f64,
    pub reload_after: (Duration, Duration),
}

impl Traffic {
    /// The traffic of the benchmark: 150 users over four minutes, 45 of them in a 2 s burst at
    /// 0:40 and 45 more at 2:30; 40 % of visits double-click, 30 % of users reload.
    pub fn day() -> Self {
        Traffic {
            users: 150,
            seed: 18,
            spread: secs(240),
            bursts: vec![(secs(40), secs(2), 0.3), (secs(150), secs(2), 0.3)],
            double_click: 0.4,
            reload: 0.3,
            reload_after: (secs(10), secs(60)),
        }
    }
}

/// One request the app will make: when (simulated, from the start), for whom, in which visit.
#[derive(Debug, Clone, PartialEq)]
pub struct Click {
    pub at: Duration,
    pub client_id: String,
    pub visit: usize,
}

/// The plan: every click, and how many visits there are.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clicks: Vec<Click>,
    pub visits: usize,
}

impl Plan {
    pub fn draw(t: &Traffic) -> Plan {
        let mut rng = fastrand::Rng::with_seed(t.seed);
        let mut clicks = Vec::new();
        let mut visits = 0;
        for user in 0..t.users {
            let client_id = format!("user-{}-{user}", t.seed);
            let mut arrival = between(&mut rng, Duration::ZERO, t.spread);
            let mut roll = rng.f64();
            for &(start, width, share) in &t.bursts {
                if roll < share {
                    arrival = between(&mut rng, start, width);
                    break;
                }
                roll -= share;
            }
            let mut visit_at = vec![arrival];
            if rng.f64() < t.reload {
                let (lo, hi) = t.reload_after;
                visit_at.push(arrival + between(&mut rng, lo, hi - lo));
            }
            for at in visit_at {
                let extra = match rng.f64() < t.double_click {
                    true => rng.usize(1..=2),
                    false => 0,
                };
                clicks.push(Click {
                    at,
                    client_id: client_id.clone(),
                    visit: visits,
                });
                for _ in 0..extra {
                    clicks.push(Click {
                        at: between(&mut rng, at, secs(1)),
                        client_id: client_id.clone(),
                        visit: visits,
                    });
                }
                visits += 1;
            }
        }
        clicks.sort_by_key(|c| c.at);
        Plan { clicks, visits }
    }

    /// Runs every click at its time against `client`; returns every call once all have ended.
    pub async fn run(&self, client: &Baseline) -> Vec<Call> {
        let start = tokio::time::Instant::now();
        let client = Arc::new(client.clone());
        let mut tasks = JoinSet::new();
        for click in self.clicks.clone() {
            let client = client.clone();
            tasks.spawn(async move {
                tokio::time::sleep_until(start + real(click.at)).await;
                client.create_token(&click.client_id, click.visit).await
            });
        }
        let mut calls = Vec::with_capacity(self.clicks.len());
        while let Some(done) = tasks.join_next().await {
            if let Ok(call) = done {
                calls.push(call);
            }
        }
        calls
    }
}

/// A uniform draw in `[from, from + width)`.
fn between(rng: &mut fastrand::Rng, from: Duration, width: Duration) -> Duration {
    from + width.mul_f64(rng.f64())
}
