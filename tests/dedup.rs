//! One clientId, one session, end to end: a real gateway in front of an upstream that counts
//! calls. Coalescing, replay, shared failures, detached leaders, 409s and local validation.

mod support;

use std::sync::Arc;

use http::{Method, StatusCode};
use support::gateway::{metric, send, with_mock_upstream, Answer, TestGateway, BEARER};
use support::upstream::{MockUpstream, Reply};
use tokio::sync::Notify;

fn token_reply(client_id: &str, auth_token: &str, expiry: u64) -> Reply {
    Reply::Respond {
        status: 201,
        headers: vec![("content-type", "application/json".into())],
        body: format!(
            r#"{{"message":"Token created successfully","authToken":"{auth_token}","scanRef":"scan-{auth_token}","clientId":"{client_id}","expiryTime":{expiry},"sessionLength":600}}"#
        )
        .into(),
    }
}

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    with_mock_upstream(extra).await
}

fn token_request(gw: &TestGateway, body: String) -> tokio::task::JoinHandle<Answer> {
    let url = gw.url("/api/v2/token");
    tokio::spawn(async move { send(Method::POST, &url, &[BEARER], body).await })
}

/// Waits until `n` requests are waiting on a flight (the signal that they joined it).
async fn wait_for_followers(gw: &TestGateway, n: f64) {
    for _ in 0..1000 {
        if metric(&gw.metrics().await, "idenfy_gateway_dedup_waiting ") >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{n} followers never joined the flight");
}

/// One flight for `body`: the leader reaches the upstream, which holds `reply` until `followers`
/// more requests have joined; returns every answer, the leader's first.
async fn one_flight(
    upstream: &MockUpstream,
    gw: &TestGateway,
    reply: Reply,
    body: &str,
    followers: usize,
) -> Vec<Answer> {
    let gate = Arc::new(Notify::new());
    upstream.push(Reply::Gated(gate.clone(), Box::new(reply)));
    let leader = token_request(gw, body.to_string());
    upstream.wait_for(1).await;
    let joined: Vec<_> = (0..followers)
        .map(|_| token_request(gw, body.to_string()))
        .collect();
    wait_for_followers(gw, followers as f64).await;
    gate.notify_one();
    let mut answers = vec![leader.await.unwrap()];
    for f in joined {
        answers.push(f.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn coalesces_forty_concurrent_token_requests_into_one_upstream_call() {
    let (upstream, gw) = setup("").await;
    let reply = token_reply("user-1", "tok-aaaa", 3600);
    let answers = one_flight(&upstream, &gw, reply, r#"{"clientId":"user-1"}"#, 39).await;
    assert_eq!(upstream.count(), 1);
    assert!(answers
        .iter()
        .all(|a| a.status == StatusCode::CREATED && a.body == answers[0].body));
    assert_eq!(answers[0].json()["authToken"], "tok-aaaa");
    let outcomes: Vec<&str> = answers
        .iter()
        .map(|a| a.header("x-gateway-dedup"))
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "leader").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == "coalesced").count(), 39);
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "idenfy_gateway_dedup_in_flight "), 0.0);
    assert_eq!(metric(&text, "idenfy_gateway_dedup_waiting "), 0.0);
    assert_eq!(metric(&text, "idenfy_gateway_sessions_created_total{"), 1.0);
}

