//! `POST /api/v2/token` and `POST /kyb/tokens/`: iDenfy's field rules (from [`crate::idenfy`]),
//! 409 for a clientId with an active session, and 201 with the token and the request echoed.

use std::time::Duration;

use chrono::SecondsFormat;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::counters::bump;
use super::reply::{self, Reply};
use super::sessions::{
    random_alphanumeric, Outcome, Session, DEFAULT_EXPIRY_TIME, DEFAULT_SESSION_LENGTH,
};
use super::state::Shared;
use crate::idenfy::{self, FieldError, Schema, KYB_TOKEN, KYC_TOKEN};

/// `lifetime` of a KYB token when the request names none (openapi `kyb.yaml`).
pub const DEFAULT_KYB_LIFETIME: u64 = 3600;

/// The 409 body. iDenfy documents the status and the words "Client ID already exists" but no
/// body or identifier (idenfy-api.md §4.3), so this takes the `{"message"}` form of its other
/// account-level errors rather than invent an identifier.
pub const CONFLICT_MESSAGE: &str = "Client ID already exists";

/// `dummyStatus` values that finish the session at once (DEV environments, idenfy-api.md §1).
const DUMMY_STATUSES: [&str; 4] = ["APPROVED", "DENIED", "SUSPECTED", "EXPIRED"];

/// `POST /api/v2/token`.
pub fn kyc(shared: &Shared, parsed: Result<Map<String, Value>, FieldError>) -> Reply {
    let map = match checked(shared, parsed, &KYC_TOKEN) {
        Ok(map) => map,
        Err(e) => return invalid(e),
    };
    let client_id = idenfy::client_id(&map).unwrap_or_default().into_owned();
    let expiry = map
        .get("expiryTime")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EXPIRY_TIME);
    let now = shared.clock.now();
    let mut guard = shared.state();
    let st = &mut *guard;
    if st.settings.conflict_on_active && st.sessions.active_for(&client_id, now).is_some() {
        st.counters.rejections.conflict += 1;
        return reply::message(StatusCode::CONFLICT, CONFLICT_MESSAGE);
    }
    let mut session = Session::new(client_id, map, now, expiry);
    let dummy = dummy_status(&session.request);
    if let Some(status) = dummy {
        session.outcome = Some(Outcome {
            status: status.to_owned(),
            is_final: true,
            at: now,
        });
    }
    let body = kyc_body(&session, expiry, dummy.is_some());
    bump(&mut st.counters.tokens_created, &session.client_id);
    st.sessions.insert(session);
    reply::json(StatusCode::CREATED, &body)
}

fn dummy_status(request: &Map<String, Value>) -> Option<&'static str> {
    let asked = request.get("dummyStatus")?.as_str()?;
    DUMMY_STATUSES.iter().copied().find(|s| *s == asked)
}

/// The request echoed with iDenfy's defaults filled in, plus the token.
fn kyc_body(session: &Session, expiry: u64, dummy: bool) -> Value {
    let mut body = session.request.clone();
    let defaults = [
        ("locale", json!("en")),
        ("showInstructions", json!(true)),
        ("tokenType", json!("IDENTIFICATION")),
        (
            "successUrl",
            json!("https://ui.idenfy.com/result?status=success"),
        ),
        (
            "errorUrl",
            json!("https://ui.idenfy.com/result?status=fail"),
        ),
        (
            "unverifiedUrl",
            json!("https://ui.idenfy.com/result?status=unverified"),
        ),
        ("callbackUrl", Value::Null),
        ("externalRef", Value::Null),
        ("generateDigitString", json!(false)),
        ("sessionLength", json!(DEFAULT_SESSION_LENGTH)),
    ];
    for (key, value) in defaults {
        if body.get(key).is_none_or(Value::is_null) {
            body.insert(key.to_owned(), value);
        }
    }
    for name in ["firstName", "lastName"] {
        if let Some(Value::String(s)) = body.get_mut(name) {
            *s = s.to_uppercase();
        }
    }
    let digits = body["generateDigitString"].as_bool() == Some(true);
    let message = if dummy {
        "Dummy token and verification created successfully"
    } else {
        "Token created successfully"
    };
    let fields = [
        ("message", json!(message)),
        ("authToken", json!(session.auth_token)),
        ("scanRef", json!(session.scan_ref)),
        ("clientId", session.client_id_value()),
        ("redirectUrl", json!(redirect_url(&session.auth_token))),
        ("expiryTime", json!(expiry)),
        (
            "digitString",
            digits.then(digit_string).map_or(Value::Null, Value::from),
        ),
    ];
    for (key, value) in fields {
        body.insert(key.to_owned(), value);
    }
    Value::Object(body)
}

