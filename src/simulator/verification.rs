//! `POST /api/v2/status`, `/api/v2/data` and `/api/v2/delete`, all `{"scanRef"}`; and the check
//! results and document data that these and the webhooks report for a session.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::reply::{self, Reply};
use super::sessions::Session;
use super::state::Shared;
use super::token::invalid;
use crate::idenfy::{self, FieldError, BAD_VALUE, MISSING_VALUE};

/// The answer to an unknown scanRef. iDenfy documents 404 for "missing resource" but no body;
/// this uses its standard `{"identifier","message"}` shape.
fn not_found(shared: &Shared) -> Reply {
    shared.state().counters.rejections.not_found += 1;
    reply::error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "Verification with this scanRef was not found.",
    )
}

/// `POST /api/v2/status`.
pub fn status(shared: &Shared, body: &Bytes) -> Reply {
    with_session(shared, body, |s, now| {
        let mut body = check_results(s, now);
        body.insert("status".into(), json!(s.status(now)));
        body.insert("fraudTags".into(), json!([]));
        body.insert("mismatchTags".into(), json!([]));
        body.insert("scanRef".into(), json!(s.scan_ref));
        body.insert("clientId".into(), s.client_id_value());
        reply::json(StatusCode::OK, &Value::Object(body))
    })
}

/// `POST /api/v2/data`.
pub fn data(shared: &Shared, body: &Bytes) -> Reply {
    with_session(shared, body, |s, now| {
        let mut body = document_data(s, now);
        body.insert("scanRef".into(), json!(s.scan_ref));
        body.insert("clientId".into(), s.client_id_value());
        reply::json(StatusCode::OK, &Value::Object(body))
    })
}

/// `POST /api/v2/delete`: only once the token has expired (idenfy-api.md §3.3).
pub fn delete(shared: &Shared, body: &Bytes) -> Reply {
    let scan_ref = match scan_ref(shared, body) {
        Ok(r) => r,
        Err(e) => return invalid(e),
    };
    let now = shared.clock.now();
    let mut st = shared.state();
    let Some(session) = st.sessions.get_mut(&scan_ref) else {
        drop(st);
        return not_found(shared);
    };
    if !session.token_expired(now) {
        let body = json!({
            "message": "Token has not expired yet.",
            "identifier": "PARTNER_ERROR",
            "documentation": "",
            "severity": "NOT_SEVERE",
        });
        return reply::json(StatusCode::BAD_REQUEST, &body);
    }
    session.deleted = true;
    reply::empty(StatusCode::OK)
}

/// Runs `f` on the session named by the body's `scanRef`.
fn with_session(
    shared: &Shared,
    body: &Bytes,
    f: impl FnOnce(&Session, Duration) -> Reply,
) -> Reply {
    let scan_ref = match scan_ref(shared, body) {
        Ok(r) => r,
        Err(e) => return invalid(e),
    };
    let now = shared.clock.now();
    let st = shared.state();
    match st.sessions.get(&scan_ref) {
        Some(session) => f(session, now),
        None => {
            drop(st);
            not_found(shared)
        }
    }
}

/// The `scanRef` of a `{"scanRef": "..."}` body, or why not (counted as a rejection).
fn scan_ref(shared: &Shared, body: &Bytes) -> Result<String, FieldError> {
    let found = idenfy::parse_body(body).and_then(|map| match map.get("scanRef") {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(FieldError {
            identifier: MISSING_VALUE,
            field: "scanRef",
            message: "scanRef is required".to_owned(),
        }),
        Some(_) => Err(FieldError {
            identifier: BAD_VALUE,
            field: "scanRef",
            message: "scanRef must be a string".to_owned(),
        }),
    });
    if found.is_err() {
        shared.state().counters.rejections.invalid += 1;
    }
    found
}