#[tokio::test]
async fn never_merges_distinct_client_ids() {
    let (upstream, gw) = setup("").await;
    let gate = Arc::new(Notify::new());
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(token_reply("a", "tok-a", 3600)),
    ));
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(token_reply("b", "tok-b", 3600)),
    ));
    let a = token_request(&gw, r#"{"clientId":"a"}"#.into());
    let b = token_request(&gw, r#"{"clientId":"b"}"#.into());
    upstream.wait_for(2).await;
    gate.notify_waiters();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(
        (a.header("x-gateway-dedup"), b.header("x-gateway-dedup")),
        ("leader", "leader")
    );
    assert_ne!(a.body, b.body);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn replays_a_live_token_without_calling_upstream() {
    let (upstream, gw) = setup("").await;
    upstream.push(token_reply("user-7", "tok-live", 3600));
    let first = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-7"}"#,
    )
    .await;
    // A numeric clientId is the same key as its string.
    let again = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-7"}"#,
    )
    .await;
    assert_eq!(first.header("x-gateway-dedup"), "leader");
    assert_eq!(again.header("x-gateway-dedup"), "replayed");
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(upstream.count(), 1);

    upstream.push(token_reply("100000", "tok-num", 3600));
    send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":100000}"#,
    )
    .await;
    let string_form = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"100000"}"#,
    )
    .await;
    assert_eq!(string_form.header("x-gateway-dedup"), "replayed");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn flags_a_replay_whose_body_differs_from_the_leaders() {
    let (upstream, gw) = setup("").await;
    upstream.push(token_reply("user-8", "tok-8", 3600));
    send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-8","firstName":"ONE"}"#,
    )
    .await;
    let other = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-8","firstName":"TWO"}"#,
    )
    .await;
    assert_eq!(other.header("x-gateway-dedup"), "replayed");
    assert_eq!(other.header("x-gateway-dedup-mismatch"), "true");
    assert_eq!(other.json()["authToken"], "tok-8");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn does_not_replay_a_token_that_outlives_its_lifetime_or_when_replay_is_off() {
    // A token whose lifetime is within the safety margin is as good as expired: not kept.
    let (upstream, gw) = setup("[dedup]\nsafety_margin = \"30s\"\n").await;
    upstream.push(token_reply("user-9", "tok-short", 20));
    upstream.push(token_reply("user-9", "tok-next", 20));
    send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-9"}"#,
    )
    .await;
    let second = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-9"}"#,
    )
    .await;
    assert_eq!(second.header("x-gateway-dedup"), "leader");
    assert_eq!(second.json()["authToken"], "tok-next");
    assert_eq!(upstream.count(), 2);

    let (upstream, gw) = setup("[dedup]\nreplay = false\n").await;
    upstream.set_default(token_reply("user-10", "tok", 3600));
    for _ in 0..2 {
        let res = send(
            Method::POST,
            &gw.url("/api/v2/token"),
            &[BEARER],
            r#"{"clientId":"user-10"}"#,
        )
        .await;
        assert_eq!(res.header("x-gateway-dedup"), "leader");
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn shares_a_failure_with_waiting_followers_but_never_replays_it() {
    let (upstream, gw) = setup("").await;
    let failure = Reply::json(500, r#"{"identifier":"INTERNAL_ERROR","message":"boom"}"#);
    let body = r#"{"clientId":"user-11"}"#.to_string();
    let answers = one_flight(&upstream, &gw, failure, &body, 3).await;
    assert_eq!(answers[0].status, StatusCode::INTERNAL_SERVER_ERROR);
    for res in &answers[1..] {
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(res.json()["identifier"], "INTERNAL_ERROR");
    }
    assert_eq!(upstream.count(), 1);
    upstream.push(token_reply("user-11", "tok-ok", 3600));
    let later = send(Method::POST, &gw.url("/api/v2/token"), &[BEARER], body).await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert_eq!(later.header("x-gateway-dedup"), "leader");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_leader_whose_client_disconnects_still_answers_its_followers() {
    use tokio::io::AsyncWriteExt;
    let (upstream, gw) = setup("").await;
    let gate = Arc::new(Notify::new());
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(token_reply("user-12", "tok-12", 3600)),
    ));
    let body = r#"{"clientId":"user-12"}"#;
    let mut leader = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let raw = format!(
        "POST /api/v2/token HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer team-token\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    leader.write_all(raw.as_bytes()).await.unwrap();
    upstream.wait_for(1).await;
    let follower = token_request(&gw, body.to_string());
    wait_for_followers(&gw, 1.0).await;
    drop(leader);
    gate.notify_one();
    let res = follower.await.unwrap();
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(res.header("x-gateway-dedup"), "coalesced");
    assert_eq!(res.json()["authToken"], "tok-12");
    assert_eq!(upstream.count(), 1);
    assert_eq!(
        metric(&gw.metrics().await, "idenfy_gateway_dedup_in_flight "),
        0.0
    );
}

#[tokio::test]
async fn passes_an_upstream_409_through_once_without_retrying() {
    let (upstream, gw) = setup("").await;
    let conflict = r#"{"identifier":"CLIENT_ID_ACTIVE","message":"Client ID already exists"}"#;
    upstream.set_default(Reply::json(409, conflict));
    let res = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-13"}"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.body.as_ref(), conflict.as_bytes());
    assert_eq!(upstream.count(), 1);
    assert_eq!(
        metric(
            &gw.metrics().await,
            "idenfy_gateway_upstream_conflicts_total{"
        ),
        1.0
    );
}

#[tokio::test]
async fn answers_invalid_token_requests_locally_with_idenfys_identifiers() {
    let (upstream, gw) = setup("").await;
    let long = "x".repeat(101);
    let cases: Vec<(String, &str, &str)> = vec![
        ("{not json".into(), "JSON_ERROR", ""),
        ("[1,2]".into(), "JSON_ERROR", ""),
        (r#"{"firstName":"A"}"#.into(), "MISSING_VALUE", "clientId"),
        (r#"{"clientId":""}"#.into(), "", "clientId"),
        (r#"{"clientId":"žmogus"}"#.into(), "BAD_VALUE", "clientId"),
        (
            format!(r#"{{"clientId":"{long}"}}"#),
            "BAD_VALUE",
            "clientId",
        ),
        (
            r#"{"clientId":"u","dateOfBirth":"2023-02-30"}"#.into(),
            "BAD_VALUE",
            "dateOfBirth",
        ),
        (
            r#"{"clientId":"u","expiryTime":2592001}"#.into(),
            "BAD_VALUE",
            "expiryTime",
        ),
        (
            r#"{"clientId":"u","sessionLength":30}"#.into(),
            "BAD_VALUE",
            "sessionLength",
        ),
        (
            r#"{"clientId":"u","country":"XX"}"#.into(),
            "BAD_VALUE",
            "country",
        ),
        (r#"{"clientId":"u","sex":"X"}"#.into(), "BAD_VALUE", "sex"),
        (
            format!(r#"{{"clientId":"u","externalRef":"{}"}}"#, "r".repeat(41)),
            "BAD_VALUE",
            "externalRef",
        ),
        (
            format!(
                r#"{{"clientId":"u","successUrl":"https://{}"}}"#,
                "a".repeat(2048)
            ),
            "BAD_VALUE",
            "successUrl",
        ),
    ];
    for (body, identifier, field) in &cases {
        let res = send(
            Method::POST,
            &gw.url("/api/v2/token"),
            &[BEARER],
            body.clone(),
        )
        .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(res.header("x-gateway-error"), "validation", "{body}");
        let json = res.json();
        if !identifier.is_empty() {
            assert_eq!(json["identifier"], *identifier, "{body}");
        }
        assert!(
            json["message"].as_str().unwrap().contains(field),
            "{body}: {json}"
        );
    }
    assert_eq!(upstream.count(), 0);
    // Unknown fields pass through untouched.
    upstream.push(token_reply("u", "tok-u", 3600));
    let ok = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"u","checkLiveness":true}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(
        upstream.received()[0].body.as_ref(),
        br#"{"clientId":"u","checkLiveness":true}"#
    );
}

#[tokio::test]
async fn forwards_invalid_bodies_when_validation_is_off() {
    let (upstream, gw) = setup("[validation]\nenabled = false\n").await;
    upstream.set_default(Reply::json(
        400,
        r#"{"identifier":"BAD_VALUE","message":"sex"}"#,
    ));
    let res = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"u","sex":"X"}"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.header("x-gateway-error"), "");
    assert_eq!(upstream.count(), 1);
}
