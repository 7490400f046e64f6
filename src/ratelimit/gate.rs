//! Where a quota is decided: in this process ([`Quota`], governor) or in Redis, shared by the
//! fleet ([`SharedQuota`]). The choice is made once, in [`crate::stack`]; the team and account
//! limits hold a [`Gate`] and do not know which. The memory gate costs the usual request one
//! branch more than the quota itself: no dynamic dispatch, no allocation.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::carry::{self, Quotas};
use super::quota::{Quota, Refused};
use crate::config::{self, OnUnavailable};
use crate::state::quota::{Decision, SharedQuota};
use crate::state::{Op, SharedState};

/// A team's or an account's quota, local or shared.
#[derive(Debug, Clone)]
pub enum Gate {
    /// This replica's own quota (`state.backend = "memory"`).
    Local(Arc<Quota>),
    /// The fleet's quota in Redis, with this replica's own as the fallback while Redis is down
    /// (`state.on_unavailable = "local"`).
    Shared {
        shared: SharedQuota,
        local: Arc<Quota>,
    },
}

/// Why a request did not get its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Over the quota within the wait budget.
    Refused(Refused),
    /// Redis did not answer and `state.on_unavailable = "refuse"`.
    Unavailable,
}

impl Gate {
    /// Takes a free cell now, synchronously, when the quota is local and one is free; `false`
    /// otherwise (a shared quota is always asked, by [`Gate::acquire`]).
    pub fn take_free(&self) -> bool {
        match self {
            Gate::Local(quota) => quota.take_free(),
            Gate::Shared { .. } => false,
        }
    }

    /// Waits for a cell for at most `budget`: `Ok(waited)`, or denied at once.
    pub async fn acquire(&self, budget: Duration) -> Result<Duration, Denied> {
        let (shared, local) = match self {
            Gate::Local(quota) => return quota.acquire(budget).await.map_err(Denied::Refused),
            Gate::Shared { shared, local } => (shared, local),
        };
        let start = Instant::now();
        match shared.decide(budget).await {
            // Passed at once: the round trip is not a wait in line.
            Ok(Decision::After(wait)) if wait.is_zero() => Ok(Duration::ZERO),
            Ok(Decision::After(wait)) => {
                tokio::time::sleep(wait).await;
                Ok(start.elapsed())
            }
            Ok(Decision::Refused(retry_after)) => Err(Denied::Refused(Refused { retry_after })),
            Err(_) => {
                let state = shared.state();
                state.metrics().fell_back(Op::Quota);
                match state.on_unavailable() {
                    OnUnavailable::Local => local.acquire(budget).await.map_err(Denied::Refused),
                    OnUnavailable::Refuse => Err(Denied::Unavailable),
                }
            }
        }
    }

    /// This replica's own quota (the whole quota in memory; the fallback when shared).
    pub fn local(&self) -> &Arc<Quota> {
        match self {
            Gate::Local(quota) | Gate::Shared { local: quota, .. } => quota,
        }
    }

    /// The shared quota, when the fleet shares it.
    pub fn shared(&self) -> Option<&SharedQuota> {
        match self {
            Gate::Local(_) => None,
            Gate::Shared { shared, .. } => Some(shared),
        }
    }
}

/// Builds the gates of one build of the stack: every quota local, or shared through `state`
/// (each keyed under its account's hash tag). Local quotas outlive a reload in `quotas`.
#[derive(Clone, Copy)]
pub struct Gates<'a> {
    pub quotas: &'a Quotas,
    pub state: Option<&'a SharedState>,
}

impl Gates<'_> {
    /// The gate of a team on account `account`.
    pub fn team(&self, team: &config::Team, account: &str) -> Gate {
        let local = self
            .quotas
            .get(&carry::team_key(&team.name), team.rate, team.burst);
        match self.state {
            None => Gate::Local(local),
            Some(state) => {
                let rate = shared_rate(team.rate, team.burst);
                let shared = SharedQuota::team(state, account, &team.name, rate);
                Gate::Shared { shared, local }
            }
        }
    }

    /// The gate of an account, with its pause.
    pub fn account(&self, account: &config::Account) -> Gate {
        let key = carry::account_key(&account.name);
        let local = self.quotas.get(&key, account.rate, account.burst);
        match self.state {
            None => Gate::Local(local),
            Some(state) => {
                let rate = shared_rate(account.rate, account.burst);
                let shared = SharedQuota::account(state, &account.name, rate);
                Gate::Shared { shared, local }
            }
        }
    }
}

fn shared_rate(rate: config::Rate, burst: NonZeroU32) -> crate::state::quota::Rate {
    crate::state::quota::Rate {
        interval: rate.interval(),
        burst: burst.get(),
    }
}
