//! Fleet mode's round trips for a token request (issue 15): a leader's quota decisions are taken
//! by the script that gives it the fleet's lease, so it costs Redis two commands (that script,
//! then the one that finishes the flight), a replay one, and a leader refused by its team's
//! quota one, holding no lease. Two gateways on a real `redis-server` of the test's own, in
//! front of one scripted upstream; Redis's own counters (`INFO commandstats`) tell what ran.

mod support;

use http::{Method, StatusCode};
use support::commandstats::{commands, counted, reset_commands};
use support::fleet::{account_and_team, fleet};
use support::gateway::{metric, send, Answer, TestGateway, BEARER};
use support::redis_server::RedisServer;
use support::upstream::{MockUpstream, Reply};

const TEAM_KEY: &str = "idenfy-gateway:{main}:team:payments:tat";
const ACCOUNT_KEY: &str = "idenfy-gateway:{main}:account:tat";
/// The quota's own round trips (`DECIDE_FIRST`, `DECIDE`): a leader's are dedup's (`flight`).
const QUOTA_ROUND_TRIPS: &str =
    "idenfy_gateway_state_round_trip_seconds_count{operation=\"quota\"}";

fn token_reply(client_id: &str) -> Reply {
    Reply::Respond {
        status: 201,
        headers: vec![("content-type", "application/json".into())],
        body: format!(
            r#"{{"authToken":"tok-{client_id}","scanRef":"scan-{client_id}","clientId":"{client_id}","expiryTime":3600}}"#
        )
        .into(),
    }
}

async fn token(gw: &TestGateway, client_id: &str) -> Answer {
    let body = format!(r#"{{"clientId":"{client_id}"}}"#);
    send(Method::POST, &gw.url("/api/v2/token"), &[BEARER], body).await
}

fn get(redis: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap()
}

fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis.connection())
        .unwrap()
}

/// What a leader's two scripts run inside Redis, besides themselves: `ENTER` reads the replay
/// entry and the lease, decides both quotas (`TIME`, the two TATs and the pause) and writes the
/// TATs and the lease; `FINISH` stores the token, its session index and when it was last known
/// live (`TIME`), releases the lease and publishes the answer.
const LEADER: [(&str, u64); 7] = [
    ("evalsha", 2),
    ("get", 5),
    ("set", 6),
    ("time", 2),
    ("pttl", 1),
    ("del", 1),
    ("publish", 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leading_token_request_costs_two_round_trips_and_a_replay_one() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    for client_id in ["warm-a", "warm-b", "user-1"] {
        upstream.push(token_reply(client_id));
    }
    // Quotas that last: their keys stay in Redis for the test to read.
    let slow = "rate = \"1/h\"\nburst = 1000";
    let (a, b) = fleet(&upstream, &redis, &account_and_team(slow, slow), "", "").await;
    // Warm-up: each replica loads its scripts once (`NOSCRIPT`, then `SCRIPT LOAD`).
    assert_eq!(token(&a, "warm-a").await.status, StatusCode::CREATED);
    assert_eq!(token(&b, "warm-b").await.status, StatusCode::CREATED);
    let mut conn = redis.connection();
    reset_commands(&mut conn);
    let quota_before = metric(&a.metrics().await, QUOTA_ROUND_TRIPS);

    let led = token(&a, "user-1").await;

    assert_eq!(led.status, StatusCode::CREATED);
    assert_eq!(led.header("x-gateway-dedup"), "leader");
    assert_eq!(commands(&mut conn), counted(&LEADER));
    assert_eq!(metric(&a.metrics().await, QUOTA_ROUND_TRIPS), quota_before);
    // Both cells spent by the one script, at the same instant (Redis's `TIME`).
    let team = get(&redis, TEAM_KEY).expect("the team's quota in redis");
    assert_eq!(get(&redis, ACCOUNT_KEY), Some(team));

    reset_commands(&mut conn);
    let replayed = token(&b, "user-1").await;

    assert_eq!(replayed.status, StatusCode::CREATED);
    assert_eq!(replayed.header("x-gateway-dedup"), "replayed");
    assert_eq!(replayed.body, led.body);
    // One script, which found the entry and its age (for a recheck): no quota read, none spent.
    assert_eq!(
        commands(&mut conn),
        counted(&[("evalsha", 1), ("get", 2), ("time", 1)])
    );
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_refused_by_its_team_holds_no_lease_and_spends_nothing() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    for client_id in ["user-1", "user-2"] {
        upstream.push(token_reply(client_id));
    }
    let quotas = account_and_team("rate = \"1/h\"\nburst = 2", "rate = \"1/h\"\nburst = 1");
    let extra = "[limits]\nmax_wait = \"0s\"\n[retry]\nmax_attempts = 1\n";
    let (a, b) = fleet(&upstream, &redis, &quotas, extra, "").await;
    assert_eq!(token(&a, "user-1").await.status, StatusCode::CREATED);
    let account_before = get(&redis, ACCOUNT_KEY);
    let mut conn = redis.connection();
    reset_commands(&mut conn);

    let refused = token(&b, "user-2").await;

    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("x-gateway-error"), "rate_limited_team");
    assert_eq!(refused.header("retry-after"), "3600");
    assert_eq!(refused.json()["identifier"], "TOO_MANY_REQUESTS");
    // One script: the key was free, the team refused; no lease, nothing written, no `FINISH`.
    assert_eq!(
        commands(&mut conn),
        counted(&[("evalsha", 1), ("get", 3), ("time", 1)])
    );
    assert_eq!(keys(&redis, "*:flight:*"), Vec::<String>::new());
    assert_eq!(get(&redis, ACCOUNT_KEY), account_before);
    assert_eq!(upstream.count(), 1);
    let refusals = "idenfy_gateway_limiter_decisions_total{limit=\"team\",name=\"payments\",outcome=\"refused\"}";
    assert_eq!(metric(&b.metrics().await, refusals), 1.0);

    // The team's quota full again: the next request for the key leads, on either replica.
    redis::cmd("DEL")
        .arg(TEAM_KEY)
        .query::<()>(&mut conn)
        .unwrap();
    reset_commands(&mut conn);
    let led = token(&a, "user-2").await;
    assert_eq!(led.status, StatusCode::CREATED);
    assert_eq!(led.header("x-gateway-dedup"), "leader");
    assert_eq!(led.json()["authToken"], "tok-user-2");
    assert_eq!(commands(&mut conn), counted(&LEADER));
    assert_eq!(upstream.count(), 2);
}
