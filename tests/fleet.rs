//! Fleet mode (issue 15), end to end: two gateways that share nothing but a real `redis-server`
//! (each test starts its own on a free port), in front of one scripted upstream. The shared
//! account quota, the shared pause, and Redis killed and restarted mid-load with either fallback.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::fleet::{account_and_team, fleet, status, wait_for_backend, HIGH};
use support::gateway::{metric, TestGateway};
use support::redis_server::RedisServer;
use support::upstream::{MockUpstream, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_together_keep_to_the_accounts_rate() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let accounts = account_and_team("rate = \"5/s\"\nburst = 5", HIGH);
    let extra = "[limits]\nmax_wait = \"0s\"\n[retry]\nmax_attempts = 1\n";
    let (a, b) = fleet(&upstream, &redis, &accounts, extra, "").await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    // Four callers on each replica, one request every 20 ms each, for 4 s.
    let start = Instant::now();
    let mut callers = Vec::new();
    for i in 0..8 {
        let gw = if i % 2 == 0 { a.clone() } else { b.clone() };
        callers.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            let (mut ok, mut limited) = (0, 0);
            while start.elapsed() < Duration::from_secs(4) {
                pace.tick().await;
                let res = status(&gw).await;
                match res.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert_eq!(res.header("x-gateway-error"), "rate_limited_account");
                        limited += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            (ok, limited)
        }));
    }
    let mut served_by = [0, 0];
    for (i, caller) in callers.into_iter().enumerate() {
        let (ok, limited) = caller.await.unwrap();
        assert!(limited > 0, "caller {i} was never limited");
        served_by[i % 2] += ok;
    }
    let attempts = upstream.count();
    assert!(
        attempts <= 5 * 4 + 5,
        "{attempts} attempts in 4 s at 5/s burst 5"
    );
    // Not refusing everything either: the shared quota was spent, by both replicas.
    assert!(attempts >= 15, "only {attempts} attempts in 4 s at 5/s");
    assert!(served_by[0] > 0 && served_by[1] > 0, "{served_by:?}");
    let text = a.metrics().await;
    assert!(
        metric(
            &text,
            "idenfy_gateway_state_round_trip_seconds_count{operation=\"quota\"}"
        ) > 0.0
    );
    assert_eq!(metric(&text, "idenfy_gateway_state_fallbacks_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_shared_quota_wait_in_one_line_across_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let accounts = account_and_team("rate = \"5/s\"\nburst = 1", HIGH);
    let extra = "[limits]\nmax_wait = \"2s\"\n";
    let (a, b) = fleet(&upstream, &redis, &accounts, extra, "").await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let gw = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { status(&gw).await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    // One cell every 200 ms for the fleet: the fourth attempt went at least three intervals
    // after the first (two separate quotas would have sent two pairs 200 ms apart).
    let seen = upstream.received();
    assert_eq!(seen.len(), 4);
    let span = seen[3].at.duration_since(seen[0].at);
    assert!(
        span >= Duration::from_millis(550),
        "4 attempts within {span:?}"
    );
    let delayed = "idenfy_gateway_limiter_decisions_total{limit=\"account\",name=\"main\",outcome=\"delayed\"}";
    let total = metric(&a.metrics().await, delayed) + metric(&b.metrics().await, delayed);
    assert_eq!(total, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_through_one_replica_pauses_the_account_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.push(Reply::Respond {
        status: 429,
        headers: vec![
            ("retry-after", "2".into()),
            ("content-type", "application/json".into()),
        ],
        body: r#"{"identifier":"TOO_MANY_REQUESTS","message":"x"}"#.into(),
    });
    let accounts = account_and_team(HIGH, HIGH);
    let extra = "[limits]\nmax_wait = \"500ms\"\n[retry]\nmax_attempts = 1\n";
    let (a, b) = fleet(&upstream, &redis, &accounts, extra, "").await;
    let first = status(&a).await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.header("x-gateway-error"), "");
    // B never saw a 429, yet holds the account: refused at once (the pause is longer than
    // its wait budget), nothing sent upstream.
    let held = status(&b).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(held.header("x-gateway-error"), "rate_limited_account");
    let after: u64 = held.header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&after), "retry-after {after}");
    assert_eq!(upstream.count(), 1);
    let mut conn = redis.connection();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("idenfy-gateway:{main}:pause")
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 0 && ttl <= 2000, "pause ttl {ttl}");
}

/// Load on both replicas until `stop`, every answer's status kept.
fn load(gws: [Arc<TestGateway>; 2], stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u16>> {
    tokio::spawn(async move {
        let mut statuses = Vec::new();
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await;
            statuses.push(status(&gws[i % 2]).await.status.as_u16());
            i += 1;
        }
        statuses
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_falls_back_locally_and_comes_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    // The team's quota lasts an hour in Redis: its key is there to be seen.
    let accounts = account_and_team(HIGH, "rate = \"1/h\"\nburst = 100000");
    let (a, b) = fleet(&upstream, &redis, &accounts, "", "").await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let stop = Arc::new(AtomicBool::new(false));
    let running = load([a.clone(), b.clone()], stop.clone());
    upstream.wait_for(20).await;
    let team_key = "idenfy-gateway:{main}:team:payments:tat";
    let exists: bool = redis::cmd("EXISTS")
        .arg(team_key)
        .query(&mut redis.connection())
        .unwrap();
    assert!(exists, "the team's quota is not in redis");

    redis.kill();
    let before = upstream.count();
    upstream.wait_for(before + 20).await;
    wait_for_backend(&a, 0.0).await;
    wait_for_backend(&b, 0.0).await;
    let fallbacks = "idenfy_gateway_state_fallbacks_total{operation=\"quota\"}";
    assert!(metric(&a.metrics().await, fallbacks) > 0.0);

    redis.restart();
    wait_for_backend(&a, 1.0).await;
    wait_for_backend(&b, 1.0).await;
    let before = upstream.count();
    upstream.wait_for(before + 20).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = running.await.unwrap();
    // Every request was answered, none waited past its deadline (504) or failed.
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // The shared state is back: the new (empty) Redis holds the team's quota again.
    let exists: bool = redis::cmd("EXISTS")
        .arg(team_key)
        .query(&mut redis.connection())
        .unwrap();
    assert!(exists, "the team's quota did not come back to redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_refuse_answers_503_state_unavailable() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let accounts = account_and_team(HIGH, HIGH);
    let state = "on_unavailable = \"refuse\"";
    let (a, _b) = fleet(&upstream, &redis, &accounts, "", state).await;
    assert_eq!(status(&a).await.status, StatusCode::OK);

    redis.kill();
    let refused = status(&a).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("x-gateway-error"), "state_unavailable");
    assert_eq!(refused.json()["identifier"], "SERVICE_UNAVAILABLE");
    assert_eq!(refused.header("retry-after"), "1");
    // Once down, it is not asked again per request: refused at once, still.
    assert_eq!(status(&a).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 1);

    redis.restart();
    wait_for_backend(&a, 1.0).await;
    assert_eq!(status(&a).await.status, StatusCode::OK);
    assert_eq!(upstream.count(), 2);
}
