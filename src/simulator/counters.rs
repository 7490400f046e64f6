//! What the simulator saw, so tests can assert on what "iDenfy" received: requests per route, token
//! requests and tokens per clientId, rejections by kind, and the `Authorization` values it was sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Distinct `Authorization` values are remembered up to this many (the rest are only counted).
const MAX_AUTHORIZATIONS: usize = 64;
/// Distinct clientIds tracked per map: a benchmark with unique clientIds cannot grow the
/// simulator without limit. Past it, new clientIds are not counted (known ones still are).
pub const MAX_CLIENT_IDS: usize = 100_000;

/// A snapshot of the counters (`GET /__sim/counters`, [`crate::simulator::Simulator::counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// API requests by route (`/api/v2/token`, …; `other` for unknown paths), faulted ones included.
    pub requests: BTreeMap<String, u64>,
    /// `POST /api/v2/token` requests by clientId (as a string), counted on arrival: faulted, refused
    /// and dropped ones included, since iDenfy received them.
    pub token_requests: BTreeMap<String, u64>,
    /// KYC tokens created (201) by clientId.
    pub tokens_created: BTreeMap<String, u64>,
    /// `POST /kyb/tokens/` requests by clientId, counted on arrival.
    pub kyb_token_requests: BTreeMap<String, u64>,
    /// KYB tokens created (201) by clientId.
    pub kyb_tokens_created: BTreeMap<String, u64>,
    pub rejections: Rejections,
    /// Distinct `Authorization` header values of API requests, in the order first seen.
    pub authorizations: Vec<AuthorizationSeen>,
    /// The `Authorization` value of the latest API request (`None` if it had none).
    pub last_authorization: Option<String>,
    /// Webhook deliveries by outcome.
    pub webhooks: Webhooks,
}

/// API requests answered with something other than success, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rejections {
    /// 401: missing or wrong credentials.
    pub unauthorized: u64,
    /// 400: a field rule or malformed JSON.
    pub invalid: u64,
    /// 409: a clientId with an active session.
    pub conflict: u64,
    /// 429 (or 400 `TOO_MANY_REQUESTS`): the hourly limit.
    pub rate_limited: u64,
    /// 404: unknown path or scanRef.
    pub not_found: u64,
    /// Injected error answers.
    pub faults: u64,
    /// Of `faults`, those given after the endpoint ran (see [`super::Faults::after_effect`]).
    pub faults_after_effect: u64,
    /// Injected dropped connections.
    pub dropped: u64,
}

/// One distinct `Authorization` value and how many API requests carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationSeen {
    pub value: String,
    pub count: u64,
}

/// Webhook deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Webhooks {
    /// Deliveries answered 2xx.
    pub delivered: u64,
    /// Deliveries that failed after the retry.
    pub failed: u64,
}

impl Counters {
    /// Requests to one route.
    pub fn requests_to(&self, route: &str) -> u64 {
        self.requests.get(route).copied().unwrap_or(0)
    }

    /// API requests to every route.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// `POST /api/v2/token` requests that carried this clientId.
    pub fn token_requests_for(&self, client_id: &str) -> u64 {
        self.token_requests.get(client_id).copied().unwrap_or(0)
    }

    /// KYC tokens created for this clientId.
    pub fn tokens_created_for(&self, client_id: &str) -> u64 {
        self.tokens_created.get(client_id).copied().unwrap_or(0)
    }

    /// KYC sessions created (billable), every clientId together.
    pub fn sessions_created(&self) -> u64 {
        self.tokens_created.values().sum()
    }

    /// KYC sessions created beyond the first of each clientId: the ones billed twice.
    pub fn duplicate_sessions(&self) -> u64 {
        self.tokens_created
            .values()
            .map(|n| n.saturating_sub(1))
            .sum()
    }

    /// Whether any API request carried exactly this `Authorization` value.
    pub fn saw_authorization(&self, value: &str) -> bool {
        self.authorizations.iter().any(|a| a.value == value)
    }

    pub(crate) fn request(&mut self, route: &str, authorization: Option<&str>) {
        *self.requests.entry(route.to_owned()).or_default() += 1;
        self.last_authorization = authorization.map(str::to_owned);
        let Some(value) = authorization else { return };
        if let Some(seen) = self.authorizations.iter_mut().find(|a| a.value == value) {
            seen.count += 1;
        } else if self.authorizations.len() < MAX_AUTHORIZATIONS {
            self.authorizations.push(AuthorizationSeen {
                value: value.to_owned(),
                count: 1,
            });
        }
    }
}

/// Adds one to a per-clientId count (see [`MAX_CLIENT_IDS`]).
pub(crate) fn bump(map: &mut BTreeMap<String, u64>, client_id: &str) {
    let room = map.len() < MAX_CLIENT_IDS;
    match map.get_mut(client_id) {
        Some(n) => *n += 1,
        None if room => {
            map.insert(client_id.to_owned(), 1);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_distinct_authorizations_in_order() {
        let mut c = Counters::default();
        c.request("/api/v2/token", Some("Basic a"));
        c.request("/api/v2/token", Some("Basic b"));
        c.request("/api/v2/status", Some("Basic a"));
        c.request("/api/v2/status", None);
        assert_eq!(c.requests_to("/api/v2/token"), 2);
        assert_eq!(c.total_requests(), 4);
        let seen: Vec<_> = c
            .authorizations
            .iter()
            .map(|a| (a.value.as_str(), a.count))
            .collect();
        assert_eq!(seen, [("Basic a", 2), ("Basic b", 1)]);
        assert_eq!(c.last_authorization, None);
        assert!(c.saw_authorization("Basic b"));
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let mut c = Counters::default();
        bump(&mut c.token_requests, "client-1");
        bump(&mut c.token_requests, "client-1");
        c.rejections.conflict = 1;
        let json = serde_json::to_string(&c).unwrap();
        let back: Counters = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.token_requests_for("client-1"), 2);
        assert_eq!(back.tokens_created_for("client-1"), 0);
    }

    #[test]
    fn duplicates_are_the_sessions_past_each_clients_first() {
        let mut c = Counters::default();
        assert_eq!((c.sessions_created(), c.duplicate_sessions()), (0, 0));
        for id in ["a", "b", "b", "c", "c", "c"] {
            bump(&mut c.tokens_created, id);
        }
        assert_eq!(c.sessions_created(), 6);
        assert_eq!(c.duplicate_sessions(), 3);
    }
}
