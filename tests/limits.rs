//! iDenfy's limits absorbed, end to end: retries per attempt against a scripted upstream,
//! the retry budget, the deadline, the team and account quotas, and the account-wide pause.
//! Backoff is configured in milliseconds so these run fast; the exact schedules (full jitter,
//! caps, FIFO spacing) are proven with paused time in the unit tests.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use support::gateway::{
    config_text, metric, send, with_mock_upstream, Answer, TestGateway, ACCOUNT_AND_TEAM, BEARER,
    UPSTREAM_AUTH,
};
use support::upstream::{refusing_upstream, MockUpstream, Reply};

const FAST_RETRY: &str = "[retry]\nmax_attempts = 4\nbase = \"1ms\"\ncap = \"5ms\"\n";

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    with_mock_upstream(extra).await
}

async fn status(gw: &TestGateway, headers: &[(&str, &str)]) -> Answer {
    send(
        Method::POST,
        &gw.url("/api/v2/status"),
        headers,
        r#"{"scanRef":"s"}"#,
    )
    .await
}

#[tokio::test]
async fn retries_503_and_502_then_succeeds_on_the_third_attempt() {
    let (upstream, gw) = setup(FAST_RETRY).await;
    upstream.push(Reply::json(503, "{}"));
    upstream.push(Reply::json(502, "{}"));
    upstream.push(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let res = status(&gw, &[BEARER]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body.as_ref(), br#"{"status":"APPROVED"}"#);
    assert_eq!(res.header("x-gateway-attempts"), "3");
    assert_eq!(upstream.count(), 3);
    // Every attempt sends the same request, with the account's credentials alone (the caller's
    // bearer token never leaves the gateway, on a retry either).
    let seen = upstream.received();
    assert!(seen.iter().all(|r| r.body == seen[0].body
        && r.headers["authorization"] == UPSTREAM_AUTH
        && r.headers.get_all("authorization").iter().count() == 1));
}

#[tokio::test]
async fn retries_idenfys_400_too_many_requests() {
    let (upstream, gw) = setup(FAST_RETRY).await;
    upstream.push(Reply::json(400, r#"{"identifier":"TOO_MANY_REQUESTS","message":"Requests per hour limit has been reached"}"#));
    let res = status(&gw, &[BEARER]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-gateway-attempts"), "2");
}

#[tokio::test]
async fn passes_never_retried_answers_through_after_one_attempt() {
    let (upstream, gw) = setup(FAST_RETRY).await;
    let cases = [
        (400, r#"{"identifier":"BAD_VALUE","message":"scanRef"}"#),
        (
            400,
            r#"{"identifier":"PERMISSIONS_ERROR","message":"Partner reached token limit."}"#,
        ),
        (401, r#"{"message":"Invalid authorization credentials"}"#),
        (
            402,
            r#"{"message":"Action not allowed due to lack of funds or exceeded limit."}"#,
        ),
        (403, r#"{"message":"Partner inactive"}"#),
        (404, r#"{"identifier":"NOT_FOUND","message":"x"}"#),
        (409, r#"{"message":"Client ID already exists"}"#),
        (422, r#"{"message":"unprocessable"}"#),
    ];
    for (i, (code, body)) in cases.iter().enumerate() {
        upstream.push(Reply::json(*code, body));
        let res = status(&gw, &[BEARER]).await;
        assert_eq!(res.status.as_u16(), *code);
        assert_eq!(res.body.as_ref(), body.as_bytes(), "{code}");
        assert_eq!(res.header("x-gateway-attempts"), "1", "{code} {body}");
        assert_eq!(upstream.count(), i + 1, "{code} {body} was retried");
    }
}

#[tokio::test]
async fn max_attempts_bounds_an_upstream_that_always_fails() {
    let (upstream, gw) = setup(FAST_RETRY).await;
    upstream.set_default(Reply::json(
        500,
        r#"{"identifier":"INTERNAL_ERROR","message":"x"}"#,
    ));
    let res = status(&gw, &[BEARER]).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.json()["identifier"], "INTERNAL_ERROR");
    assert_eq!(res.header("x-gateway-attempts"), "4");
    assert_eq!(upstream.count(), 4);
}

#[tokio::test]
async fn waits_at_least_the_upstreams_retry_after() {
    let (upstream, gw) = setup(FAST_RETRY).await;
    upstream.push(Reply::Respond {
        status: 503,
        headers: vec![("retry-after", "1".into())],
        body: "{}".into(),
    });
    let res = status(&gw, &[BEARER]).await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = upstream.received();
    assert!(seen[1].at.duration_since(seen[0].at) >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_hanging_upstream_ends_in_504_at_the_deadline() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::Hang);
    let text = config_text(&upstream.url(), &format!("{ACCOUNT_AND_TEAM}{FAST_RETRY}"))
        .replace("attempt_timeout = \"2s\"", "attempt_timeout = \"200ms\"")
        .replace("deadline = \"5s\"", "deadline = \"700ms\"");
    let gw = TestGateway::start(&text).await;
    let res = status(&gw, &[BEARER]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        upstream.count() >= 2,
        "timeouts are retried within the deadline"
    );
    // A caller may shorten the deadline, never lengthen it.
    let before = upstream.count();
    let res = status(&gw, &[BEARER, ("x-gateway-timeout", "150ms")]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(upstream.count(), before + 1);
}

#[tokio::test]
async fn a_refused_connection_ends_in_502_after_bounded_retries() {
    let (_refusing, url) = refusing_upstream();
    let gw = TestGateway::start(&config_text(
        &url,
        &format!("{ACCOUNT_AND_TEAM}{FAST_RETRY}"),
    ))
    .await;
    let res = status(&gw, &[BEARER]).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_connect");
    assert_eq!(res.header("x-gateway-attempts"), "4");
}

#[tokio::test]
async fn the_retry_budget_bounds_load_during_an_outage() {
    let extra = "[retry]\nmax_attempts = 4\nbase = \"1ms\"\ncap = \"2ms\"\nbudget_ratio = 0.2\nmin_retries_per_second = 1\n";
    let (upstream, gw) = setup(extra).await;
    upstream.set_default(Reply::json(503, "{}"));
    let requests = 100;
    for _ in 0..requests {
        assert_eq!(
            status(&gw, &[BEARER]).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let sent = upstream.count();
    // 1.2 × requests, plus the floor of 1 retry/s over the budget's 10 s window.
    assert!(
        sent <= requests * 12 / 10 + 10,
        "{sent} upstream requests for {requests}"
    );
    assert!(
        metric(
            &gw.metrics().await,
            "idenfy_gateway_retries_denied_total{cause=\"budget\"}"
        ) > 0.0
    );
}

#[tokio::test]
async fn a_token_request_is_not_retried_after_a_5xx_by_default() {
    let (upstream, gw) = setup(FAST_RETRY).await;
    upstream.push(Reply::json(
        500,
        r#"{"identifier":"INTERNAL_ERROR","message":"x"}"#,
    ));
    let res = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"u1"}"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(upstream.count(), 1);

    let (upstream, gw) = setup(&format!("{FAST_RETRY}retry_token_after_send = true\n")).await;
    upstream.push(Reply::json(
        500,
        r#"{"identifier":"INTERNAL_ERROR","message":"x"}"#,
    ));
    upstream.push(Reply::json(
        201,
        r#"{"authToken":"t","scanRef":"s","clientId":"u1","expiryTime":3600}"#,
    ));
    let res = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"u1"}"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_team_over_its_quota_waits_in_line_or_gets_429_with_retry_after() {
    // 50/s burst 5: 20 simultaneous requests need 0.3 s; with max_wait 1 s all pass.
    let (upstream, gw) =
        setup("[[team]]\nname = \"burst\"\ntoken = \"b\"\nrate = \"50/s\"\nburst = 5\n").await;
    let url = gw.url("/api/v2/status");
    let all: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                send(Method::POST, &url, &[("authorization", "Bearer b")], "{}").await
            })
        })
        .collect();
    for r in all {
        assert_eq!(r.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(upstream.count(), 20);
    let text = gw.metrics().await;
    assert!(metric(&text, "idenfy_gateway_limiter_decisions_total{limit=\"team\",name=\"burst\",outcome=\"delayed\"}") > 0.0);

    // 1/m burst 2, max_wait 100ms: two pass, the rest are refused at once.
    let extra = "[[team]]\nname = \"slow\"\ntoken = \"s\"\nrate = \"1/m\"\nburst = 2\n[limits]\nmax_wait = \"100ms\"\n";
    let (upstream, gw) = setup(extra).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = send(
            Method::POST,
            &gw.url("/api/v2/status"),
            &[("authorization", "Bearer s")],
            "{}",
        )
        .await;
        if res.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(res.json()["identifier"], "TOO_MANY_REQUESTS");
            assert_eq!(res.header("x-gateway-error"), "rate_limited_team");
            let after: u64 = res.header("retry-after").parse().unwrap();
            assert!((1..=60).contains(&after), "{after}");
        }
        statuses.push(res.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_noisy_team_does_not_delay_a_quiet_one() {
    let extra = "[[team]]\nname = \"noisy\"\ntoken = \"n\"\nrate = \"1/m\"\nburst = 1\n";
    let (_upstream, gw) = setup(extra).await;
    for _ in 0..5 {
        send(
            Method::POST,
            &gw.url("/api/v2/status"),
            &[("authorization", "Bearer n")],
            "{}",
        )
        .await;
    }
    let quiet = status(&gw, &[BEARER]).await;
    assert_eq!(quiet.status, StatusCode::OK);
    let text = gw.metrics().await;
    let quiet_delayed = "idenfy_gateway_limiter_decisions_total{limit=\"team\",name=\"payments\",outcome=\"delayed\"}";
    assert_eq!(metric(&text, quiet_delayed), 0.0);
    let noisy_refused =
        "idenfy_gateway_limiter_decisions_total{limit=\"team\",name=\"noisy\",outcome=\"refused\"}";
    assert!(metric(&text, noisy_refused) > 0.0);
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_whole_account() {
    let extra = "[[team]]\nname = \"other\"\ntoken = \"o\"\n[retry]\nmax_attempts = 1\n";
    let (upstream, gw) = setup(extra).await;
    upstream.push(Reply::Respond {
        status: 429,
        headers: vec![
            ("retry-after", "1".into()),
            ("content-type", "application/json".into()),
        ],
        body: r#"{"identifier":"TOO_MANY_REQUESTS","message":"x"}"#.into(),
    });
    let first = status(&gw, &[BEARER]).await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    let paused = metric(
        &gw.metrics().await,
        "idenfy_gateway_account_paused{account=\"main\"}",
    );
    assert_eq!(paused, 1.0);
    let other = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[("authorization", "Bearer o")],
        "{}",
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    let seen = upstream.received();
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(900),
        "the other team's request went during the pause"
    );
    let delayed = "idenfy_gateway_limiter_decisions_total{limit=\"account\",name=\"main\",outcome=\"delayed\"}";
    assert!(metric(&gw.metrics().await, delayed) >= 1.0);
}
