//! A request's first quota decisions taken ahead of the limits (fleet mode): the script that
//! gives a token request its lead in the fleet's flight (dedup's lease, [`crate::dedup`]) also
//! decides its team's cell and its first attempt's account cell, in the same round trip, as
//! the team limit would have ([`crate::state::quota::FIRST_DECISION_LUA`]). The decision
//! travels to the team limit as a request extension ([`Decided`]); the team limit applies it
//! without asking Redis again, and hands the account's part on to the account limit
//! ([`super::FirstAttempt`]) as it does with its own.
//!
//! [`AheadQuotas`] is what that script needs of the team limit: each team's quota and its
//! account's, and `limits.max_wait`. Only shared gates have one: in memory mode the limits
//! decide alone, and nothing here is built or asked.

use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use tokio::time::Instant;

use crate::context::Deadline;
use crate::deadline::WaitBudget;
use crate::state::quota::{FirstDecision, FirstQuotas};

/// The team limit's shared quotas, for a script that decides a request's first round trip ahead
/// of it. Clones share them.
#[derive(Debug, Clone)]
pub struct AheadQuotas {
    /// Indexed like `Config::teams`; `None` for a team without an account (a miswired stack).
    teams: Arc<[Option<FirstQuotas>]>,
    max_wait: Duration,
}

impl AheadQuotas {
    pub(super) fn new(teams: Vec<Option<FirstQuotas>>, max_wait: Duration) -> Self {
        AheadQuotas {
            teams: teams.into(),
            max_wait,
        }
    }

    /// The quotas of team `team` and the wait budget of a request bounded by `deadline`.
    pub fn of_team(
        &self,
        team: usize,
        deadline: Option<&Deadline>,
    ) -> Option<(&FirstQuotas, WaitBudget)> {
        let quotas = self.teams.get(team)?.as_ref()?;
        Some((quotas, WaitBudget::new(self.max_wait, deadline)))
    }
}

/// A request's team and first-attempt decisions, taken ahead of the team limit (a request
/// extension), with the instant Redis's answer arrived: the waits it names start then.
#[derive(Debug, Clone, Copy)]
pub struct Decided {
    decision: FirstDecision,
    at: Instant,
}

impl Decided {
    /// `decision`, just answered.
    pub fn now(decision: FirstDecision) -> Self {
        Decided {
            decision,
            at: Instant::now(),
        }
    }

    /// Whether the team's quota refused the request (it will be answered 429 by the team limit).
    pub fn team_refused(&self) -> bool {
        matches!(self.decision, FirstDecision::TeamRefused(_))
    }

    /// The decision a request carries, taken out of it (the team limit applies it once).
    pub(super) fn take(extensions: &mut Extensions) -> Option<Self> {
        extensions.remove::<Decided>()
    }

    /// The decision and the instant its waits start from.
    pub(super) fn parts(self) -> (FirstDecision, Instant) {
        (self.decision, self.at)
    }
}
