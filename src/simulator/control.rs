//! The control API under `/__sim/`: no authentication (the simulator is a test tool on loopback),
//! never counted, never faulted, never rate limited. Endpoints:
//!
//! | method | path | body | does |
//! |---|---|---|---|
//! | GET | `/__sim/counters` | | [`Counters`] as JSON |
//! | POST | `/__sim/reset` | | clears counters, sessions, faults and the hourly window |
//! | GET, PUT, DELETE | `/__sim/faults` | [`Faults`] | read, replace, clear the faults (`after_effect`: the share of error answers given after the endpoint ran) |
//! | POST | `/__sim/down` | `{"status"?: 503}` | every API request answered with that status |
//! | POST | `/__sim/up` | | clears the faults |
//! | POST | `/__sim/clock/advance` | `{"seconds": n}` | moves simulated time forward |
//! | GET, PATCH | `/__sim/settings` | [`Settings`](super::Settings) fields | read (secrets hidden), merge-patch |
//! | POST | `/__sim/sessions/{scanRef}/finish` | [`Finish`] | ends the session, sends its webhook |

use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::counters::Counters;
use super::faults::Faults;
use super::limit::HourlyLimit;
use super::reply::{self, Reply};
use super::sessions::Sessions;
use super::state::Shared;
use super::webhook::{self, Finish, FinishError};

/// Serves one `/__sim/` request.
pub async fn handle(shared: &Shared, parts: &Parts, body: &Bytes) -> Reply {
    let path = parts.uri.path().trim_start_matches("/__sim");
    let method = &parts.method;
    if let Some(scan_ref) = path
        .strip_prefix("/sessions/")
        .and_then(|p| p.strip_suffix("/finish"))
    {
        return match *method == Method::POST {
            true => finish(shared, scan_ref, body).await,
            false => method_not_allowed(),
        };
    }
    match (method.clone(), path) {
        (Method::GET, "/counters") => ok(&shared.state().counters),
        (Method::POST, "/reset") => {
            reset(shared);
            reply::empty(StatusCode::NO_CONTENT)
        }
        (Method::GET, "/faults") => ok(&shared.state().faults),
        (Method::PUT, "/faults") => set_faults(shared, parse::<Faults>(body)),
        (Method::DELETE, "/faults") | (Method::POST, "/up") => {
            set_faults(shared, Ok(Faults::default()))
        }
        (Method::POST, "/down") => {
            set_faults(shared, parse::<Down>(body).map(|d| Faults::down(d.status)))
        }
        (Method::POST, "/clock/advance") => advance(shared, body),
        (Method::GET, "/settings") => {
            reply::json(StatusCode::OK, &shared.state().settings.public_view())
        }
        (Method::PATCH, "/settings") => patch_settings(shared, body),
        _ => reply::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "No such simulator control endpoint.",
        ),
    }
}

/// Forgets what happened: counters, sessions, faults and the hourly window. Settings and the
/// clock stay.
pub fn reset(shared: &Shared) {
    let mut st = shared.state();
    st.counters = Counters::default();
    st.sessions = Sessions::new(shared.max_sessions);
    st.faults = Faults::default();
    st.limit = HourlyLimit::default();
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Down {
    #[serde(default = "service_unavailable")]
    status: u16,
}

fn service_unavailable() -> u16 {
    503
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: f64,
}

fn set_faults(shared: &Shared, faults: Result<Faults, Box<Reply>>) -> Reply {
    let faults = match faults {
        Ok(f) => f,
        Err(reply) => return *reply,
    };
    if let Err(message) = faults.validate() {
        return bad_request(&message);
    }
    shared.state().faults = faults.clone();
    ok(&faults)
}

fn advance(shared: &Shared, body: &Bytes) -> Reply {
    let by = match parse::<Advance>(body) {
        Ok(a) if a.seconds.is_finite() && a.seconds >= 0.0 => Duration::from_secs_f64(a.seconds),
        Ok(_) => return bad_request("seconds must be a non-negative number"),
        Err(reply) => return *reply,
    };
    shared.clock.advance(by);
    ok(&json!({"now": shared.clock.now().as_secs_f64()}))
}

fn patch_settings(shared: &Shared, body: &Bytes) -> Reply {
    let patch = match parse::<Map<String, Value>>(body) {
        Ok(p) => p,
        Err(reply) => return *reply,
    };
    let mut st = shared.state();
    match st.settings.patched(&patch) {
        Ok(settings) => {
            st.settings = settings;
            reply::json(StatusCode::OK, &st.settings.public_view())
        }
        Err(message) => bad_request(&message),
    }
}

async fn finish(shared: &Shared, scan_ref: &str, body: &Bytes) -> Reply {
    let finish = match parse::<Finish>(body) {
        Ok(f) => f,
        Err(reply) => return *reply,
    };
    match webhook::finish(shared, scan_ref, finish).await {
        Ok(report) => ok(&report),
        Err(e @ FinishError::UnknownScanRef) => {
            reply::error(StatusCode::NOT_FOUND, "NOT_FOUND", &e.to_string())
        }
        Err(e @ FinishError::BadStatus) => bad_request(&e.to_string()),
    }
}

/// A control body (empty means `{}`), or a 400.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Reply>> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| Box::new(bad_request(&e.to_string())))
}

fn ok(value: &impl serde::Serialize) -> Reply {
    reply::json(
        StatusCode::OK,
        &serde_json::to_value(value).unwrap_or_default(),
    )
}

fn bad_request(message: &str) -> Reply {
    reply::error(StatusCode::BAD_REQUEST, "BAD_VALUE", message)
}

fn method_not_allowed() -> Reply {
    reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "Method not allowed.",
    )
}
