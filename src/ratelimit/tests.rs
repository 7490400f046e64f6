//! Tests of the limit layers on paused tokio time: the team limit and both limits together here,
//! the account limit and its pause in [`account`].

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use prometheus::Registry;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::body::{Body, ResponseFuture};
use crate::config::{self, Rate};
use crate::context::{Caller, ContextExt, Deadline};
use crate::secret::SecretSource;

mod account;

type Answer = Result<Response<Body>, GatewayError>;

/// One call the upstream saw: when, from which team, with which tag.
type Log = Arc<Mutex<Vec<(Duration, usize, u32)>>>;

fn rate(per_second: u32) -> Rate {
    Rate {
        count: NonZeroU32::new(per_second).unwrap(),
        per: Duration::from_secs(1),
    }
}

fn team(name: &str, per_second: u32, burst: u32) -> config::Team {
    config::Team {
        name: name.into(),
        account: 0,
        tokens: Vec::new(),
        token_file: None,
        client_cert_san: None,
        rate: rate(per_second),
        burst: NonZeroU32::new(burst).unwrap(),
        webhook: None,
    }
}

fn account(per_second: u32, burst: u32) -> config::Account {
    config::Account {
        name: "main".into(),
        api_key: SecretSource::File("/run/secrets/idenfy/api-key".into()),
        api_secret: SecretSource::File("/run/secrets/idenfy/api-secret".into()),
        rate: rate(per_second),
        burst: NonZeroU32::new(burst).unwrap(),
        webhook_key: None,
    }
}

fn limits(max_wait: Duration) -> config::Limits {
    config::Limits {
        max_wait,
        max_body: 1 << 20,
    }
}

fn retry_cfg() -> config::Retry {
    config::Retry {
        max_attempts: NonZeroU32::new(4).unwrap(),
        base: Duration::from_millis(200),
        cap: Duration::from_secs(5),
        budget_ratio: 0.2,
        min_retries_per_second: 10,
        retry_token_after_send: false,
    }
}

/// The upstream: answers `first` on its first call, 200 afterwards; logs every call.
fn upstream(
    first: Option<(u16, &'static str, Option<&'static str>)>,
) -> (
    impl Service<
            Request<Bytes>,
            Response = Response<Body>,
            Error = GatewayError,
            Future = ResponseFuture,
        > + Clone
        + Send
        + 'static,
    Log,
) {
    let log: Log = Arc::default();
    let start = Instant::now();
    let svc = tower::service_fn({
        let log = log.clone();
        move |req: Request<Bytes>| {
            let mut seen = log.lock().unwrap();
            let team = req.caller().unwrap().team;
            let tag = req.extensions().get::<u32>().copied().unwrap_or(0);
            let (code, body, after) = first
                .filter(|_| seen.is_empty())
                .unwrap_or((200, "{}", None));
            seen.push((start.elapsed(), team, tag));
            let mut res = Response::new(Body::full(body));
            *res.status_mut() = StatusCode::from_u16(code).unwrap();
            if let Some(after) = after {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, after.parse().unwrap());
            }
            Box::pin(std::future::ready(Ok::<_, GatewayError>(res))) as ResponseFuture
        }
    });
    (svc, log)
}

fn request(team: usize, tag: u32) -> Request<Bytes> {
    let mut req = Request::get("/api/v2/status").body(Bytes::new()).unwrap();
    req.context_mut().caller = Some(Caller {
        team,
        team_name: format!("team-{team}").into(),
        account: 0,
        account_name: "main".into(),
    });
    req.extensions_mut().insert(tag);
    req
}

fn counter(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let families = registry.gather();
    let family = families.iter().find(|f| f.name() == name).unwrap();
    let metric = family.get_metric().iter().find(|m| {
        labels.iter().all(|(k, v)| {
            m.get_label()
                .iter()
                .any(|l| l.name() == *k && l.value() == *v)
        })
    });
    // A counter's gauge field is zero and a gauge's counter field is zero.
    metric.map_or(0.0, |m| {
        m.get_counter().get_value() + m.get_gauge().get_value()
    })
}

/// Sends `requests` at once through `svc`; returns each answer with its tag, in tag order.
async fn burst<S>(svc: S, requests: Vec<Request<Bytes>>) -> Vec<Answer>
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let mut set = JoinSet::new();
    for (i, req) in requests.into_iter().enumerate() {
        let svc = svc.clone();
        set.spawn(async move { (i, svc.oneshot(req).await) });
    }
    let mut answers: Vec<_> = set.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