/// The browser redirect into the hosted flow. Tokens are alphanumeric: nothing to escape.
pub fn redirect_url(auth_token: &str) -> String {
    format!("https://ivs.idenfy.com/api/v2/redirect?authToken={auth_token}")
}

fn digit_string() -> String {
    std::iter::repeat_with(|| fastrand::digit(10))
        .take(8)
        .collect()
}

/// `POST /kyb/tokens/`. No 409 here: none is documented for KYB.
pub fn kyb(shared: &Shared, parsed: Result<Map<String, Value>, FieldError>) -> Reply {
    let mut body = match checked(shared, parsed, &KYB_TOKEN) {
        Ok(map) => map,
        Err(e) => return invalid(e),
    };
    let client_id = idenfy::client_id(&body).unwrap_or_default().into_owned();
    let lifetime = body
        .get("lifetime")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_KYB_LIFETIME);
    let expires = shared.clock.now() + Duration::from_secs(lifetime);
    let expiration = shared
        .clock
        .wall(expires)
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    if body.get("tokenType").is_none_or(Value::is_null) {
        body.insert("tokenType".into(), json!("FORM"));
    }
    let fields = [
        ("tokenString", json!(random_alphanumeric(40))),
        ("lifetime", json!(lifetime)),
        ("expiration", json!(expiration)),
        ("isActive", json!(true)),
        ("isValid", json!(true)),
        ("companyId", Value::Null),
    ];
    for (key, value) in fields {
        body.insert(key.to_owned(), value);
    }
    bump(&mut shared.state().counters.kyb_tokens_created, &client_id);
    reply::json(StatusCode::CREATED, &Value::Object(body))
}

/// The body, or the first rule it breaks (counted as a rejection).
fn checked(
    shared: &Shared,
    parsed: Result<Map<String, Value>, FieldError>,
    schema: &Schema,
) -> Result<Map<String, Value>, FieldError> {
    let checked = parsed.and_then(|map| schema.check(&map).map(|()| map));
    if checked.is_err() {
        shared.state().counters.rejections.invalid += 1;
    }
    checked
}

/// iDenfy's 400 `{"identifier","message"}`.
pub fn invalid(e: FieldError) -> Reply {
    reply::error(StatusCode::BAD_REQUEST, e.identifier, &e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(request: Value) -> Session {
        let map = request.as_object().cloned().unwrap();
        Session::new("c".into(), map, Duration::ZERO, 60)
    }

    #[test]
    fn kyc_body_echoes_the_request_with_defaults() {
        let s = session(
            json!({"clientId": 100000, "firstName": "Ona", "locale": "lt", "checkAml": true}),
        );
        let body = kyc_body(&s, 60, false);
        assert_eq!(body["clientId"], json!(100000));
        assert_eq!(body["firstName"], "ONA");
        assert_eq!(body["locale"], "lt");
        assert_eq!(body["checkAml"], true);
        assert_eq!(body["sessionLength"], DEFAULT_SESSION_LENGTH);
        assert_eq!(body["expiryTime"], 60);
        assert_eq!(body["digitString"], Value::Null);
        assert_eq!(body["tokenType"], "IDENTIFICATION");
        assert_eq!(body["message"], "Token created successfully");
        let token = body["authToken"].as_str().unwrap();
        assert_eq!(body["redirectUrl"], redirect_url(token));
    }

    #[test]
    fn digit_string_is_eight_digits_when_asked() {
        let body = kyc_body(
            &session(json!({"clientId": "c", "generateDigitString": true})),
            60,
            false,
        );
        let digits = body["digitString"].as_str().unwrap();
        assert_eq!(digits.len(), 8);
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn dummy_status_is_read_only_for_known_values() {
        let req = |v: Value| json!({"dummyStatus": v}).as_object().cloned().unwrap();
        assert_eq!(dummy_status(&req(json!("APPROVED"))), Some("APPROVED"));
        assert_eq!(dummy_status(&req(json!("ACTIVE"))), None);
        assert_eq!(dummy_status(&req(json!(1))), None);
    }
}
