//! Tests of the retry loop: a scripted inner service on paused tokio time.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use http::{header, StatusCode};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::*;
use crate::context::Route;
use crate::error::{Limit, X_GATEWAY_ERROR};

/// What the scripted upstream answers on one attempt.
#[derive(Clone)]
enum Step {
    Answer(u16, &'static str, Option<&'static str>),
    Fail(GatewayError),
    /// No answer: the attempt ends at the request deadline, as the upstream client ends it.
    Hang,
}

fn ok() -> Step {
    Step::Answer(200, r#"{"authToken":"t"}"#, None)
}

fn status(code: u16) -> Step {
    Step::Answer(code, "", None)
}

/// What the scripted upstream saw on one attempt.
struct Seen {
    at: Duration,
    req: Arc<Request<Bytes>>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An inner service answering `steps` in order, repeating the last one, and recording each call.
fn upstream(
    steps: Vec<Step>,
) -> (
    impl Service<Arc<Request<Bytes>>, Response = Response<Body>, Error = GatewayError, Future: Send>
        + Clone
        + Send
        + 'static,
    Log,
) {
    let log: Log = Arc::default();
    let start = Instant::now();
    let svc = tower::service_fn({
        let log = log.clone();
        move |req: Arc<Request<Bytes>>| {
            let mut seen = log.lock().unwrap();
            let step = steps[seen.len().min(steps.len() - 1)].clone();
            let deadline = req.deadline();
            seen.push(Seen {
                at: start.elapsed(),
                req,
            });
            async move { answer(step, deadline).await }
        }
    });
    (svc, log)
}

async fn answer(step: Step, deadline: Option<Deadline>) -> Answer {
    match step {
        Step::Answer(code, body, retry_after) => {
            let mut res = Response::new(Body::full(body));
            *res.status_mut() = StatusCode::from_u16(code).unwrap();
            let headers = res.headers_mut();
            headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            headers.insert("x-upstream", "idenfy".parse().unwrap());
            if let Some(after) = retry_after {
                headers.insert(header::RETRY_AFTER, after.parse().unwrap());
            }
            Ok(res)
        }
        Step::Fail(err) => Err(err),
        Step::Hang => match deadline {
            Some(d) => {
                tokio::time::sleep_until(d.0).await;
                Err(GatewayError::DeadlineExceeded)
            }
            None => std::future::pending().await,
        },
    }
}

fn cfg() -> config::Retry {
    config::Retry {
        max_attempts: NonZeroU32::new(4).unwrap(),
        base: Duration::from_millis(200),
        cap: Duration::from_secs(5),
        budget_ratio: 0.2,
        min_retries_per_second: 10,
        retry_token_after_send: false,
    }
}

fn layer(cfg: &config::Retry) -> (RetryLayer, RetryMetrics) {
    let metrics = RetryMetrics::new(&prometheus::Registry::new()).unwrap();
    (RetryLayer::new(cfg, metrics.clone()), metrics)
}

fn request(kind: RouteKind, deadline: Option<Duration>) -> Request<Bytes> {
    let mut req = Request::post("/api/v2/token")
        .header("content-type", "application/json")
        .body(Bytes::from_static(br#"{"clientId":"c-1"}"#))
        .unwrap();
    let context = req.context_mut();
    context.route = Some(Route {
        kind,
        label: "test",
    });
    context.deadline = deadline.map(|d| Deadline(Instant::now() + d));
    req
}

fn attempts(res: &Response<Body>) -> &str {
    res.headers()[X_GATEWAY_ATTEMPTS].to_str().unwrap()
}

async fn body(res: Response<Body>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

async fn run(cfg: &config::Retry, steps: Vec<Step>, req: Request<Bytes>) -> (Answer, Log) {
    let (svc, log) = upstream(steps);
    let res = layer(cfg).0.layer(svc).oneshot(req).await;
    (res, log)
}

#[tokio::test(start_paused = true)]
async fn retries_503_and_502_then_succeeds_in_three_attempts() {
    let steps = vec![status(503), status(502), ok()];
    let (res, log) = run(&cfg(), steps, request(RouteKind::Other, None)).await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), "3");
    assert_eq!(&body(res).await[..], br#"{"authToken":"t"}"#);
    let seen = log.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for s in seen.iter() {
        assert_is_the_request_sent(&s.req);
    }
}

/// What `request(RouteKind::Other | …, _)` builds, whole: method, target, header, body, route.
fn assert_is_the_request_sent(req: &Request<Bytes>) {
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri(), "/api/v2/token");
    assert_eq!(req.headers()["content-type"], "application/json");
    assert_eq!(&req.body()[..], br#"{"clientId":"c-1"}"#);
    assert_eq!(req.route().unwrap().label, "test");
}

/// The last attempt allowed is sent the request itself rather than a copy: it must be whole.
#[tokio::test(start_paused = true)]
async fn the_last_allowed_attempt_sends_the_same_request() {
    for max in [1, 2] {
        let mut cfg = cfg();
        cfg.max_attempts = NonZeroU32::new(max).unwrap();
        let (res, log) = run(&cfg, vec![status(503)], request(RouteKind::Other, None)).await;
        assert_eq!(attempts(&res.unwrap()), max.to_string());
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), max as usize);
        for s in seen.iter() {
            assert_is_the_request_sent(&s.req);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after_before_the_next_attempt() {
    let steps = vec![Step::Answer(429, "", Some("1")), ok()];
    let (res, log) = run(&cfg(), steps, request(RouteKind::Other, None)).await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    let seen = log.lock().unwrap();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn retries_400_too_many_requests() {
    let throttled = r#"{"identifier":"TOO_MANY_REQUESTS","message":"Requests per hour limit has been reached."}"#;
    let steps = vec![Step::Answer(400, throttled, None), ok()];
    let (res, log) = run(&cfg(), steps, request(RouteKind::KycToken, None)).await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), "2");
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn never_retried_answers_pass_through_after_one_attempt_byte_for_byte() {
    let cases = [
        (
            400,
            r#"{"identifier":"BAD_VALUE","message":"firstName has digits"}"#,
        ),
        (401, r#"{"message":"Invalid authorization credentials"}"#),
        (
            402,
            r#"{"message":"Action not allowed due to lack of funds or exceeded limit."}"#,
        ),
        (403, r#"{"message":"Partner inactive"}"#),
        (404, r#"{"identifier":"NOT_FOUND","message":"x"}"#),
        (409, r#"{"message":"Client ID already exists"}"#),
        (422, r#"{"identifier":"VALIDATION_ERROR","message":"x"}"#),
        (
            400,
            r#"{"identifier":"PERMISSIONS_ERROR","message":"Partner reached token limit."}"#,
        ),
    ];
    for (code, text) in cases {
        let mut eager = cfg();
        eager.retry_token_after_send = true;
        let steps = vec![Step::Answer(code, text, None), ok()];
        let (res, log) = run(&eager, steps, request(RouteKind::Other, None)).await;
        let res = res.unwrap();
        assert_eq!(log.lock().unwrap().len(), 1, "{code} {text}");
        assert_eq!(res.status().as_u16(), code);
        assert_eq!(attempts(&res), "1");
        assert_eq!(res.headers()["x-upstream"], "idenfy");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(&body(res).await[..], text.as_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_an_always_failing_upstream() {
    let (svc, log) = upstream(vec![status(500)]);
    let (layer, metrics) = layer(&cfg());
    let res = layer
        .layer(svc)
        .oneshot(request(RouteKind::Other, None))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(attempts(&res), "4");
    assert_eq!(log.lock().unwrap().len(), 4);
    assert_eq!(metrics.retries(policy::RetryReason::Status5xx), 3);
    assert_eq!(metrics.denied_count(Denied::MaxAttempts), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_gaps_vary_and_respect_the_cap() {
    let mut cfg = cfg();
    cfg.max_attempts = NonZeroU32::new(8).unwrap();
    cfg.cap = Duration::from_millis(700);
    cfg.min_retries_per_second = 100;
    let backoff = Backoff {
        base: cfg.base,
        cap: cfg.cap,
    };
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let (res, log) = run(&cfg, vec![status(503)], request(RouteKind::Other, None)).await;
        assert_eq!(attempts(&res.unwrap()), "8");
        let seen = log.lock().unwrap();
        for (n, pair) in seen.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            assert!(gap <= backoff.ceiling(n as u32), "gap {n}: {gap:?}");
            assert!(gap <= cfg.cap);
            gaps.push(gap);
        }
    }
    let distinct: std::collections::HashSet<_> = gaps.iter().collect();
    assert!(distinct.len() > gaps.len() / 2, "full jitter: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_cannot_finish_before_the_deadline_is_not_started() {
    let steps = vec![Step::Answer(503, "down", Some("5")), ok()];
    let start = Instant::now();
    let req = request(RouteKind::Other, Some(Duration::from_secs(3)));
    let (res, log) = run(&cfg(), steps, req).await;
    let res = res.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "no pointless wait");
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the last upstream answer"
    );
    assert_eq!(attempts(&res), "1");
    assert_eq!(&body(res).await[..], b"down");
}

/// The cut itself is the upstream client's (see `tests/upstream.rs`); here, what the loop makes of
/// it: a final 504 `deadline` with the attempt counted, no retry.
#[tokio::test(start_paused = true)]
async fn an_attempt_cut_off_by_the_deadline_answers_504() {
    let start = Instant::now();
    let req = request(RouteKind::Other, Some(Duration::from_secs(2)));
    let (res, log) = run(&cfg(), vec![Step::Hang, ok()], req).await;
    let res = res.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(log.lock().unwrap().len(), 1, "not retried");
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()[X_GATEWAY_ERROR], "deadline");
    assert_eq!(attempts(&res), "1");
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_without_time_left() {
    let req = request(RouteKind::Other, Some(Duration::from_millis(50)));
    let (res, log) = run(&cfg(), vec![ok()], req).await;
    assert!(matches!(res, Err(GatewayError::DeadlineExceeded)));
    assert_eq!(log.lock().unwrap().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn budget_bounds_retries_during_a_full_outage() {
    let mut cfg = cfg();
    cfg.min_retries_per_second = 0;
    let (svc, log) = upstream(vec![status(503)]);
    let (layer, metrics) = layer(&cfg);
    let svc = layer.layer(svc);
    let mut requests = JoinSet::new();
    for _ in 0..200 {
        requests.spawn(svc.clone().oneshot(request(RouteKind::Other, None)));
    }
    while let Some(res) = requests.join_next().await {
        assert_eq!(
            res.unwrap().unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let calls = log.lock().unwrap().len();
    assert!(calls > 200, "some retries went: {calls}");
    assert!(calls <= 240, "at most 1.2x the requests: {calls}");
    assert!(metrics.denied_count(Denied::Budget) > 0);
}

#[tokio::test(start_paused = true)]
async fn token_request_is_not_retried_after_send_by_default() {
    for failure in [
        status(503),
        Step::Fail(GatewayError::UpstreamTimedOut),
        Step::Fail(GatewayError::UpstreamProtocol),
    ] {
        let (res, log) = run(
            &cfg(),
            vec![failure, ok()],
            request(RouteKind::KycToken, None),
        )
        .await;
        let res = res.unwrap();
        assert_eq!(log.lock().unwrap().len(), 1);
        assert_ne!(res.status(), StatusCode::OK);
        assert_eq!(attempts(&res), "1");
    }
}

#[tokio::test(start_paused = true)]
async fn token_request_is_retried_after_send_when_switched_on() {
    let mut eager = cfg();
    eager.retry_token_after_send = true;
    for failure in [status(503), Step::Fail(GatewayError::UpstreamTimedOut)] {
        let req = request(RouteKind::KybToken, None);
        let (res, log) = run(&eager, vec![failure, ok()], req).await;
        assert_eq!(res.unwrap().status(), StatusCode::OK);
        assert_eq!(log.lock().unwrap().len(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn token_request_that_created_nothing_is_retried_by_default() {
    for failure in [Step::Fail(GatewayError::UpstreamConnect), status(429)] {
        let req = request(RouteKind::KycToken, None);
        let (res, log) = run(&cfg(), vec![failure, ok()], req).await;
        assert_eq!(res.unwrap().status(), StatusCode::OK);
        assert_eq!(log.lock().unwrap().len(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_final_error_becomes_a_response_with_the_attempt_count() {
    let steps = vec![Step::Fail(GatewayError::UpstreamConnect)];
    let (res, log) = run(&cfg(), steps, request(RouteKind::Other, None)).await;
    let res = res.unwrap();
    assert_eq!(log.lock().unwrap().len(), 4);
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(res.headers()[X_GATEWAY_ERROR], "upstream_connect");
    assert_eq!(attempts(&res), "4");
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_by_the_account_limit_returns_the_last_upstream_answer() {
    let refused = GatewayError::RateLimited {
        limit: Limit::Account,
        retry_after: Duration::from_secs(3),
    };
    let steps = vec![Step::Answer(503, "down", None), Step::Fail(refused)];
    let (svc, log) = upstream(steps);
    let (layer, metrics) = layer(&cfg());
    let res = layer
        .layer(svc)
        .oneshot(request(RouteKind::Other, None))
        .await;
    let res = res.unwrap();
    assert_eq!(log.lock().unwrap().len(), 2);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), "1");
    assert_eq!(&body(res).await[..], b"down");
    assert_eq!(
        metrics.retries(policy::RetryReason::Status5xx),
        0,
        "never sent, not a retry"
    );
    assert_eq!(metrics.denied_count(Denied::AccountLimit), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_are_counted_when_sent_and_add_up_to_the_attempts_header() {
    let refused = GatewayError::RateLimited {
        limit: Limit::Account,
        retry_after: Duration::from_secs(1),
    };
    let (layer, metrics) = layer(&cfg());
    let mut extra_attempts = 0;
    for steps in [
        vec![status(429), status(429), ok()],
        vec![status(429), Step::Fail(refused.clone())],
        vec![status(503), status(429), Step::Fail(refused)],
        vec![ok()],
    ] {
        let (svc, _) = upstream(steps);
        let res = layer.layer(svc).oneshot(request(RouteKind::Other, None));
        extra_attempts += attempts(&res.await.unwrap()).parse::<u64>().unwrap() - 1;
    }
    let counted: u64 = policy::RetryReason::ALL
        .iter()
        .map(|r| metrics.retries(*r))
        .sum();
    assert_eq!((counted, extra_attempts), (3, 3));
    assert_eq!(metrics.retries(policy::RetryReason::Status429), 2);
    assert_eq!(metrics.retries(policy::RetryReason::Status5xx), 1);
    assert_eq!(metrics.denied_count(Denied::AccountLimit), 2);
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_refused_by_the_account_limit_stays_an_error() {
    let refused = GatewayError::RateLimited {
        limit: Limit::Account,
        retry_after: Duration::from_secs(3),
    };
    let (res, _) = run(
        &cfg(),
        vec![Step::Fail(refused)],
        request(RouteKind::Other, None),
    )
    .await;
    assert!(matches!(
        res,
        Err(GatewayError::RateLimited {
            limit: Limit::Account,
            ..
        })
    ));
}
