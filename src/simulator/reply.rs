//! The simulator's answers: JSON bodies in iDenfy's shapes.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

/// A simulator response.
pub type Reply = Response<Full<Bytes>>;

/// A JSON answer.
pub fn json(status: StatusCode, body: &Value) -> Reply {
    with_type(status, Bytes::from(body.to_string()), "application/json")
}

/// iDenfy's standard error: `{"identifier","message"}`.
pub fn error(status: StatusCode, identifier: &str, message: &str) -> Reply {
    json(
        status,
        &json!({"identifier": identifier, "message": message}),
    )
}

/// The form of iDenfy's auth and account errors: `{"message"}`, no identifier.
pub fn message(status: StatusCode, message: &str) -> Reply {
    json(status, &json!({"message": message}))
}

/// An answer with no body.
pub fn empty(status: StatusCode) -> Reply {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    res
}

/// An answer of some bytes and content type.
pub fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Reply {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
