//! Tests of the account limit and the account pause.

use super::*;
use crate::retry::{RetryLayer, RetryMetrics, X_GATEWAY_ATTEMPTS};

#[tokio::test(start_paused = true)]
async fn an_idenfy_429_holds_every_attempt_on_the_account() {
    let registry = Registry::new();
    let metrics = LimitMetrics::new(&registry).unwrap();
    let layer = AccountLimitLayer::new(
        &[account(100, 100)],
        &limits(Duration::from_secs(5)),
        &retry_cfg(),
        &metrics,
    );
    let (svc, log) = upstream(Some((429, "", Some("2"))));
    let svc = layer.layer(svc);
    let res = svc.clone().oneshot(request(0, 0)).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "passed through"
    );
    let paused = [("account", "main")];
    assert_eq!(
        counter(&registry, "idenfy_gateway_account_paused", &paused),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another team, same account: waits until the pause ends.
    let res = svc.clone().oneshot(request(1, 1)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let times: Vec<_> = log.lock().unwrap().iter().map(|(at, ..)| *at).collect();
    assert_eq!(times, [Duration::ZERO, Duration::from_secs(2)]);
    tokio::task::yield_now().await;
    assert_eq!(
        counter(&registry, "idenfy_gateway_account_paused", &paused),
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_longer_than_max_wait_is_refused_with_the_time_left() {
    let metrics = LimitMetrics::new(&Registry::new()).unwrap();
    let layer = AccountLimitLayer::new(
        &[account(100, 100)],
        &limits(Duration::from_secs(1)),
        &retry_cfg(),
        &metrics,
    );
    let (svc, log) = upstream(Some((429, "", Some("2"))));
    let svc = layer.layer(svc);
    svc.clone().oneshot(request(0, 0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = svc.oneshot(request(1, 1)).await.unwrap_err();
    let GatewayError::RateLimited { limit, retry_after } = err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(
        (limit, retry_after),
        (Limit::Account, Duration::from_millis(1900))
    );
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_without_retry_after_pauses_for_the_backoff_base() {
    let metrics = LimitMetrics::new(&Registry::new()).unwrap();
    let layer = AccountLimitLayer::new(
        &[account(100, 100)],
        &limits(Duration::from_secs(5)),
        &retry_cfg(),
        &metrics,
    );
    let body = r#"{"identifier":"TOO_MANY_REQUESTS","message":"Requests per hour limit has been reached."}"#;
    let (svc, log) = upstream(Some((400, body, None)));
    let svc = layer.layer(svc);
    let res = svc.clone().oneshot(request(0, 0)).await.unwrap();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        &bytes[..],
        body.as_bytes(),
        "the caller still gets the body"
    );
    svc.oneshot(request(0, 1)).await.unwrap();
    let times: Vec<_> = log.lock().unwrap().iter().map(|(at, ..)| *at).collect();
    assert_eq!(times, [Duration::ZERO, Duration::from_millis(200)]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_idenfy_429_waits_out_the_pause() {
    let metrics = LimitMetrics::new(&Registry::new()).unwrap();
    let account_limit = AccountLimitLayer::new(
        &[account(100, 100)],
        &limits(Duration::from_secs(5)),
        &retry_cfg(),
        &metrics,
    );
    let retry = RetryLayer::new(&retry_cfg(), RetryMetrics::new(&Registry::new()).unwrap());
    let (svc, log) = upstream(Some((429, "", Some("2"))));
    let svc = tower::ServiceBuilder::new()
        .layer(retry)
        .layer(account_limit)
        // The loop shares the request between attempts; the mock takes its own.
        .map_request(Arc::unwrap_or_clone)
        .service(svc);
    let res = svc.oneshot(request(0, 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[X_GATEWAY_ATTEMPTS], "2");
    let times: Vec<_> = log.lock().unwrap().iter().map(|(at, ..)| *at).collect();
    assert_eq!(times, [Duration::ZERO, Duration::from_secs(2)]);
}
