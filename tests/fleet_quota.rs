//! Fleet mode's quota round trip (issue 15): a request's team cell and its first attempt's
//! account cell are decided by one script, so a status request costs Redis exactly one command;
//! a retry adds its own account decision; a refusal by either quota spends nothing of the other.
//! Two gateways on a real `redis-server` of the test's own, in front of one scripted upstream.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use support::commandstats::{commands, reset_commands};
use support::fleet::{account_and_team, fleet, status, status_as, HIGH};
use support::gateway::metric;
use support::redis_server::RedisServer;
use support::upstream::{MockUpstream, Reply};

const GROWTH: (&str, &str) = ("authorization", "Bearer growth-token");
const TEAM_KEY: &str = "idenfy-gateway:{main}:team:payments:tat";
const ACCOUNT_KEY: &str = "idenfy-gateway:{main}:account:tat";
const QUOTA_ROUND_TRIPS: &str =
    "idenfy_gateway_state_round_trip_seconds_count{operation=\"quota\"}";

/// The commands a client sent (round trips): all but those a quota script runs inside Redis.
fn round_trips(commands: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let inside = ["time", "get", "set", "pttl"];
    commands
        .iter()
        .filter(|(name, _)| !inside.contains(&name.as_str()))
        .map(|(name, calls)| (name.clone(), *calls))
        .collect()
}

fn get(redis: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_request_costs_one_redis_round_trip() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    // A live session: an answer saying it is over would also end its replay entry in Redis
    // (dedup's round trip, detached from the answer).
    upstream.set_default(Reply::json(200, r#"{"status":"ACTIVE"}"#));
    // Quotas that last: their keys stay in Redis for the test to read.
    let slow = "rate = \"1/h\"\nburst = 1000";
    let (a, b) = fleet(&upstream, &redis, &account_and_team(slow, slow), "", "").await;
    // Warm-up: each replica loads the script once (`NOSCRIPT`, then `SCRIPT LOAD`).
    assert_eq!(status(&a).await.status, StatusCode::OK);
    assert_eq!(status(&b).await.status, StatusCode::OK);
    let mut conn = redis.connection();
    reset_commands(&mut conn);
    let before = metric(&a.metrics().await, QUOTA_ROUND_TRIPS);

    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(status(gw).await.status, StatusCode::OK);
    }

    let sent = round_trips(&commands(&mut conn));
    assert_eq!(sent, BTreeMap::from([("evalsha".to_string(), 10)]));
    let after = metric(&a.metrics().await, QUOTA_ROUND_TRIPS);
    assert_eq!(after - before, 5.0);
    assert_eq!(upstream.count(), 12);
    // The one script spent both quotas, at the same instant each time (Redis's `TIME`).
    let team = get(&redis, TEAM_KEY).expect("the team's quota in redis");
    assert_eq!(get(&redis, ACCOUNT_KEY), Some(team));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_takes_its_own_account_decision() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"ACTIVE"}"#));
    let extra = "[retry]\nmax_attempts = 2\nbase = \"1ms\"\ncap = \"1ms\"\n";
    let (a, _b) = fleet(&upstream, &redis, &account_and_team(HIGH, HIGH), extra, "").await;
    // Warm-up: both scripts loaded (the retry's on its first use).
    upstream.push(Reply::json(503, r#"{"message":"busy"}"#));
    assert_eq!(status(&a).await.header("x-gateway-attempts"), "2");
    upstream.push(Reply::json(503, r#"{"message":"busy"}"#));
    let mut conn = redis.connection();
    reset_commands(&mut conn);

    let retried = status(&a).await;

    assert_eq!(retried.status, StatusCode::OK);
    assert_eq!(retried.header("x-gateway-attempts"), "2");
    // The team and first attempt's script, then the retry's account decision.
    let sent = round_trips(&commands(&mut conn));
    assert_eq!(sent, BTreeMap::from([("evalsha".to_string(), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_refusal_spends_none_of_the_teams_quota() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let quotas = account_and_team("rate = \"1/h\"\nburst = 1", "rate = \"1/h\"\nburst = 2");
    let extra = "[limits]\nmax_wait = \"0s\"\n[retry]\nmax_attempts = 1\n";
    let (a, b) = fleet(&upstream, &redis, &quotas, extra, "").await;
    assert_eq!(status(&a).await.status, StatusCode::OK);
    let team_before = get(&redis, TEAM_KEY);

    let refused = status(&b).await;

    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("x-gateway-error"), "rate_limited_account");
    assert_eq!(refused.header("retry-after"), "3600");
    assert_eq!(
        get(&redis, TEAM_KEY),
        team_before,
        "the team's cell was spent"
    );
    // The account's quota full again: the team's second cell is still there, then none.
    redis::cmd("DEL")
        .arg(ACCOUNT_KEY)
        .query::<()>(&mut redis.connection())
        .unwrap();
    assert_eq!(status(&b).await.status, StatusCode::OK);
    let team_full = status(&a).await;
    assert_eq!(team_full.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(team_full.header("x-gateway-error"), "rate_limited_team");
    assert_eq!(team_full.header("retry-after"), "3600");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_refusal_spends_none_of_the_accounts_quota() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let quotas = account_and_team("rate = \"1/h\"\nburst = 2", "rate = \"1/h\"\nburst = 1");
    let extra = "[limits]\nmax_wait = \"0s\"\n[retry]\nmax_attempts = 1\n";
    let (a, b) = fleet(&upstream, &redis, &quotas, extra, "").await;
    assert_eq!(status(&a).await.status, StatusCode::OK);
    let account_before = get(&redis, ACCOUNT_KEY);

    let refused = status(&b).await;

    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("x-gateway-error"), "rate_limited_team");
    assert_eq!(refused.header("retry-after"), "3600");
    assert_eq!(get(&redis, ACCOUNT_KEY), account_before);
    // Another team of the account gets the account's second cell: exactly one more spent.
    assert_eq!(status_as(&b, GROWTH).await.status, StatusCode::OK);
    let tat = |value: Option<String>| value.unwrap().parse::<u64>().unwrap();
    let spent = tat(get(&redis, ACCOUNT_KEY)) - tat(account_before);
    assert_eq!(spent, 3_600_000_000, "µs of the account's quota spent");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_attempts_wait_at_the_account_starts_when_the_teams_ends() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    // The second request waits 250 ms for its team's cell, then 250 ms more for the account's:
    // each wait within `max_wait` (as when the two were decided one after the other), though
    // the account's cell is 500 ms away when the request arrives.
    let quotas = account_and_team("rate = \"2/s\"\nburst = 1", "rate = \"4/s\"\nburst = 1");
    let extra = "[limits]\nmax_wait = \"300ms\"\n[retry]\nmax_attempts = 1\n";
    let (a, b) = fleet(&upstream, &redis, &quotas, extra, "").await;

    assert_eq!(status(&a).await.status, StatusCode::OK);
    assert_eq!(status(&b).await.status, StatusCode::OK);

    let seen = upstream.received();
    let apart = seen[1].at.duration_since(seen[0].at);
    assert!(apart >= Duration::from_millis(350), "sent {apart:?} apart");
    let delayed = "idenfy_gateway_limiter_decisions_total{limit=\"team\",name=\"payments\",outcome=\"delayed\"}";
    assert_eq!(metric(&b.metrics().await, delayed), 1.0);
}
