//! Fleet mode's webhooks (issue 15), end to end: gateways that share nothing but a
//! `redis-server` of the test's own, iDenfy played by this test (signing as the account), the
//! team's endpoint by a recording server. Any replica accepts, any replica delivers: a webhook
//! accepted by a replica that is then SIGKILLed is delivered by the other, in order with the
//! webhooks of its scanRef that arrive meanwhile; a redelivery to the other replica is not
//! queued twice; a scanRef's team learnt by one replica routes the other's deliveries.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use idenfy_gateway::webhooks::{sign, X_GATEWAY_DELIVERY_ID};
use support::fleet::{account_and_team, fleet_config, wait_for_backend, wait_for_metric, HIGH};
use support::gateway::{metric, send, Answer, TestGateway, BEARER};
use support::process::GatewayProcess;
use support::redis_server::RedisServer;
use support::upstream::{MockUpstream, Recorded, Reply};

const ACCOUNT_KEY: &str = "account-hook-key";
const PAYMENTS_KEY: &str = "payments-hook-key";

/// The fleet's config: the account with its webhook key, team `payments` delivering to
/// `receiver`, a webhook listener, claims taken over after 1 s; `webhooks` adds to
/// `[webhooks]`.
fn config(upstream: &MockUpstream, redis: &RedisServer, receiver: &str, webhooks: &str) -> String {
    let accounts = account_and_team(HIGH, HIGH)
        .replace(
            "api_secret = \"test-secret\"\n",
            &format!("api_secret = \"test-secret\"\nwebhook_key = \"{ACCOUNT_KEY}\"\n"),
        )
        .replace(
            "token = \"team-token\"\n",
            &format!(
                "token = \"team-token\"\nwebhook_url = \"{receiver}/hooks\"\nwebhook_key = \"{PAYMENTS_KEY}\"\n"
            ),
        );
    let extra = format!("\n[webhooks]\nreclaim_after = \"1s\"\nretry_cap = \"5s\"\n{webhooks}\n");
    fleet_config(upstream, redis, &accounts, &extra, "")
        .replace("[listen]\n", "[listen]\nwebhook = \"127.0.0.1:0\"\n")
}

fn token_reply(scan_ref: &str) -> Reply {
    Reply::Respond {
        status: 201,
        headers: vec![("content-type", "application/json".into())],
        body: format!(
            r#"{{"authToken":"tok-{scan_ref}","scanRef":"{scan_ref}","clientId":"user-1","expiryTime":3600,"sessionLength":600}}"#
        )
        .into(),
    }
}

