//! A token flight is its own, end to end: one team's session is never another team's answer, a
//! flight runs on the configured deadline (not its leader's) and always ends, and the dedup
//! metrics count what the headers say.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use support::gateway::{
    config_text, metric, send, with_mock_upstream, Answer, TestGateway, ACCOUNT_AND_TEAM, BEARER,
};
use support::raw::RawUpstream;
use support::upstream::{MockUpstream, Reply};
use tokio::sync::Notify;

/// A second team on the same (only) account.
const BETA_TEAM: &str = "[[team]]\nname = \"beta\"\ntoken = \"beta-token\"\n";
const BETA: (&str, &str) = ("authorization", "Bearer beta-token");

fn token_reply(auth_token: &str) -> Reply {
    Reply::json(
        201,
        &format!(
            r#"{{"authToken":"{auth_token}","scanRef":"scan-{auth_token}","expiryTime":3600}}"#
        ),
    )
}

async fn token(gw: &TestGateway, headers: &[(&str, &str)], client_id: &str) -> Answer {
    let body = format!(r#"{{"clientId":"{client_id}"}}"#);
    send(Method::POST, &gw.url("/api/v2/token"), headers, body).await
}

fn spawn_token(
    gw: &TestGateway,
    headers: &'static [(&'static str, &'static str)],
    client_id: &'static str,
) -> tokio::task::JoinHandle<Answer> {
    let (url, body) = (
        gw.url("/api/v2/token"),
        format!(r#"{{"clientId":"{client_id}"}}"#),
    );
    tokio::spawn(async move { send(Method::POST, &url, headers, body).await })
}

/// Polls the admin listener until `name` (a gauge, with its trailing space) reads `value`.
async fn wait_for_gauge(gw: &TestGateway, name: &str, value: f64) {
    for _ in 0..400 {
        if metric(&gw.metrics().await, name) == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{name} never read {value}");
}

fn assert_client_id_in_use(res: &Answer, client_id: &str) {
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.header("x-gateway-error"), "client_id_in_use");
    assert_eq!(res.header("x-gateway-dedup"), "");
    let json = res.json();
    assert_eq!(json["identifier"], "CONFLICT");
    assert_eq!(json["message"], "Client ID already exists");
    let text = String::from_utf8_lossy(&res.body);
    for leaked in [client_id, "authToken", "scanRef", "tok-alpha"] {
        assert!(!text.contains(leaked), "{leaked} in {text}");
    }
}

/// `dedup_requests_total`, by outcome, equals the answers that carried that `x-gateway-dedup`.
async fn assert_metrics_match_headers(gw: &TestGateway, answers: &[&Answer]) {
    let text = gw.metrics().await;
    for outcome in ["leader", "coalesced", "replayed"] {
        let seen = answers
            .iter()
            .filter(|a| a.header("x-gateway-dedup") == outcome)
            .count();
        let counted: f64 = text
            .lines()
            .filter(|l| l.starts_with("idenfy_gateway_dedup_requests_total{"))
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(counted, seen as f64, "outcome {outcome}:\n{text}");
    }
}

#[tokio::test]
async fn another_team_on_the_account_gets_409_while_the_session_is_created_and_after() {
    let (upstream, gw) = with_mock_upstream(BETA_TEAM).await;
    let gate = Arc::new(Notify::new());
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(token_reply("tok-alpha")),
    ));
    let alpha = spawn_token(&gw, &[BEARER], "victim-42");
    upstream.wait_for(1).await;
    // Alpha's call is held upstream: beta is refused at once, without joining it.
    let during = token(&gw, &[BETA], "victim-42").await;
    assert_client_id_in_use(&during, "victim-42");
    gate.notify_one();
    let created = alpha.await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("x-gateway-dedup"), "leader");
    // The session is stored: beta is refused again, alpha still gets it replayed.
    let after = token(&gw, &[BETA], "victim-42").await;
    assert_client_id_in_use(&after, "victim-42");
    let replayed = token(&gw, &[BEARER], "victim-42").await;
    assert_eq!(replayed.header("x-gateway-dedup"), "replayed");
    assert_eq!(replayed.body, created.body);
    assert_eq!(upstream.count(), 1, "one token request reached iDenfy");
    let text = gw.metrics().await;
    let in_use =
        "idenfy_gateway_dedup_client_id_in_use_total{route=\"/api/v2/token\",team=\"beta\"}";
    assert_eq!(metric(&text, in_use), 2.0, "{text}");
    assert_metrics_match_headers(&gw, &[&during, &created, &after, &replayed]).await;
}

