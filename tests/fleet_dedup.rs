//! Fleet mode's dedup (issue 15), end to end: token requests for one clientId through two
//! gateways that share nothing but a `redis-server` of the test's own. Coalescing across
//! replicas, replay across replicas, team isolation across replicas, and a leader's replica
//! SIGKILLed while the other's callers wait on its flight.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::fleet::{account_and_team, fleet, fleet_config, wait_for_metric, HIGH};
use support::gateway::{metric, send, Answer, TestGateway, BEARER};
use support::process::GatewayProcess;
use support::redis_server::RedisServer;
use support::upstream::{MockUpstream, Reply};
use tokio::sync::Notify;

const GROWTH: (&str, &str) = ("authorization", "Bearer growth-token");

fn token_reply(client_id: &str, auth_token: &str) -> Reply {
    Reply::Respond {
        status: 201,
        headers: vec![("content-type", "application/json".into())],
        body: format!(
            r#"{{"message":"Token created successfully","authToken":"{auth_token}","scanRef":"scan-{auth_token}","clientId":"{client_id}","expiryTime":3600,"sessionLength":600}}"#
        )
        .into(),
    }
}

fn token_request(
    url: String,
    auth: (&'static str, &'static str),
) -> tokio::task::JoinHandle<Answer> {
    tokio::spawn(async move { send(Method::POST, &url, &[auth], r#"{"clientId":"user-1"}"#).await })
}

const WAITING: &str = "idenfy_gateway_dedup_waiting ";
const SUBSCRIBED: &str = "idenfy_gateway_state_round_trip_seconds_count{operation=\"subscribe\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_token_requests_across_two_replicas_make_one_session() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    let gate = Arc::new(Notify::new());
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(token_reply("user-1", "tok-1")),
    ));
    let accounts = account_and_team(HIGH, HIGH);
    let (a, b) = fleet(&upstream, &redis, &accounts, "", "").await;
    let leader = token_request(a.url("/api/v2/token"), BEARER);
    upstream.wait_for(1).await;
    // 49 more, 24 through A and 25 through B: on B, one leads there and waits on Redis.
    let others: Vec<_> = (0..49)
        .map(|i| {
            let gw = if i % 2 == 0 { &b } else { &a };
            token_request(gw.url("/api/v2/token"), BEARER)
        })
        .collect();
    wait_for_metric(&a, WAITING, 24.0).await;
    wait_for_metric(&b, WAITING, 24.0).await;
    wait_for_metric(&b, SUBSCRIBED, 1.0).await;
    gate.notify_one();
    let mut answers = vec![leader.await.unwrap()];
    for other in others {
        answers.push(other.await.unwrap());
    }
    assert_eq!(upstream.count(), 1, "one upstream session for the fleet");
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.json()["authToken"], "tok-1");
    }
    assert_eq!(answers[0].header("x-gateway-dedup"), "leader");
    let coalesced = answers[1..]
        .iter()
        .filter(|a| a.header("x-gateway-dedup") == "coalesced")
        .count();
    assert_eq!(coalesced, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_through_one_replica_is_replayed_by_the_other_to_its_team_only() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(token_reply("user-1", "tok-1"));
    let accounts = account_and_team(HIGH, HIGH);
    let (a, b) = fleet(&upstream, &redis, &accounts, "", "").await;
    let created = token_request(a.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("x-gateway-dedup"), "leader");
    let replayed = token_request(b.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(replayed.status, StatusCode::CREATED);
    assert_eq!(replayed.header("x-gateway-dedup"), "replayed");
    assert_eq!(replayed.body, created.body);
    // Another team of the account never gets that answer, on either replica.
    for gw in [&b, &a] {
        let other = token_request(gw.url("/api/v2/token"), GROWTH)
            .await
            .unwrap();
        assert_eq!(other.status, StatusCode::CONFLICT);
        assert_eq!(other.header("x-gateway-error"), "client_id_in_use");
        assert!(!String::from_utf8_lossy(&other.body).contains("tok-1"));
    }
    assert_eq!(upstream.count(), 1);
    // The clientId itself never reaches Redis (its keys name a hash of it).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("idenfy-gateway:{main}:replay:kyc:")),
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| !k.contains("user-1")), "{keys:?}");
    // Every key of the account carries it as its hash tag (one Cluster slot, README).
    assert!(
        keys.iter().all(|k| k.starts_with("idenfy-gateway:{main}:")),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_ended_by_the_leaders_death_is_taken_over_by_exactly_one_waiter() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    // The first call (A's) never gets its answer; the next one is answered.
    upstream.push(Reply::Hang);
    upstream.set_default(token_reply("user-1", "tok-2"));
    let accounts = account_and_team(HIGH, HIGH);
    // Room for a lease to expire (3 s) within the callers' deadline.
    let text = fleet_config(&upstream, &redis, &accounts, "", "")
        .replace("deadline = \"5s\"", "deadline = \"15s\"")
        .replace("attempt_timeout = \"2s\"", "attempt_timeout = \"12s\"");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, &text).unwrap();
    let mut a = GatewayProcess::start(&file, &[]);
    let b = TestGateway::start(&text).await;
    support::fleet::wait_for_backend(&b, 1.0).await;

    // A leads: its call reaches the upstream and hangs there.
    let url = a.url("/api/v2/token");
    let doomed = tokio::spawn(async move {
        let req = Request::post(url)
            .header("authorization", "Bearer team-token")
            .body(Full::new(Bytes::from_static(br#"{"clientId":"user-1"}"#)))
            .unwrap();
        support::http::Client::default().send(req).await
    });
    upstream.wait_for(1).await;
    // B's callers wait on A's flight.
    let waiters: Vec<_> = (0..5)
        .map(|_| token_request(b.url("/api/v2/token"), BEARER))
        .collect();
    wait_for_metric(&b, WAITING, 4.0).await;
    wait_for_metric(&b, SUBSCRIBED, 1.0).await;
    assert_eq!(upstream.count(), 1);

    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(
        doomed.await.unwrap().is_err(),
        "A answered after its SIGKILL"
    );
    for waiter in waiters {
        let answer = waiter.await.unwrap();
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.json()["authToken"], "tok-2");
    }
    // Exactly one more call, made by B.
    assert_eq!(upstream.count(), 2);
    let text = b.metrics().await;
    let outcome = |outcome: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("idenfy_gateway_dedup_requests_total{"))
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        (outcome("leader"), outcome("coalesced")),
        (1.0, 4.0),
        "{text}"
    );
    // The waiter that took the lease over took its quota decisions in the same script: B never
    // asked the quota on its own.
    let quota = "idenfy_gateway_state_round_trip_seconds_count{operation=\"quota\"}";
    assert_eq!(support::gateway::metric(&text, quota), 0.0, "{text}");
}

