//! Route spellings end to end: a real gateway in front of a scripted upstream. No spelling of a
//! token endpoint but the documented one reaches iDenfy, so every token request iDenfy receives
//! was validated and deduplicated, under the path that was validated.

mod support;

use http::{Method, StatusCode};
use support::gateway::{send, with_mock_upstream, Answer, TestGateway, BEARER};
use support::upstream::Reply;

/// Every other way of writing `POST /api/v2/token` or `POST /kyb/tokens/` that a lax server could
/// read as one of them: trailing or doubled slashes, path parameters, escapes, case, a format
/// suffix, a lowercase method.
const SPELLINGS: &[(&str, &str)] = &[
    ("POST", "/api/v2/token/"),
    ("POST", "/api/v2/token;"),
    ("POST", "/api/v2/token;x=1"),
    ("POST", "/api/v2/token%3B"),
    ("POST", "/api/v2/%74oken"),
    ("POST", "/api/v2//token"),
    ("POST", "/api/v2/Token"),
    ("POST", "/API/V2/TOKEN"),
    ("POST", "/api/v2/token.json"),
    ("POST", "/kyb/tokens"),
    ("POST", "/kyb/tokens//"),
    ("POST", "/kyb/tokens;/"),
    ("POST", "/kyb/%74okens/"),
    ("POST", "/KYB/TOKENS/"),
    ("post", "/api/v2/token"),
    ("Post", "/kyb/tokens/"),
];

async fn post(gw: &TestGateway, method: &str, path: &str, body: &str) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    send(method, &gw.url(path), &[BEARER], body.to_string()).await
}

fn token_reply() -> Reply {
    Reply::json(
        201,
        r#"{"message":"Token created successfully","authToken":"tok-1","scanRef":"scan-1","clientId":"user-1","expiryTime":3600,"sessionLength":600}"#,
    )
}

/// Each spelling is refused by the gateway, 400 `bad_path` or 404, whatever the body.
async fn assert_every_spelling_is_refused(gw: &TestGateway, body: &str) {
    for (method, path) in SPELLINGS {
        let res = post(gw, method, path, body).await;
        let refused = (res.status, res.header("x-gateway-error"));
        assert!(
            refused == (StatusCode::BAD_REQUEST, "bad_path")
                || refused == (StatusCode::NOT_FOUND, "route_not_found"),
            "{method} {path} with {body}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn no_spelling_of_a_token_endpoint_reaches_the_upstream_unvalidated() {
    let (upstream, gw) = with_mock_upstream("").await;
    assert_every_spelling_is_refused(&gw, r#"{"clientId":""}"#).await;
    for canonical in ["/api/v2/token", "/kyb/tokens/"] {
        let res = post(&gw, "POST", canonical, r#"{"clientId":""}"#).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{canonical}");
        assert_eq!(res.header("x-gateway-error"), "validation", "{canonical}");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.received());
}

#[tokio::test]
async fn a_valid_token_request_reaches_the_upstream_once_and_only_as_documented() {
    let (upstream, gw) = with_mock_upstream("").await;
    assert_every_spelling_is_refused(&gw, r#"{"clientId":"user-1"}"#).await;
    assert_eq!(upstream.count(), 0, "{:?}", upstream.received());

    upstream.push(token_reply());
    let first = post(&gw, "POST", "/api/v2/token", r#"{"clientId":"user-1"}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("x-gateway-dedup"), "leader");
    let again = post(&gw, "POST", "/api/v2/token", r#"{"clientId":"user-1"}"#).await;
    assert_eq!(again.header("x-gateway-dedup"), "replayed");
    assert_eq!(again.body, first.body);

    let kyb = post(&gw, "POST", "/kyb/tokens/", r#"{"clientId":"user-1"}"#).await;
    assert_eq!(kyb.header("x-gateway-dedup"), "leader");
    let seen: Vec<(String, String)> = upstream
        .received()
        .iter()
        .map(|r| (r.method.to_string(), r.uri.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".to_string(), "/api/v2/token".to_string()),
            ("POST".to_string(), "/kyb/tokens/".to_string()),
        ]
    );
}