#[tokio::test]
async fn a_request_refused_by_the_team_limit_is_not_counted_as_a_dedup_answer() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(token_reply("tok-slow"));
    // Burst 1, one a minute: the first token request goes, the second is refused at once.
    let slow = "[[team]]\nname = \"slow\"\ntoken = \"s\"\nrate = \"1/m\"\nburst = 1\n\
                [limits]\nmax_wait = \"100ms\"\n";
    let gw = TestGateway::start(&config_text(
        &upstream.url(),
        &format!("{ACCOUNT_AND_TEAM}{slow}"),
    ))
    .await;
    let team = [("authorization", "Bearer s")];
    let first = token(&gw, &team, "c-1").await;
    let refused = token(&gw, &team, "c-2").await;
    assert_eq!(first.header("x-gateway-dedup"), "leader");
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("x-gateway-error"), "rate_limited_team");
    assert_eq!(refused.header("x-gateway-dedup"), "");
    assert_eq!(upstream.count(), 1);
    assert_metrics_match_headers(&gw, &[&first, &refused]).await;
}

#[tokio::test]
async fn a_leader_in_a_hurry_gets_its_504_and_its_follower_still_gets_the_token() {
    let (upstream, gw) = with_mock_upstream("").await;
    let gate = Arc::new(Notify::new());
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(token_reply("tok-slow")),
    ));
    let hurried: &'static [(&str, &str)] = &[BEARER, ("x-gateway-timeout", "150ms")];
    let leader = spawn_token(&gw, hurried, "user-11");
    upstream.wait_for(1).await;
    let follower = spawn_token(&gw, &[BEARER], "user-11");
    wait_for_gauge(&gw, "idenfy_gateway_dedup_waiting ", 1.0).await;
    let leader = leader.await.unwrap();
    assert_eq!(leader.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(leader.header("x-gateway-error"), "deadline");
    // Released only now, well after the leader's 150 ms.
    gate.notify_one();
    let follower = follower.await.unwrap();
    assert_eq!(follower.status, StatusCode::CREATED);
    assert_eq!(follower.header("x-gateway-dedup"), "coalesced");
    assert_eq!(follower.json()["authToken"], "tok-slow");
    assert_eq!(upstream.count(), 1);
    assert_metrics_match_headers(&gw, &[&leader, &follower]).await;
}

/// A token answer whose head arrives and whose body then stalls, on the first connection; an
/// ordinary token answer on every later one.
async fn stalling_upstream(head: &'static str) -> RawUpstream {
    RawUpstream::start(move |index, mut conn| async move {
        if index == 0 {
            conn.request().await;
            conn.write(head.as_bytes()).await;
            // Held open until the gateway lets go of it.
            while conn.request().await.is_some() {}
            return;
        }
        while conn.request().await.is_some() {
            conn.ok(r#"{"authToken":"tok-fresh","expiryTime":3600}"#)
                .await;
        }
    })
    .await
}

#[tokio::test]
async fn a_stalled_token_body_ends_its_flight_at_the_deadline_and_frees_the_client_id() {
    let heads = [
        "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"aut\r\n",
        "HTTP/1.1 201 Created\r\ncontent-length: 100000\r\n\r\n{\"authToke",
    ];
    for head in heads {
        let upstream = stalling_upstream(head).await;
        let text = config_text(&upstream.url(), ACCOUNT_AND_TEAM)
            .replace("attempt_timeout = \"2s\"", "attempt_timeout = \"300ms\"")
            .replace("deadline = \"5s\"", "deadline = \"300ms\"");
        let gw = TestGateway::start(&text).await;
        let first = token(&gw, &[BEARER], "user-20").await;
        assert!(first.status.is_server_error(), "{head}: {}", first.status);
        // The flight ended with the deadline: the clientId is not pinned.
        wait_for_gauge(&gw, "idenfy_gateway_dedup_in_flight ", 0.0).await;
        let second = token(&gw, &[BEARER], "user-20").await;
        assert_eq!(second.status, StatusCode::OK, "{head}");
        assert_eq!(second.header("x-gateway-dedup"), "leader");
        assert_eq!(second.json()["authToken"], "tok-fresh");
        assert_eq!(
            upstream.connections(),
            2,
            "{head}: a second request went upstream"
        );
    }
}