/// A final webhook received by one replica ends replay on every replica: the replica that created
/// (and holds) the token opens a new session for the clientId instead of replaying the ended one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_webhook_through_one_replica_ends_replay_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.push(token_reply("user-1", "tok-1"));
    upstream.set_default(token_reply("user-1", "tok-2"));
    let accounts = account_and_team(HIGH, HIGH).replace(
        "api_secret = \"test-secret\"\n",
        "api_secret = \"test-secret\"\nwebhook_key = \"account-webhook-key\"\n",
    );
    // A receives the account's webhooks; B creates and holds the token.
    let dir = tempfile::tempdir().unwrap();
    let webhooks = format!("\n[webhooks]\ndir = \"{}\"\n", dir.path().display());
    let a_text = fleet_config(&upstream, &redis, &accounts, &webhooks, "")
        .replace("[listen]\n", "[listen]\nwebhook = \"127.0.0.1:0\"\n");
    let b_text = fleet_config(&upstream, &redis, &accounts, "", "");
    let (a, b) = (
        TestGateway::start(&a_text).await,
        TestGateway::start(&b_text).await,
    );
    support::fleet::wait_for_backend(&a, 1.0).await;
    support::fleet::wait_for_backend(&b, 1.0).await;

    let created = token_request(b.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(created.header("x-gateway-dedup"), "leader");
    let replayed = token_request(b.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(replayed.header("x-gateway-dedup"), "replayed");
    assert_eq!(replayed.json()["authToken"], "tok-1");

    let body = r#"{"final":true,"status":{"overall":"APPROVED"},"scanRef":"scan-tok-1","clientId":"user-1"}"#;
    let signature = idenfy_gateway::webhooks::sign(b"account-webhook-key", body.as_bytes());
    let hook = format!(
        "http://{}/webhooks/idenfy/main",
        a.running.webhook_addr.expect("A's webhook listener")
    );
    let headers = [
        ("content-type", "application/json"),
        ("idenfy-event-type", "IDENTIFICATION"),
        ("idenfy-signature", signature.as_str()),
    ];
    let ack = send(Method::POST, &hook, &headers, body.to_owned()).await;
    assert_eq!(ack.status, StatusCode::OK);
    leads_a_new_session_once_ended(&b, &redis).await;
    assert_eq!(upstream.count(), 2);
}

/// A status answer relayed by one replica that shows the session over ends replay on every
/// replica, also on one that never held the token itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_status_seen_by_one_replica_ends_replay_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.push(token_reply("user-1", "tok-1"));
    upstream.push(Reply::Respond {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: r#"{"status":"APPROVED","scanRef":"scan-tok-1","clientId":"user-1"}"#.into(),
    });
    upstream.set_default(token_reply("user-1", "tok-2"));
    let accounts = account_and_team(HIGH, HIGH);
    let (a, b) = fleet(&upstream, &redis, &accounts, "", "").await;
    let created = token_request(b.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(created.header("x-gateway-dedup"), "leader");

    // A holds nothing of this session; its relayed status answer ends it for the fleet.
    let status = send(
        Method::POST,
        &a.url("/api/v2/status"),
        &[BEARER],
        r#"{"scanRef":"scan-tok-1"}"#,
    )
    .await;
    assert_eq!(status.status, StatusCode::OK);
    leads_a_new_session_once_ended(&b, &redis).await;
    assert_eq!(upstream.count(), 3);
}

/// Once session `scan-tok-1` has left the fleet's store (its end reaches Redis beside the answer
/// that carried it, not before it), a token request through `gw` leads a new session, `tok-2`.
async fn leads_a_new_session_once_ended(gw: &TestGateway, redis: &RedisServer) {
    session_key_gone(redis, "scan-tok-1").await;
    let after = token_request(gw.url("/api/v2/token"), BEARER)
        .await
        .unwrap();
    assert_eq!(
        after.header("x-gateway-dedup"),
        "leader",
        "{:?}",
        after.body
    );
    assert_eq!(after.json()["authToken"], "tok-2");
}

/// Waits until the fleet's store no longer indexes session `scan_ref`.
async fn session_key_gone(redis: &RedisServer, scan_ref: &str) {
    let mut conn = redis.connection();
    let suffix = format!(":session:{scan_ref}");
    for _ in 0..500 {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        if !keys.iter().any(|k| k.ends_with(&suffix)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn status_reply(overall: &str) -> Reply {
    Reply::json(
        200,
        &format!(r#"{{"status":"{overall}","scanRef":"scan-tok-1","clientId":"user-1"}}"#),
    )
}

/// `dedup.recheck_after` holds across replicas: a token stored through A is rechecked by B
/// before B replays it (its session's age is kept in Redis); a recheck that finds the session
/// over makes B lead a new session instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stored_through_one_replica_is_rechecked_by_the_other_before_its_replay() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.push(token_reply("user-1", "tok-1"));
    let accounts = account_and_team(HIGH, HIGH);
    // Zero: every replay is rechecked first.
    let extra = "\n[dedup]\nrecheck_after = \"0s\"\n";
    let (a, b) = fleet(&upstream, &redis, &accounts, extra, "").await;
    let created = token_request(a.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(created.header("x-gateway-dedup"), "leader");

    // Still live: B asks iDenfy, then replays A's token.
    upstream.push(status_reply("ACTIVE"));
    let replayed = token_request(b.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(replayed.header("x-gateway-dedup"), "replayed");
    assert_eq!(replayed.json()["authToken"], "tok-1");
    let seen = upstream.received();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri, "/api/v2/status");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&seen[1].body).unwrap()["scanRef"],
        "scan-tok-1"
    );

    // Over: B's recheck ends the session, and B opens a new one.
    upstream.push(status_reply("APPROVED"));
    upstream.push(token_reply("user-1", "tok-2"));
    let renewed = token_request(b.url("/api/v2/token"), BEARER).await.unwrap();
    assert_eq!(renewed.status, StatusCode::CREATED);
    assert_eq!(renewed.header("x-gateway-dedup"), "leader");
    assert_eq!(renewed.json()["authToken"], "tok-2");
    let seen = upstream.received();
    assert_eq!(seen.len(), 4, "status, then a new token");
    assert_eq!(
        (seen[2].uri.as_str(), seen[3].uri.as_str()),
        ("/api/v2/status", "/api/v2/token")
    );
    let text = b.metrics().await;
    let rechecks = |result: &str| {
        let name = format!("idenfy_gateway_dedup_rechecks_total{{result=\"{result}\"}}");
        metric(&text, &name)
    };
    assert_eq!((rechecks("live"), rechecks("over")), (1.0, 1.0), "{text}");
}
