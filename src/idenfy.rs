//! iDenfy's facts in code: the field rules of the token-creating endpoints and the `clientId` key.
//!
//! One place knows iDenfy's rules: the `validate` layer applies them on the request path so that a
//! request iDenfy would refuse is answered locally, and the simulator applies the same ones when it
//! plays iDenfy. Sources are in `idenfy-api.md` §3.1 (`POST /api/v2/token`) and §3.4 (`POST /kyb/tokens/`).
//!
//! Where the documentation is uncertain the rules take the more lenient reading, because the two
//! mistakes cost differently: a request we pass that iDenfy then refuses costs one upstream call and
//! the caller still gets iDenfy's 400; a request we refuse that iDenfy would accept is an outage.
//! So: unknown fields pass (iDenfy has many feature flags); `null` in an optional field counts as
//! absent; country codes are accepted in either case; `country` may be one code or an array of codes;
//! `tokenType` of `/kyb/tokens/` is optional (openapi marks it required, but clients and the older
//! docs omit it); names are refused only for ASCII digits; `locale` and `externalRef` may be empty.
//! Not enforced, because the sources disagree or say too little: the `generateDigitString` cap on
//! `expiryTime`, the values of the KYC `tokenType`, `documents`, and anything about `personalNumber`
//! or `documentNumber`.
//!
//! Messages name the field and the rule, never the value: values are personal data.

mod rule;
mod schema;

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::error::GatewayError;

pub use schema::{Schema, KYB_TOKEN, KYC_TOKEN};

/// iDenfy's identifier for a required value that is absent.
pub const MISSING_VALUE: &str = "MISSING_VALUE";
/// iDenfy's identifier for a value of the wrong type, length, format or range.
pub const BAD_VALUE: &str = "BAD_VALUE";
/// iDenfy's identifier for a body that is not JSON (or, here, not a JSON object).
pub const JSON_ERROR: &str = "JSON_ERROR";

/// The fields that carry the client id, in order of precedence: `personScanRef` is the legacy name.
const CLIENT_ID_FIELDS: [&str; 2] = ["clientId", "personScanRef"];

/// Why iDenfy would refuse a request body. `Display` is the message, which names the field and the
/// rule but never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// [`MISSING_VALUE`], [`BAD_VALUE`] or [`JSON_ERROR`].
    pub identifier: &'static str,
    /// The offending field, from the fixed schema (`body` for a [`JSON_ERROR`]): a bounded label.
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub(crate) fn missing(field: &'static str) -> Self {
        FieldError {
            identifier: MISSING_VALUE,
            field,
            message: format!("{field} is required"),
        }
    }

    pub(crate) fn bad(field: &'static str, rule: &str) -> Self {
        FieldError {
            identifier: BAD_VALUE,
            field,
            message: format!("{field} must be {rule}"),
        }
    }

    fn json(message: String) -> Self {
        FieldError {
            identifier: JSON_ERROR,
            field: "body",
            message,
        }
    }
}

impl From<FieldError> for GatewayError {
    fn from(err: FieldError) -> Self {
        GatewayError::Invalid {
            identifier: err.identifier,
            field: err.field,
            message: err.message,
        }
    }
}

/// Parses a request body as a JSON object, the only shape iDenfy's token endpoints take.
pub fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, FieldError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FieldError::json(
            "the request body must be a JSON object".to_owned(),
        )),
        // Line and column only: serde's own message may quote the body.
        Err(e) => Err(FieldError::json(format!(
            "the request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// The `clientId`, or the legacy `personScanRef`, as a string: a JSON number becomes its decimal
/// string, so `100000` and `"100000"` are the same key. The first of the two fields that is present
/// and not `null` decides; `None` when it is neither a string nor a number.
pub fn client_id(body: &Map<String, Value>) -> Option<Cow<'_, str>> {
    let value = CLIENT_ID_FIELDS
        .iter()
        .find_map(|field| body.get(*field).filter(|v| !v.is_null()))?;
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn client_id_reads_strings_and_numbers_alike() {
        let s = object(json!({"clientId": "100000"}));
        let n = object(json!({"clientId": 100000}));
        assert_eq!(client_id(&s).as_deref(), Some("100000"));
        assert_eq!(client_id(&n).as_deref(), Some("100000"));
    }

    #[test]
    fn client_id_falls_back_to_person_scan_ref() {
        let legacy = object(json!({"personScanRef": "abc"}));
        assert_eq!(client_id(&legacy).as_deref(), Some("abc"));
        let both = object(json!({"clientId": "new", "personScanRef": "old"}));
        assert_eq!(client_id(&both).as_deref(), Some("new"));
        let null = object(json!({"clientId": null, "personScanRef": "old"}));
        assert_eq!(client_id(&null).as_deref(), Some("old"));
    }

    #[test]
    fn client_id_is_none_when_absent_or_not_scalar() {
        assert_eq!(client_id(&object(json!({"firstName": "A"}))), None);
        assert_eq!(client_id(&object(json!({"clientId": ["a"]}))), None);
        assert_eq!(client_id(&object(json!({"clientId": true}))), None);
    }

    #[test]
    fn parse_body_accepts_only_json_objects() {
        assert!(parse_body(br#"{"clientId":"a"}"#).is_ok());
        for bad in [&b"[1]"[..], b"\"x\"", b"", b"{", b"\xff"] {
            let err = parse_body(bad).unwrap_err();
            assert_eq!((err.identifier, err.field), (JSON_ERROR, "body"));
        }
    }

    #[test]
    fn json_errors_never_quote_the_body() {
        let err = parse_body(br#""secret-person-name""#).unwrap_err();
        assert!(!err.message.contains("secret"));
        let err = parse_body(br#"{"clientId": secret}"#).unwrap_err();
        assert!(!err.message.contains("secret"));
    }

    #[test]
    fn field_error_becomes_a_validation_answer() {
        let err: GatewayError = FieldError::missing("clientId").into();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(err.identifier(), MISSING_VALUE);
        assert_eq!(err.reason(), "validation");
        assert_eq!(err.to_string(), "clientId is required");
    }
}
