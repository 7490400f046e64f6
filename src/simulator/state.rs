//! The simulator's shared state: settings that may change at run time, sessions, counters, faults
//! and the hourly window, behind one lock that is never held across an await.

use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::clock::SimClock;
use super::counters::Counters;
use super::faults::Faults;
use super::limit::HourlyLimit;
use super::sessions::Sessions;
use super::webhook::WebhookClient;

/// One API key pair the simulator accepts (iDenfy allows two live keys at a time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub api_key: String,
    pub api_secret: String,
}

/// Behaviour that tests switch at run time (`PATCH /__sim/settings`, [`super::Simulator::update_settings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The key pairs accepted by Basic auth; any of them will do.
    pub credentials: Vec<Credentials>,
    /// Answer 409 to a token request for a clientId whose session is still active.
    pub conflict_on_active: bool,
    /// API requests allowed per hour of simulated time (0: no limit).
    pub hourly_limit: u32,
    /// Answer the hourly limit with the older 400 instead of 429 (same identifier).
    pub legacy_rate_limit: bool,
    /// Where webhooks go when the session has no `callbackUrl`.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of `Idenfy-Signature`; no header when `None`.
    pub webhook_key: Option<String>,
    /// Wait before the one retry of a failed webhook (iDenfy's old FAQ: 0.5 s).
    pub webhook_retry_delay_ms: u64,
}

impl Settings {
    /// Whether an `Authorization` value is Basic auth with one of the accepted pairs.
    pub fn authorizes(&self, authorization: Option<&[u8]>) -> bool {
        let Some(pair) = authorization.and_then(basic_pair) else {
            return false;
        };
        self.credentials.iter().any(|c| {
            pair.len() == c.api_key.len() + 1 + c.api_secret.len()
                && pair.starts_with(c.api_key.as_bytes())
                && pair[c.api_key.len()] == b':'
                && pair.ends_with(c.api_secret.as_bytes())
        })
    }

    /// The settings as JSON for `GET /__sim/settings`: secrets left out.
    pub fn public_view(&self) -> serde_json::Value {
        let mut view = serde_json::to_value(self).unwrap_or_default();
        if let Some(creds) = view["credentials"].as_array_mut() {
            for c in creds {
                c.as_object_mut().map(|c| c.remove("api_secret"));
            }
        }
        if view["webhook_key"].is_string() {
            view["webhook_key"] = serde_json::Value::from("<set>");
        }
        view
    }

    /// Applies a JSON merge patch (RFC 7386 at the top level): present keys replace, `null`
    /// clears an optional one.
    pub fn patched(
        &self,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Settings, String> {
        let mut value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        for (key, v) in patch {
            value[key] = v.clone();
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// The decoded `key:secret` of a Basic `Authorization` value.
fn basic_pair(value: &[u8]) -> Option<Vec<u8>> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
}

/// Everything a request may change.
#[derive(Debug)]
pub struct State {
    pub settings: Settings,
    pub sessions: Sessions,
    pub counters: Counters,
    pub faults: Faults,
    pub limit: HourlyLimit,
}

/// What every connection of one simulator shares.
#[derive(Debug)]
pub struct Shared {
    pub clock: SimClock,
    pub state: Mutex<State>,
    pub webhooks: WebhookClient,
    pub max_sessions: usize,
}

impl Shared {
    /// The state, even if a panicking request poisoned the lock (the simulator keeps serving).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            credentials: vec![Credentials {
                api_key: "key".into(),
                api_secret: "sec:ret".into(),
            }],
            conflict_on_active: true,
            hourly_limit: 10,
            legacy_rate_limit: false,
            webhook_url: None,
            webhook_key: Some("hook-secret".into()),
            webhook_retry_delay_ms: 500,
        }
    }

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn authorizes_only_the_configured_pairs() {
        let s = settings();
        assert!(s.authorizes(Some(basic("key:sec:ret").as_bytes())));
        assert!(s.authorizes(Some(
            basic("key:sec:ret").replace("Basic", "basic").as_bytes()
        )));
        assert!(!s.authorizes(Some(basic("key:wrong").as_bytes())));
        assert!(!s.authorizes(Some(basic("key:sec:retx").as_bytes())));
        assert!(!s.authorizes(Some(b"Bearer abc")));
        assert!(!s.authorizes(Some(b"Basic !!!")));
        assert!(!s.authorizes(None));
    }

    #[test]
    fn public_view_hides_secrets() {
        let view = settings().public_view().to_string();
        assert!(!view.contains("sec:ret") && !view.contains("hook-secret"));
        assert!(view.contains("\"api_key\":\"key\""));
    }

    #[test]
    fn patch_replaces_present_keys_and_clears_nulls() {
        let patch = serde_json::json!({"hourly_limit": 3, "webhook_key": null});
        let patched = settings().patched(patch.as_object().unwrap()).unwrap();
        assert_eq!(patched.hourly_limit, 3);
        assert_eq!(patched.webhook_key, None);
        assert!(patched.conflict_on_active);
        let bad = serde_json::json!({"hourly_limt": 3});
        assert!(settings().patched(bad.as_object().unwrap()).is_err());
    }
}
