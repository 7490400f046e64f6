//! Team token rotation over real sockets: several tokens valid at once (`team.tokens`), and a
//! `team.token_file` re-read when it changes, so that a rotation (add the new token, move the
//! callers, remove the old one) never refuses a caller holding a token the file lists.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use http::{Method, StatusCode};
use support::gateway::{config_text, send, TestGateway, UPSTREAM_AUTH};
use support::upstream::{MockUpstream, Reply};

const ACCOUNT: &str = r#"
[[account]]
name = "main"
api_key = "test-key"
api_secret = "test-secret"
rate = "10000/s"
burst = 10000
"#;

async fn status_with(gw: &TestGateway, authorization: &str) -> StatusCode {
    send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[("authorization", authorization)],
        r#"{"scanRef":"s-1"}"#,
    )
    .await
    .status
}

fn basic(team: &str, token: &str) -> String {
    let pair = format!("{team}:{token}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn upstream() -> MockUpstream {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    upstream
}

#[tokio::test]
async fn two_tokens_of_one_team_are_valid_at_once() {
    let upstream = upstream().await;
    let teams = format!(
        "{ACCOUNT}[[team]]\nname = \"payments\"\ntokens = [\"tok-old-1f3a\", \"tok-new-9b2c\"]\n\
         [[team]]\nname = \"kyc\"\ntoken = \"tok-kyc-77d0\"\n"
    );
    let gw = TestGateway::start(&config_text(&upstream.url(), &teams)).await;

    for auth in [
        "Bearer tok-old-1f3a".to_string(),
        "Bearer tok-new-9b2c".to_string(),
        basic("payments", "tok-old-1f3a"),
        basic("payments", "tok-new-9b2c"),
        "Bearer tok-kyc-77d0".to_string(),
    ] {
        assert_eq!(status_with(&gw, &auth).await, StatusCode::OK, "{auth}");
    }
    for auth in [
        "Bearer tok-old-1f3".to_string(),
        "Bearer tok-new-9b2c-".to_string(),
        basic("kyc", "tok-new-9b2c"),
    ] {
        assert_eq!(
            status_with(&gw, &auth).await,
            StatusCode::UNAUTHORIZED,
            "{auth}"
        );
    }
    // iDenfy saw the five accepted requests, each with the account's pair, never a team token.
    let received = upstream.received();
    assert_eq!(received.len(), 5);
    for r in &received {
        assert_eq!(r.headers["authorization"], UPSTREAM_AUTH);
    }
    gw.running.shutdown().await;
}

/// Replaces `file` the way kubelet updates a secret volume: a new file renamed over the old.
fn replace(file: &Path, text: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Waits (at most 10 s) until a request with `auth` gets `expected`.
async fn until(gw: &TestGateway, auth: &str, expected: StatusCode) {
    for _ in 0..500 {
        if status_with(gw, auth).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{auth} never got {expected}");
}

#[tokio::test]
async fn a_token_file_rotation_has_no_gap() {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# payments callers\ntok-old-5e1d\n").unwrap();
    let teams = format!(
        "{ACCOUNT}[[team]]\nname = \"payments\"\ntoken_file = \"{}\"\n",
        file.display()
    );
    let gw = TestGateway::start(&config_text(&upstream.url(), &teams)).await;
    let (old, new) = ("Bearer tok-old-5e1d", "Bearer tok-new-a04c");
    assert_eq!(status_with(&gw, old).await, StatusCode::OK);
    assert_eq!(status_with(&gw, new).await, StatusCode::UNAUTHORIZED);

    // 1. Add the new token: both are valid.
    replace(&file, "tok-old-5e1d\ntok-new-a04c\n");
    until(&gw, new, StatusCode::OK).await;
    assert_eq!(status_with(&gw, old).await, StatusCode::OK);

    // 2. Remove the old token: only the new one is valid.
    replace(&file, "tok-new-a04c\n");
    until(&gw, old, StatusCode::UNAUTHORIZED).await;
    assert_eq!(status_with(&gw, new).await, StatusCode::OK);
    gw.running.shutdown().await;
}
