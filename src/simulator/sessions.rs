//! The KYC sessions the simulator created: by scanRef, which clientId holds an active one, and the
//! life of a session (active → finished or expired → deleted).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Map, Value};

/// `expiryTime` when the request names none: 3600 s, the GitHub docs' default and their example
/// response (idenfy-api.md §3.1; other sources say 86400 or a dashboard setting).
pub const DEFAULT_EXPIRY_TIME: u64 = 3600;
/// `sessionLength` when the request names none: 600 s, the GitHub docs' default.
pub const DEFAULT_SESSION_LENGTH: u64 = 600;

/// How a session ended (set through `/__sim/sessions/{scanRef}/finish`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `APPROVED`, `DENIED`, `SUSPECTED`, `REVIEWING` or `EXPIRED`.
    pub status: String,
    /// Whether the result is final (a manual review happened or none will).
    pub is_final: bool,
    /// When it ended, in simulated time.
    pub at: Duration,
}

/// One KYC session, made by `POST /api/v2/token`.
#[derive(Debug, Clone)]
pub struct Session {
    pub scan_ref: String,
    pub auth_token: String,
    /// The clientId as a string: the key of "active session" and of the counters.
    pub client_id: String,
    /// The token request as the client sent it: echoed in answers and webhooks.
    pub request: Map<String, Value>,
    pub created: Duration,
    pub expires: Duration,
    pub outcome: Option<Outcome>,
    pub deleted: bool,
}

impl Session {
    /// A new session for a request, expiring `expiry` after `now`.
    pub fn new(client_id: String, request: Map<String, Value>, now: Duration, expiry: u64) -> Self {
        Session {
            scan_ref: uuid::Uuid::new_v4().to_string(),
            auth_token: random_alphanumeric(40),
            client_id,
            request,
            created: now,
            expires: now + Duration::from_secs(expiry),
            outcome: None,
            deleted: false,
        }
    }

    /// Active: the token can still start a verification (not finished, expired or deleted).
    pub fn is_active(&self, now: Duration) -> bool {
        self.outcome.is_none() && !self.deleted && now < self.expires
    }

    /// Whether the token's `expiryTime` has passed (the condition for `/api/v2/delete`).
    pub fn token_expired(&self, now: Duration) -> bool {
        now >= self.expires
    }

    /// iDenfy's status word for the session.
    pub fn status(&self, now: Duration) -> &str {
        match &self.outcome {
            _ if self.deleted => "DELETED",
            Some(outcome) => &outcome.status,
            None if now < self.expires => "ACTIVE",
            None => "EXPIRED",
        }
    }

    /// The clientId as the client sent it (string or number).
    pub fn client_id_value(&self) -> Value {
        ["clientId", "personScanRef"]
            .iter()
            .find_map(|f| self.request.get(*f).filter(|v| !v.is_null()).cloned())
            .unwrap_or_else(|| Value::String(self.client_id.clone()))
    }
}

/// `n` random ASCII letters and digits.
pub fn random_alphanumeric(n: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(n)
        .collect()
}

/// Every session, bounded: past `cap` the oldest are forgotten, so a long benchmark cannot grow the
/// simulator without limit.
#[derive(Debug)]
pub struct Sessions {
    by_scan_ref: HashMap<String, Session>,
    /// The newest session of each clientId.
    latest: HashMap<String, String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Sessions {
    pub fn new(cap: usize) -> Self {
        Sessions {
            by_scan_ref: HashMap::new(),
            latest: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// The clientId's active session, if it has one.
    pub fn active_for(&self, client_id: &str, now: Duration) -> Option<&Session> {
        let scan_ref = self.latest.get(client_id)?;
        self.by_scan_ref.get(scan_ref).filter(|s| s.is_active(now))
    }

    pub fn insert(&mut self, session: Session) {
        let scan_ref = session.scan_ref.clone();
        self.latest
            .insert(session.client_id.clone(), scan_ref.clone());
        self.by_scan_ref.insert(scan_ref.clone(), session);
        self.order.push_back(scan_ref);
        while self.order.len() > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(s) = self.by_scan_ref.remove(&old) {
                if self.latest.get(&s.client_id) == Some(&old) {
                    self.latest.remove(&s.client_id);
                }
            }
        }
    }

    pub fn get(&self, scan_ref: &str) -> Option<&Session> {
        self.by_scan_ref.get(scan_ref)
    }

    pub fn get_mut(&mut self, scan_ref: &str) -> Option<&mut Session> {
        self.by_scan_ref.get_mut(scan_ref)
    }

    /// The clientId's sessions, oldest first.
    pub fn for_client<'a>(&'a self, client_id: &'a str) -> impl Iterator<Item = &'a Session> {
        self.order
            .iter()
            .filter_map(|r| self.by_scan_ref.get(r))
            .filter(move |s| s.client_id == client_id)
    }

    pub fn len(&self) -> usize {
        self.by_scan_ref.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn session(client: &str, now: Duration, expiry: u64) -> Session {
        Session::new(client.to_owned(), Map::new(), now, expiry)
    }

    #[test]
    fn active_until_expiry_or_outcome() {
        let mut sessions = Sessions::new(10);
        let s = session("c", Duration::ZERO, 60);
        let scan_ref = s.scan_ref.clone();
        sessions.insert(s);
        assert!(sessions
            .active_for("c", MIN - Duration::from_millis(1))
            .is_some());
        assert!(sessions.active_for("c", MIN).is_none());
        assert_eq!(sessions.get(&scan_ref).unwrap().status(MIN), "EXPIRED");
        sessions.get_mut(&scan_ref).unwrap().outcome = Some(Outcome {
            status: "APPROVED".into(),
            is_final: true,
            at: Duration::ZERO,
        });
        assert!(sessions.active_for("c", Duration::ZERO).is_none());
        assert_eq!(
            sessions.get(&scan_ref).unwrap().status(Duration::ZERO),
            "APPROVED"
        );
    }

    #[test]
    fn new_sessions_have_idenfy_shaped_references() {
        let s = session("c", Duration::ZERO, 0);
        assert_eq!(s.auth_token.len(), 40);
        assert_eq!(s.scan_ref.len(), 36);
        assert!(!s.is_active(Duration::ZERO), "expiryTime 0 is never active");
    }

    #[test]
    fn forgets_the_oldest_past_the_cap() {
        let mut sessions = Sessions::new(2);
        let first = session("a", Duration::ZERO, 3600);
        let first_ref = first.scan_ref.clone();
        sessions.insert(first);
        sessions.insert(session("b", Duration::ZERO, 3600));
        sessions.insert(session("c", Duration::ZERO, 3600));
        assert_eq!(sessions.len(), 2);
        assert!(sessions.get(&first_ref).is_none());
        assert!(sessions.active_for("a", Duration::ZERO).is_none());
        assert!(sessions.active_for("c", Duration::ZERO).is_some());
    }

    #[test]
    fn client_id_is_echoed_as_sent() {
        let mut request = Map::new();
        request.insert("clientId".into(), Value::from(100000));
        let s = Session::new("100000".into(), request, Duration::ZERO, 1);
        assert_eq!(s.client_id_value(), Value::from(100000));
        assert_eq!(s.status(Duration::ZERO), "ACTIVE");
    }
}