/// `autoDocument`, `autoFace`, `manualDocument`, `manualFace` for the session's outcome: null
/// while nothing was checked, manual ones null until the result is final.
pub fn check_results(session: &Session, now: Duration) -> Map<String, Value> {
    let (document, face) = match session.status(now) {
        "APPROVED" | "SUSPECTED" => ("DOC_VALIDATED", "FACE_MATCH"),
        "DENIED" => ("DOC_VALIDATED", "FACE_MISMATCH"),
        "REVIEWING" => ("DOC_VALIDATED", "FACE_MATCH"),
        _ => return null_fields(&["autoDocument", "autoFace", "manualDocument", "manualFace"]),
    };
    let is_final = session.outcome.as_ref().is_some_and(|o| o.is_final);
    let manual = |v: &str| if is_final { json!(v) } else { Value::Null };
    let mut map = Map::new();
    map.insert("autoDocument".into(), json!(document));
    map.insert("autoFace".into(), json!(face));
    map.insert("manualDocument".into(), manual(document));
    map.insert("manualFace".into(), manual(face));
    map
}

/// The document data read from the session: what the request declared, as if the document
/// matched it; all null until a verification finished.
pub fn document_data(session: &Session, now: Duration) -> Map<String, Value> {
    const FROM_REQUEST: [(&str, &str); 7] = [
        ("docFirstName", "firstName"),
        ("docLastName", "lastName"),
        ("docDob", "dateOfBirth"),
        ("docExpiry", "dateOfExpiry"),
        ("docSex", "sex"),
        ("docNationality", "nationality"),
        ("docPersonalCode", "personalNumber"),
    ];
    let mut map = null_fields(&[
        "docNumber",
        "docType",
        "docIssuingCountry",
        "selectedCountry",
    ]);
    map.insert("manuallyDataChanged".into(), json!(false));
    let checked = matches!(
        session.status(now),
        "APPROVED" | "DENIED" | "SUSPECTED" | "REVIEWING"
    );
    for (doc, field) in FROM_REQUEST {
        let value = session.request.get(field).filter(|_| checked).cloned();
        let value = match value {
            Some(Value::String(s)) if doc.ends_with("Name") => json!(s.to_uppercase()),
            Some(v) => v,
            None => Value::Null,
        };
        map.insert(doc.into(), value);
    }
    if checked {
        let country = match session.request.get("country") {
            Some(Value::Array(codes)) => codes.first().cloned(),
            other => other.cloned(),
        };
        let country = country.unwrap_or_else(|| json!("LT"));
        map.insert("docType".into(), json!("ID_CARD"));
        map.insert("docIssuingCountry".into(), country.clone());
        map.insert("selectedCountry".into(), country);
        let number = session.request.get("documentNumber").cloned();
        map.insert("docNumber".into(), number.unwrap_or(Value::Null));
    }
    map
}

fn null_fields(names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), Value::Null))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::sessions::Outcome;

    fn finished(status: &str, is_final: bool) -> Session {
        let request = json!({"clientId": "c", "firstName": "Ona", "country": ["lt", "de"]});
        let mut s = Session::new(
            "c".into(),
            request.as_object().cloned().unwrap(),
            Duration::ZERO,
            60,
        );
        s.outcome = Some(Outcome {
            status: status.into(),
            is_final,
            at: Duration::ZERO,
        });
        s
    }

    #[test]
    fn manual_results_wait_for_a_final_outcome() {
        let auto = check_results(&finished("APPROVED", false), Duration::ZERO);
        assert_eq!(auto["autoFace"], "FACE_MATCH");
        assert_eq!(auto["manualFace"], Value::Null);
        let manual = check_results(&finished("DENIED", true), Duration::ZERO);
        assert_eq!(manual["manualFace"], "FACE_MISMATCH");
    }

    #[test]
    fn active_sessions_have_no_results_or_data() {
        let mut s = finished("APPROVED", true);
        s.outcome = None;
        assert!(check_results(&s, Duration::ZERO)
            .values()
            .all(Value::is_null));
        assert_eq!(
            document_data(&s, Duration::ZERO)["docFirstName"],
            Value::Null
        );
    }

    #[test]
    fn data_reflects_the_declared_person() {
        let data = document_data(&finished("APPROVED", true), Duration::ZERO);
        assert_eq!(data["docFirstName"], "ONA");
        assert_eq!(data["docIssuingCountry"], "lt");
        assert_eq!(data["docLastName"], Value::Null);
    }
}
