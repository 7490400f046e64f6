//! Where a quota is decided: in this process ([`Quota`], governor) or in Redis, shared by the
//! fleet ([`SharedQuota`]). The choice is made once, in [`crate::stack`]; the team and account
//! limits hold a [`Gate`] and do not know which. The memory gate costs the usual request one
//! branch more than the quota itself: no dynamic dispatch, no allocation.
//!
//! A shared team gate also holds its account's quota: its [`Gate::acquire_request`] decides the
//! team's cell and the first attempt's account cell in one round trip, and hands the latter to
//! the account limit ([`FirstAttempt`]), whose [`Gate::acquire_attempt`] applies it. When that
//! decision was taken ahead of the team limit (a token leader's lease script, [`Decided`]), the
//! team gate applies it without a round trip of its own.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use tokio::time::Instant;

use super::carry::{self, Quotas};
use super::decided::Decided;
use super::first_attempt::FirstAttempt;
use super::quota::{Quota, Refused};
use crate::config::{self, OnUnavailable};
use crate::deadline::WaitBudget;
use crate::state::quota::{Decision, FirstDecision, FirstQuotas, SharedQuota};
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
        /// A team's gate: its account's quota, decided for the request's first attempt in the
        /// same round trip as the team's.
        first_attempt: Option<SharedQuota>,
    },
}

/// A request let through a team's quota.
#[derive(Debug)]
pub struct Admitted {
    /// How long it waited in line.
    pub waited: Duration,
    /// Fleet mode: its first attempt's account cell, decided in the same round trip, for the
    /// account limit.
    pub first_attempt: Option<FirstAttempt>,
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
            Gate::Shared { shared, local, .. } => (shared, local),
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
            Err(_) => fall_back(shared, local, budget).await,
        }
    }

    /// A request's cell at a team's quota, waiting within `budget`; in fleet mode with its first
    /// attempt's account cell, decided in the same round trip, or already decided ahead of the
    /// team limit ([`Decided`], carried in the `request`'s extensions: no round trip). A refusal
    /// by the account's quota lets the request through at once, with nothing spent, for the
    /// account limit to refuse it.
    pub async fn acquire_request(
        &self,
        budget: WaitBudget,
        request: &mut Extensions,
    ) -> Result<Admitted, Denied> {
        let Gate::Shared {
            shared,
            local,
            first_attempt: Some(account),
        } = self
        else {
            let waited = self.acquire(budget.from_now()).await?;
            return Ok(Admitted {
                waited,
                first_attempt: None,
            });
        };
        let start = Instant::now();
        let decided = match Decided::take(request) {
            Some(decided) => Ok(decided),
            None => (shared.decide_first(account, budget).await).map(Decided::now),
        };
        let Ok(decided) = decided else {
            // The account limit decides the first attempt itself (at once: Redis is down).
            let waited = fall_back(shared, local, budget.from_now()).await?;
            return Ok(Admitted {
                waited,
                first_attempt: None,
            });
        };
        let (team_at, first_attempt) = match decided.parts() {
            (FirstDecision::After { team, account }, at) => {
                (at + team, FirstAttempt::at(at + account))
            }
            (FirstDecision::TeamRefused(retry_after), _) => {
                return Err(Denied::Refused(Refused { retry_after }));
            }
            (FirstDecision::AccountRefused(retry_after), at) => {
                (at, FirstAttempt::refused(Refused { retry_after }))
            }
        };
        // Passed at once: the round trip is not a wait in line (as in `acquire`).
        let waited = if team_at <= Instant::now() {
            Duration::ZERO
        } else {
            tokio::time::sleep_until(team_at).await;
            start.elapsed()
        };
        Ok(Admitted {
            waited,
            first_attempt: Some(first_attempt),
        })
    }

    /// The quotas a script needs to decide a request's first round trip ahead of this gate (a
    /// shared team gate's), [`Decided`].
    pub fn first_quotas(&self) -> Option<FirstQuotas> {
        match self {
            Gate::Shared {
                shared,
                first_attempt: Some(account),
                ..
            } => Some(FirstQuotas::new(shared.clone(), account.clone())),
            _ => None,
        }
    }

    /// An attempt's cell at an account's quota: the one its request's team decision reserved
    /// (fleet mode, first attempt: no round trip), or one waited for within `budget`.
    pub async fn acquire_attempt(
        &self,
        request: &Extensions,
        budget: Duration,
    ) -> Result<Duration, Denied> {
        let decided = match self {
            Gate::Shared { .. } => FirstAttempt::take(request),
            Gate::Local(_) => None,
        };
        match decided {
            Some(first_attempt) => first_attempt.wait().await.map_err(Denied::Refused),
            None => self.acquire(budget).await,
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

/// Redis did not answer: this replica's own quota, or refused (`state.on_unavailable`).
async fn fall_back(
    shared: &SharedQuota,
    local: &Quota,
    budget: Duration,
) -> Result<Duration, Denied> {
    let state = shared.state();
    state.metrics().fell_back(Op::Quota);
    match state.on_unavailable() {
        OnUnavailable::Local => local.acquire(budget).await.map_err(Denied::Refused),
        OnUnavailable::Refuse => Err(Denied::Unavailable),
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
    /// The gate of a team on `account` (shared: with the account's quota, for the first
    /// attempt's decision).
    pub fn team(&self, team: &config::Team, account: Option<&config::Account>) -> Gate {
        let local = self
            .quotas
            .get(&carry::team_key(&team.name), team.rate, team.burst);
        match self.state {
            None => Gate::Local(local),
            Some(state) => {
                let name = account.map_or("", |a| a.name.as_str());
                let rate = shared_rate(team.rate, team.burst);
                let shared = SharedQuota::team(state, name, &team.name, rate);
                let first_attempt = account.map(|a| account_quota(state, a));
                Gate::Shared {
                    shared,
                    local,
                    first_attempt,
                }
            }
        }
    }

    /// The gate of an account, with its pause.
    pub fn account(&self, account: &config::Account) -> Gate {
        let key = carry::account_key(&account.name);
        let local = self.quotas.get(&key, account.rate, account.burst);
        match self.state {
            None => Gate::Local(local),
            Some(state) => Gate::Shared {
                shared: account_quota(state, account),
                local,
                first_attempt: None,
            },
        }
    }
}

fn account_quota(state: &SharedState, account: &config::Account) -> SharedQuota {
    let rate = shared_rate(account.rate, account.burst);
    SharedQuota::account(state, &account.name, rate)
}

fn shared_rate(rate: config::Rate, burst: NonZeroU32) -> crate::state::quota::Rate {
    crate::state::quota::Rate {
        interval: rate.interval(),
        burst: burst.get(),
    }
}
