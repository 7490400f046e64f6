//! The request schemas of iDenfy's token-creating endpoints, as tables of field rules.

use serde_json::{Map, Value};

use super::rule::Rule;
use super::FieldError;

/// The rules of one endpoint's request body.
#[derive(Debug)]
pub struct Schema {
    /// The fields that may carry the required client id: at least one must be present.
    pub id_fields: &'static [&'static str],
    /// Every known field and its rule. Fields not listed pass unchecked.
    pub fields: &'static [(&'static str, Rule)],
}

/// 30 days, the longest token lifetime iDenfy allows (`expiryTime`, `lifetime`).
const MAX_LIFETIME: u64 = 2_592_000;

/// `POST /api/v2/token` (idenfy-api.md §3.1).
pub const KYC_TOKEN: Schema = Schema {
    id_fields: &["clientId", "personScanRef"],
    fields: &[
        ("clientId", Rule::ClientId),
        ("personScanRef", Rule::ClientId),
        ("firstName", Rule::Name),
        ("lastName", Rule::Name),
        ("successUrl", Rule::Url),
        ("errorUrl", Rule::Url),
        ("unverifiedUrl", Rule::Url),
        ("callbackUrl", Rule::HttpsUrl),
        ("locale", Rule::Text { min: 0, max: 7 }),
        (
            "expiryTime",
            Rule::Int {
                min: 0,
                max: MAX_LIFETIME,
            },
        ),
        ("sessionLength", Rule::Int { min: 60, max: 3600 }),
        ("country", Rule::Countries),
        ("nationality", Rule::Country),
        ("dateOfBirth", Rule::Date),
        ("dateOfExpiry", Rule::Date),
        ("dateOfIssue", Rule::Date),
        ("sex", Rule::OneOf(&["M", "F"])),
        ("address", Rule::Text { min: 0, max: 255 }),
        ("externalRef", Rule::Text { min: 0, max: 40 }),
        ("generateDigitString", Rule::Bool),
    ],
};

/// `POST /kyb/tokens/` (idenfy-api.md §3.4). `tokenType` is optional here although openapi marks
/// it required: the older docs and the simulator default it to `FORM`.
pub const KYB_TOKEN: Schema = Schema {
    id_fields: &["clientId"],
    fields: &[
        ("clientId", Rule::ClientId),
        ("tokenType", Rule::OneOf(&["FORM", "GOV1", "GOV2"])),
        (
            "lifetime",
            Rule::Int {
                min: 0,
                max: MAX_LIFETIME,
            },
        ),
        ("externalRef", Rule::Text { min: 0, max: 40 }),
        ("tags", Rule::Tags { items: 5, len: 32 }),
    ],
};