async fn create_token(url: String) -> Answer {
    let answer = send(Method::POST, &url, &[BEARER], r#"{"clientId":"user-1"}"#).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer
}

fn body(scan_ref: &str, n: u32) -> String {
    format!(
        r#"{{"final":false,"status":{{"overall":"REVIEWING"}},"scanRef":"{scan_ref}","n":{n}}}"#
    )
}

/// Posts `body` to `addr`'s webhook listener as iDenfy would.
async fn post_hook(addr: std::net::SocketAddr, body: &str) -> Answer {
    let signature = sign(ACCOUNT_KEY.as_bytes(), body.as_bytes());
    let headers = [
        ("content-type", "application/json"),
        ("idenfy-event-type", "IDENTIFICATION_AUTO_FINISHED"),
        ("idenfy-signature", signature.as_str()),
    ];
    let url = format!("http://{addr}/webhooks/idenfy/main");
    send(Method::POST, &url, &headers, body.to_owned()).await
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 30 s"))
}

/// Waits until `key` exists in Redis.
async fn key_stored(redis: &RedisServer, key: &str) {
    let mut conn = redis.connection();
    for _ in 0..500 {
        let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut conn).unwrap();
        if exists {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{key} not stored in 10 s");
}

fn text_of(r: &Recorded) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}

fn signed_for_the_team(r: &Recorded) -> bool {
    r.headers["idenfy-signature"].to_str().unwrap() == sign(PAYMENTS_KEY.as_bytes(), &r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_accepted_by_a_replica_that_died_is_delivered_by_the_other_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(token_reply("scan-1"));
    let receiver = MockUpstream::start().await;
    // A's first attempt fails; A would try again only after 2 s.
    receiver.push(Reply::json(503, "{}"));
    let dir = tempfile::tempdir().unwrap();
    let a_file = dir.path().join("a.toml");
    let a_text = config(&upstream, &redis, &receiver.url(), "retry_base = \"2s\"");
    std::fs::write(&a_file, &a_text).unwrap();
    let mut a = GatewayProcess::start(&a_file, &[]);

    // The session is created through A, which stores the scanRef's team in Redis.
    create_token(a.url("/api/v2/token")).await;
    key_stored(&redis, "idenfy-gateway:{webhooks}:wh:route:scan-1").await;
    let first = body("scan-1", 1);
    let ack = post_hook(a.webhook.expect("A's webhook listener"), &first).await;
    assert_eq!(ack.status, StatusCode::OK);
    // A holds it: its attempt reached the team, and failed.
    within("A's attempt", receiver.wait_for(1)).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    // B, started after A's death, accepts a second webhook of the same session at once.
    let b_text = config(&upstream, &redis, &receiver.url(), "retry_base = \"10ms\"");
    let b = TestGateway::start(&b_text).await;
    wait_for_backend(&b, 1.0).await;
    let second = body("scan-1", 2);
    let ack = post_hook(b.running.webhook_addr.unwrap(), &second).await;
    assert_eq!(ack.status, StatusCode::OK);

    // B takes A's delivery over once A's claim is idle, and delivers the two in order: the
    // second waited for the first although B held it from the start.
    within("B's deliveries", receiver.wait_for(3)).await;
    let seen = receiver.received();
    let bodies: Vec<String> = seen.iter().map(text_of).collect();
    assert_eq!(bodies, [first.clone(), first, second]);
    assert!(seen.iter().all(signed_for_the_team));
    let id = |r: &Recorded| {
        r.headers[X_GATEWAY_DELIVERY_ID]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id(&seen[0]), id(&seen[1]), "one webhook, one delivery id");
    assert_ne!(id(&seen[1]), id(&seen[2]));
    wait_for_metric(&b, "idenfy_gateway_webhooks_delivered_total", 2.0).await;
    // Settled: off the stream, nothing pending in the group.
    let mut conn = redis.connection();
    let queued: u64 = redis::cmd("XLEN")
        .arg("idenfy-gateway:{webhooks}:wh:queue")
        .query(&mut conn)
        .unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_to_the_other_replica_is_queued_once_and_routed_by_what_the_first_learnt() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(token_reply("scan-2"));
    let receiver = MockUpstream::start().await;
    // Webhooks for sessions no team created here go to dead letters: a delivery proves the
    // route was found.
    let config = config(&upstream, &redis, &receiver.url(), "unknown = \"dead\"");
    let (a, b) = (
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
    );
    wait_for_backend(&a, 1.0).await;
    wait_for_backend(&b, 1.0).await;
    create_token(a.url("/api/v2/token")).await;
    key_stored(&redis, "idenfy-gateway:{webhooks}:wh:route:scan-2").await;

    let hook = body("scan-2", 1);
    for gw in [&b, &a, &b] {
        let ack = post_hook(gw.running.webhook_addr.unwrap(), &hook).await;
        assert_eq!(ack.status, StatusCode::OK);
    }
    within("the delivery", receiver.wait_for(1)).await;
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let sum = |name: &str| metric(&ma, name) + metric(&mb, name);
    assert_eq!(sum("idenfy_gateway_webhooks_received_total"), 3.0);
    assert_eq!(sum("idenfy_gateway_webhooks_duplicates_total"), 2.0);
    for _ in 0..250 {
        let delivered = metric(
            &a.metrics().await,
            "idenfy_gateway_webhooks_delivered_total",
        ) + metric(
            &b.metrics().await,
            "idenfy_gateway_webhooks_delivered_total",
        );
        if delivered >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once only, to the team that created the session, byte for byte, signed with its key.
    assert_eq!(receiver.count(), 1);
    let got = &receiver.received()[0];
    assert_eq!(text_of(got), hook);
    assert!(signed_for_the_team(got));
    let dead = sum("idenfy_gateway_webhooks_dead_total");
    assert_eq!(dead, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_buried_by_one_replica_is_listed_and_resent_by_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(token_reply("scan-3"));
    let receiver = MockUpstream::start().await;
    // 410: the endpoint says the request itself is gone: given up at once.
    receiver.push(Reply::json(410, "{}"));
    let a_text = config(&upstream, &redis, &receiver.url(), "");
    let a = TestGateway::start(&a_text).await;
    wait_for_backend(&a, 1.0).await;
    create_token(a.url("/api/v2/token")).await;
    key_stored(&redis, "idenfy-gateway:{webhooks}:wh:route:scan-3").await;
    let hook = body("scan-3", 1);
    let ack = post_hook(a.running.webhook_addr.unwrap(), &hook).await;
    assert_eq!(ack.status, StatusCode::OK);
    wait_for_metric(&a, "idenfy_gateway_webhooks_dead_total", 1.0).await;
    a.running.shutdown().await;

    let b = TestGateway::start(&config(&upstream, &redis, &receiver.url(), "")).await;
    wait_for_backend(&b, 1.0).await;
    let admin = format!("http://{}", b.running.admin_addr);
    let listed = send(Method::GET, &format!("{admin}/webhooks/dead"), &[], "").await;
    assert_eq!(listed.status, StatusCode::OK);
    let dead = listed.json()["dead"].as_array().expect("a list").clone();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "refused_410");
    assert_eq!(dead[0]["team"], "payments");
    assert_eq!(dead[0]["scanRef"], "scan-3");
    assert!(
        !listed.body.windows(4).any(|w| w == b"\"n\":"),
        "no body listed"
    );
    let id = dead[0]["id"].as_str().unwrap();
    let missing = send(
        Method::POST,
        &format!("{admin}/webhooks/dead/nope/retry"),
        &[],
        "",
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let retried = send(
        Method::POST,
        &format!("{admin}/webhooks/dead/{id}/retry"),
        &[],
        "",
    )
    .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    within("the re-send", receiver.wait_for(2)).await;
    let seen = receiver.received();
    assert_eq!(text_of(&seen[1]), hook);
    assert_eq!(
        seen[1].headers[X_GATEWAY_DELIVERY_ID],
        seen[0].headers[X_GATEWAY_DELIVERY_ID]
    );
    wait_for_metric(&b, "idenfy_gateway_webhooks_delivered_total", 1.0).await;
    let listed = send(Method::GET, &format!("{admin}/webhooks/dead"), &[], "").await;
    assert_eq!(listed.json()["dead"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_a_webhook_is_not_acknowledged_so_idenfy_sends_it_again() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    let receiver = MockUpstream::start().await;
    let gw = TestGateway::start(&config(
        &upstream,
        &redis,
        &receiver.url(),
        "unknown = \"payments\"",
    ))
    .await;
    wait_for_backend(&gw, 1.0).await;
    redis.kill();
    let hook = body("scan-4", 1);
    let refused = post_hook(gw.running.webhook_addr.unwrap(), &hook).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("x-gateway-error"), "webhook_not_stored");
    // Redis back (empty): the next attempt of iDenfy's is stored and delivered.
    redis.restart();
    wait_for_backend(&gw, 1.0).await;
    let ack = post_hook(gw.running.webhook_addr.unwrap(), &hook).await;
    assert_eq!(ack.status, StatusCode::OK);
    within("the delivery", receiver.wait_for(1)).await;
    assert_eq!(text_of(&receiver.received()[0]), hook);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_leaves_its_deliveries_to_the_other_at_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(token_reply("scan-5"));
    let receiver = MockUpstream::start().await;
    receiver.push(Reply::json(503, "{}"));
    // Claims of a dead replica would be taken over only after an hour: within the test, only
    // the stopping replica's release hands its delivery over.
    let text = config(&upstream, &redis, &receiver.url(), "retry_base = \"1s\"")
        .replace("reclaim_after = \"1s\"", "reclaim_after = \"1h\"");
    let a = TestGateway::start(&text).await;
    wait_for_backend(&a, 1.0).await;
    create_token(a.url("/api/v2/token")).await;
    key_stored(&redis, "idenfy-gateway:{webhooks}:wh:route:scan-5").await;
    let hook = body("scan-5", 1);
    let ack = post_hook(a.running.webhook_addr.unwrap(), &hook).await;
    assert_eq!(ack.status, StatusCode::OK);
    within("A's attempt", receiver.wait_for(1)).await;
    a.running.shutdown().await;

    let b = TestGateway::start(&text).await;
    wait_for_backend(&b, 1.0).await;
    within("B's delivery", receiver.wait_for(2)).await;
    assert_eq!(text_of(&receiver.received()[1]), hook);
    wait_for_metric(&b, "idenfy_gateway_webhooks_delivered_total", 1.0).await;
}