#[tokio::test(start_paused = true)]
async fn twenty_simultaneous_requests_are_spread_over_three_seconds() {
    let registry = Registry::new();
    let metrics = LimitMetrics::new(&registry).unwrap();
    let layer = TeamLimitLayer::new(
        &[team("a", 5, 5)],
        &limits(Duration::from_secs(5)),
        &metrics,
    );
    let (svc, log) = upstream(None);
    let answers = burst(layer.layer(svc), (0..20).map(|i| request(0, i)).collect()).await;
    assert!(answers
        .iter()
        .all(|a| a.as_ref().unwrap().status() == StatusCode::OK));
    let times: Vec<_> = log.lock().unwrap().iter().map(|(at, ..)| *at).collect();
    assert_eq!(times[..5], [Duration::ZERO; 5]);
    for (k, at) in times[5..].iter().enumerate() {
        assert_eq!(*at, Duration::from_millis(200 * (k as u64 + 1)));
    }
    assert_eq!(times[19], Duration::from_secs(3));
    let team_a = |outcome| {
        counter(
            &registry,
            "idenfy_gateway_limiter_decisions_total",
            &[("limit", "team"), ("name", "a"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (team_a("passed"), team_a("delayed"), team_a("refused")),
        (5.0, 15.0, 0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_max_wait_are_refused_at_once_with_retry_after() {
    let registry = Registry::new();
    let metrics = LimitMetrics::new(&registry).unwrap();
    let layer = TeamLimitLayer::new(
        &[team("a", 5, 5)],
        &limits(Duration::from_secs(2)),
        &metrics,
    );
    let (svc, log) = upstream(None);
    let start = Instant::now();
    let mut svc = layer.layer(svc);
    let mut waiting = JoinSet::new();
    for i in 0..15 {
        waiting.spawn(svc.clone().oneshot(request(0, i)));
    }
    tokio::task::yield_now().await;
    for i in 15..20 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(request(0, i))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
        assert!(matches!(
            err,
            GatewayError::RateLimited {
                limit: Limit::Team,
                ..
            }
        ));
        let res = err.into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            res.headers()[header::RETRY_AFTER],
            "3",
            "next place at 2.2 s"
        );
    }
    assert!(waiting.join_all().await.iter().all(Result::is_ok));
    assert_eq!(log.lock().unwrap().len(), 15);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let refused = [("limit", "team"), ("name", "a"), ("outcome", "refused")];
    assert_eq!(
        counter(
            &registry,
            "idenfy_gateway_limiter_decisions_total",
            &refused
        ),
        5.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_would_pass_the_deadline_is_refused_at_once() {
    let metrics = LimitMetrics::new(&Registry::new()).unwrap();
    let layer = TeamLimitLayer::new(
        &[team("a", 1, 1)],
        &limits(Duration::from_secs(10)),
        &metrics,
    );
    let (svc, log) = upstream(None);
    let svc = layer.layer(svc);
    svc.clone().oneshot(request(0, 0)).await.unwrap();
    let mut req = request(0, 1);
    req.context_mut().deadline = Some(Deadline(Instant::now() + Duration::from_millis(800)));
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(1))
    );
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_served_in_arrival_order() {
    let metrics = LimitMetrics::new(&Registry::new()).unwrap();
    let layer = TeamLimitLayer::new(
        &[team("a", 10, 1)],
        &limits(Duration::from_secs(5)),
        &metrics,
    );
    let (svc, log) = upstream(None);
    let svc = layer.layer(svc);
    let mut set = JoinSet::new();
    for i in 0..10 {
        set.spawn(svc.clone().oneshot(request(0, i)));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    set.join_all().await;
    let order: Vec<_> = log.lock().unwrap().iter().map(|(_, _, tag)| *tag).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_noisy_team_does_not_delay_a_quiet_one() {
    let metrics = LimitMetrics::new(&Registry::new()).unwrap();
    let teams = [team("noisy", 5, 5), team("quiet", 5, 5)];
    let team_limit = TeamLimitLayer::new(&teams, &limits(Duration::from_secs(10)), &metrics);
    let account_limit = AccountLimitLayer::new(
        &[account(1000, 100)],
        &limits(Duration::from_secs(10)),
        &retry_cfg(),
        &metrics,
    );
    let (svc, log) = upstream(None);
    let svc = tower::ServiceBuilder::new()
        .layer(team_limit)
        // In the stack the retry loop (a boxed future) stands between the two limits.
        .layer(tower::util::BoxCloneService::layer())
        .layer(account_limit)
        .service(svc);
    let mut flood = JoinSet::new();
    for i in 0..50 {
        flood.spawn(svc.clone().oneshot(request(0, i)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    svc.clone().oneshot(request(1, 99)).await.unwrap();
    assert_eq!(
        asked.elapsed(),
        Duration::ZERO,
        "the quiet team passes at once"
    );
    flood.join_all().await;
    assert!(log.lock().unwrap().iter().any(|(_, team, _)| *team == 1));
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_caller_is_an_internal_error() {
    let metrics = LimitMetrics::new(&Registry::new()).unwrap();
    let layer = TeamLimitLayer::new(
        &[team("a", 5, 5)],
        &limits(Duration::from_secs(1)),
        &metrics,
    );
    let (svc, _) = upstream(None);
    let req = Request::get("/api/v2/status").body(Bytes::new()).unwrap();
    let err = layer.layer(svc).oneshot(req).await.unwrap_err();
    assert!(matches!(err, GatewayError::Internal));
}