impl Schema {
    /// The first rule the body breaks, in schema order, or `Ok`.
    pub fn check(&self, body: &Map<String, Value>) -> Result<(), FieldError> {
        let present = |field: &str| body.get(field).is_some_and(|v| !v.is_null());
        if !self.id_fields.iter().any(|f| present(f)) {
            return Err(FieldError::missing(self.id_fields[0]));
        }
        for (field, rule) in self.fields {
            match body.get(*field) {
                None | Some(Value::Null) => {}
                Some(value) => rule.check(field, value)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idenfy::{BAD_VALUE, MISSING_VALUE};
    use serde_json::json;

    /// Checks `{"clientId":"c", field: value}` against a schema.
    fn with(schema: &Schema, field: &str, value: Value) -> Result<(), FieldError> {
        let mut body = Map::new();
        body.insert("clientId".into(), json!("client-1"));
        body.insert(field.into(), value);
        schema.check(&body)
    }

    fn assert_accepts(schema: &Schema, cases: &[(&str, Value)]) {
        for (field, value) in cases {
            if let Err(e) = with(schema, field, value.clone()) {
                panic!("{field} = {value} refused: {e}");
            }
        }
    }

    fn assert_refuses(schema: &Schema, cases: &[(&str, Value)]) {
        for (field, value) in cases {
            match with(schema, field, value.clone()) {
                Ok(()) => panic!("{field} = {value} accepted"),
                Err(e) => {
                    assert_eq!(e.identifier, BAD_VALUE, "{field} = {value}");
                    assert_eq!(e.field, *field, "{field} = {value}");
                    assert!(e.message.starts_with(*field), "{}", e.message);
                }
            }
        }
    }

    #[test]
    fn kyc_token_accepts_valid_fields() {
        let long = "a".repeat(100);
        assert_accepts(
            &KYC_TOKEN,
            &[
                ("clientId", json!(long)),
                ("clientId", json!(100000)),
                ("clientId", json!(-7)),
                ("personScanRef", json!("legacy")),
                ("firstName", json!("Jonas-Petras O'Neil")),
                ("lastName", json!("Šimkūnaitė")),
                ("firstName", json!("a".repeat(100))),
                ("successUrl", json!("https://example.com/ok")),
                ("errorUrl", json!("a.io/")),
                ("unverifiedUrl", json!("x".repeat(2048))),
                ("callbackUrl", json!("https://hooks.example.com/idenfy")),
                ("callbackUrl", json!("HTTPS://HOOKS.EXAMPLE.COM")),
                ("locale", json!("en")),
                ("locale", json!("zh-Hant")),
                ("expiryTime", json!(0)),
                ("expiryTime", json!(2_592_000)),
                ("sessionLength", json!(60)),
                ("sessionLength", json!(3600)),
                ("country", json!("LT")),
                ("country", json!("lt")),
                ("country", json!(["LT", "de"])),
                ("nationality", json!("US")),
                ("dateOfBirth", json!("2000-02-29")),
                ("dateOfExpiry", json!("2031-12-31")),
                ("dateOfIssue", json!("1999-01-01")),
                ("sex", json!("M")),
                ("sex", json!("F")),
                ("address", json!("a".repeat(255))),
                ("externalRef", json!("e".repeat(40))),
                ("generateDigitString", json!(true)),
                ("tokenType", json!("ANYTHING")),
                ("checkLiveness", json!(true)),
                ("documents", json!(["ID_CARD"])),
                ("firstName", Value::Null),
            ],
        );
    }

    #[test]
    fn kyc_token_refuses_invalid_fields() {
        assert_refuses(
            &KYC_TOKEN,
            &[
                ("clientId", json!("")),
                ("clientId", json!("c".repeat(101))),
                ("clientId", json!("klientas-ą")),
                ("clientId", json!(1.5)),
                ("clientId", json!(true)),
                ("clientId", json!({"id": 1})),
                ("personScanRef", json!("")),
                ("firstName", json!("")),
                ("firstName", json!("a".repeat(101))),
                ("firstName", json!("R2D2")),
                ("lastName", json!("Smith_")),
                ("lastName", json!("a/b")),
                ("lastName", json!("\"quoted\"")),
                ("firstName", json!(7)),
                ("successUrl", json!("a.io")),
                ("errorUrl", json!("x".repeat(2049))),
                ("unverifiedUrl", json!(false)),
                ("callbackUrl", json!("http://hooks.example.com")),
                ("callbackUrl", json!("https:/")),
                ("locale", json!("en-GB-oed")),
                ("expiryTime", json!(-1)),
                ("expiryTime", json!(2_592_001)),
                ("expiryTime", json!("3600")),
                ("expiryTime", json!(60.5)),
                ("sessionLength", json!(59)),
                ("sessionLength", json!(3601)),
                ("country", json!("XX")),
                ("country", json!("LTU")),
                ("country", json!(["LT", "XX"])),
                ("country", json!(1)),
                ("nationality", json!(["LT"])),
                ("dateOfBirth", json!("2001-02-29")),
                ("dateOfBirth", json!("2000-1-5")),
                ("dateOfExpiry", json!("31/12/2031")),
                ("dateOfIssue", json!(20000101)),
                ("sex", json!("m")),
                ("sex", json!("X")),
                ("address", json!("a".repeat(256))),
                ("externalRef", json!("e".repeat(41))),
                ("generateDigitString", json!("true")),
            ],
        );
    }

    #[test]
    fn kyc_token_requires_a_client_id() {
        for body in [
            json!({}),
            json!({"clientId": null}),
            json!({"firstName": "A"}),
        ] {
            let err = KYC_TOKEN.check(body.as_object().unwrap()).unwrap_err();
            assert_eq!((err.identifier, err.field), (MISSING_VALUE, "clientId"));
        }
        let legacy = json!({"personScanRef": "p"});
        assert!(KYC_TOKEN.check(legacy.as_object().unwrap()).is_ok());
    }

    #[test]
    fn kyb_token_accepts_valid_fields() {
        assert_accepts(
            &KYB_TOKEN,
            &[
                ("tokenType", json!("FORM")),
                ("tokenType", json!("GOV1")),
                ("tokenType", json!("GOV2")),
                ("lifetime", json!(0)),
                ("lifetime", json!(2_592_000)),
                ("externalRef", json!("e".repeat(40))),
                ("tags", json!([])),
                ("tags", json!(["a", "b", "c", "d", "t".repeat(32)])),
                ("flow", json!("4c1c7d9e-0000-4000-8000-000000000000")),
            ],
        );
    }

    #[test]
    fn kyb_token_refuses_invalid_fields() {
        assert_refuses(
            &KYB_TOKEN,
            &[
                ("clientId", json!("")),
                ("clientId", json!("c".repeat(101))),
                ("tokenType", json!("IDENTIFICATION")),
                ("tokenType", json!("form")),
                ("lifetime", json!(2_592_001)),
                ("lifetime", json!(-5)),
                ("externalRef", json!("e".repeat(41))),
                ("tags", json!(["1", "2", "3", "4", "5", "6"])),
                ("tags", json!(["t".repeat(33)])),
                ("tags", json!("solo")),
                ("tags", json!([1])),
            ],
        );
    }

    #[test]
    fn kyb_token_requires_client_id_not_person_scan_ref() {
        let body = json!({"personScanRef": "p", "tokenType": "FORM"});
        let err = KYB_TOKEN.check(body.as_object().unwrap()).unwrap_err();
        assert_eq!((err.identifier, err.field), (MISSING_VALUE, "clientId"));
    }

    #[test]
    fn messages_never_echo_the_value() {
        let err = with(&KYC_TOKEN, "firstName", json!("Sensitive9Name")).unwrap_err();
        assert!(!err.message.contains("Sensitive"), "{}", err.message);
        let err = with(&KYC_TOKEN, "clientId", json!("ąžuolas-vardenis")).unwrap_err();
        assert!(!err.message.contains("vardenis"), "{}", err.message);
    }
}
