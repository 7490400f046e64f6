//! Layer tests: the dedup service over a scripted inner service that counts its calls and can be
//! held open on a semaphore. No sleeps: paused time where time matters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use prometheus::Registry;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

const KYC: Route = Route {
    kind: RouteKind::KycToken,
    label: "/api/v2/token",
};
const KYB: Route = Route {
    kind: RouteKind::KybToken,
    label: "/kyb/tokens/",
};
const TEAM: &str = "payments";

type Answer = Arc<dyn Fn(usize) -> Result<Response<Body>, GatewayError> + Send + Sync>;

/// A scripted iDenfy: counts calls; when held, each call waits for a permit of `gate`.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
    answer: Answer,
}

impl Upstream {
    fn answering(
        answer: impl Fn(usize) -> Result<Response<Body>, GatewayError> + Send + Sync + 'static,
    ) -> Self {
        Upstream {
            calls: Arc::new(AtomicUsize::new(0)),
            gate: None,
            answer: Arc::new(answer),
        }
    }

    /// Answers a fresh token per call (`tok-1`, `tok-2`, …) living `expiry` seconds.
    fn tokens(expiry: u64) -> Self {
        Self::answering(move |n| {
            Ok(json(
                201,
                &format!(r#"{{"authToken":"tok-{n}","expiryTime":{expiry}}}"#),
            ))
        })
    }

    fn held(mut self) -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        self.gate = Some(Arc::clone(&gate));
        (self, gate)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn json(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::full(body.to_owned()))
        .unwrap()
}

fn config(replay: bool) -> config::Dedup {
    config::Dedup {
        replay,
        default_lifetime: Duration::from_secs(3600),
        safety_margin: Duration::from_secs(60),
        max_entries: 1000,
        max_bytes: 1 << 20,
    }
}

fn stack(
    upstream: &Upstream,
    cfg: config::Dedup,
) -> (
    DedupLayer,
    impl Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError, Future = BoxFuture>
        + Clone,
) {
    let metrics = DedupMetrics::new(&Registry::new()).unwrap();
    let layer = DedupLayer::new(&cfg, 1024, metrics);
    let up = upstream.clone();
    let inner = tower::service_fn(move |_req: Request<Bytes>| {
        let up = up.clone();
        async move {
            let n = up.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(gate) = &up.gate {
                gate.acquire().await.unwrap().forget();
            }
            (up.answer)(n)
        }
    });
    let svc = layer.layer(inner);
    (layer, svc)
}

fn request(route: Route, account: usize, client_id: &str, body: &str) -> Request<Bytes> {
    let mut req = Request::post(route.label)
        .body(Bytes::from(body.to_owned()))
        .unwrap();
    let ext = req.extensions_mut();
    ext.insert(Caller {
        team: 0,
        team_name: TEAM.into(),
        account,
        account_name: format!("account-{account}").into(),
    });
    ext.insert(route);
    ext.insert(ClientId(client_id.into()));
    req
}

fn token(client_id: &str) -> Request<Bytes> {
    request(
        KYC,
        0,
        client_id,
        &format!(r#"{{"clientId":"{client_id}"}}"#),
    )
}

/// Makes the dedup decision now (it happens in `call`) and waits for the answer in a task.
fn start<S>(svc: &mut S, req: Request<Bytes>) -> JoinHandle<Result<Response<Body>, GatewayError>>
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError, Future = BoxFuture>,
{
    tokio::spawn(svc.call(req))
}

async fn finish(handle: JoinHandle<Result<Response<Body>, GatewayError>>) -> Response<Body> {
    handle.await.unwrap().unwrap()
}

fn dedup_header(res: &Response<Body>) -> Option<&str> {
    res.headers()
        .get(X_GATEWAY_DEDUP)
        .map(|v| v.to_str().unwrap())
}

fn mismatch(res: &Response<Body>) -> bool {
    res.headers().contains_key(X_GATEWAY_DEDUP_MISMATCH)
}

async fn text(res: Response<Body>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn answered(layer: &DedupLayer, outcome: &str) -> u64 {
    let labels = [TEAM, KYC.label, outcome];
    layer
        .shared
        .metrics
        .requests
        .with_label_values(&labels)
        .get()
}

fn sessions(layer: &DedupLayer) -> u64 {
    layer
        .shared
        .metrics
        .sessions
        .with_label_values(&[TEAM, KYC.label])
        .get()
}

/// Lets detached flights run until none is left (yields only: no time passes).
async fn landed(layer: &DedupLayer) {
    for _ in 0..1000 {
        if layer.in_flight() == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{} flights never landed", layer.in_flight());
}

#[tokio::test]
async fn coalesces_concurrent_token_requests() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let handles: Vec<_> = (0..40).map(|_| start(&mut svc, token("c-1"))).collect();
    assert_eq!(layer.in_flight(), 1);
    gate.add_permits(1);
    let mut outcomes = Vec::new();
    for handle in handles {
        let res = finish(handle).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        outcomes.push(dedup_header(&res).unwrap().to_owned());
        assert_eq!(
            text(res).await,
            r#"{"authToken":"tok-1","expiryTime":3600}"#
        );
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(outcomes.iter().filter(|o| *o == "leader").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| *o == "coalesced").count(), 39);
    assert_eq!(
        (answered(&layer, "leader"), answered(&layer, "coalesced")),
        (1, 39)
    );
    assert_eq!(sessions(&layer), 1);
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(layer.shared.metrics.in_flight.get(), 0);
}

#[tokio::test]
async fn distinct_client_ids_accounts_and_routes_are_never_merged() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let requests = [
        request(KYC, 0, "a", "{}"),
        request(KYC, 0, "b", "{}"),
        request(KYC, 1, "a", "{}"),
        request(KYB, 0, "a", "{}"),
    ];
    let handles: Vec<_> = requests.into_iter().map(|r| start(&mut svc, r)).collect();
    assert_eq!(layer.in_flight(), 4);
    gate.add_permits(4);
    for handle in handles {
        assert_eq!(dedup_header(&finish(handle).await), Some("leader"));
    }
    assert_eq!(upstream.calls(), 4);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test]
async fn replays_a_live_token_without_calling_upstream() {
    let upstream = Upstream::tokens(3600);
    let (layer, svc) = stack(&upstream, config(true));
    let first = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&first), Some("leader"));
    let first = text(first).await;
    let again = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(dedup_header(&again), Some("replayed"));
    assert!(!mismatch(&again));
    assert_eq!(text(again).await, first);
    assert_eq!(upstream.calls(), 1);
    assert_eq!((answered(&layer, "replayed"), sessions(&layer)), (1, 1));
    assert_eq!(layer.shared.metrics.replay_entries.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_replay_after_the_token_expires() {
    // expiryTime 600 minus the 60 s margin: replayed for 540 s.
    let upstream = Upstream::tokens(600);
    let (_layer, svc) = stack(&upstream, config(true));
    svc.clone().oneshot(token("c-1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(539)).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("leader"));
    assert!(text(res).await.contains("tok-2"));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn upstream_failures_are_shared_but_never_replayed() {
    let failing = Upstream::answering(|_| Ok(json(503, r#"{"identifier":"INTERNAL_ERROR"}"#)));
    let (upstream, gate) = failing.held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let leader = start(&mut svc, token("c-1"));
    let follower = start(&mut svc, token("c-1"));
    gate.add_permits(2);
    let (leader, follower) = (finish(leader).await, finish(follower).await);
    assert_eq!(
        (leader.status(), follower.status()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE
        )
    );
    assert_eq!(dedup_header(&follower), Some("coalesced"));
    assert_eq!(text(follower).await, r#"{"identifier":"INTERNAL_ERROR"}"#);
    let next = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&next), Some("leader"));
    assert_eq!(upstream.calls(), 2);
    assert_eq!(sessions(&layer), 0);
}

#[tokio::test]
async fn gateway_errors_are_shared_but_never_replayed() {
    let (upstream, gate) = Upstream::answering(|_| Err(GatewayError::UpstreamConnect)).held();
    let (_layer, mut svc) = stack(&upstream, config(true));
    let leader = start(&mut svc, token("c-1"));
    let follower = start(&mut svc, token("c-1"));
    gate.add_permits(2);
    assert!(matches!(
        leader.await.unwrap(),
        Err(GatewayError::UpstreamConnect)
    ));
    assert!(matches!(
        follower.await.unwrap(),
        Err(GatewayError::UpstreamConnect)
    ));
    let next = svc.clone().oneshot(token("c-1")).await;
    assert!(matches!(next, Err(GatewayError::UpstreamConnect)));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn a_dropped_leader_still_answers_its_followers() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let leader = svc.call(token("c-1"));
    let followers: Vec<_> = (0..3).map(|_| start(&mut svc, token("c-1"))).collect();
    drop(leader); // the leader's client disconnected
    gate.add_permits(1);
    for follower in followers {
        let res = finish(follower).await;
        assert_eq!(dedup_header(&res), Some("coalesced"));
        assert!(text(res).await.contains("tok-1"));
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test]
async fn a_flight_every_caller_left_still_completes_and_is_stored() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    drop(svc.call(token("c-1")));
    drop(svc.call(token("c-1")));
    gate.add_permits(1);
    landed(&layer).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.shared.metrics.in_flight.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_follower_past_its_deadline_leaves_while_the_leader_completes() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let leader = start(&mut svc, token("c-1"));
    let mut late = token("c-1");
    late.extensions_mut()
        .insert(Deadline(Instant::now() + Duration::from_secs(5)));
    let follower = start(&mut svc, late);
    // Paused time jumps to the follower's deadline while the leader is held.
    assert!(matches!(
        follower.await.unwrap(),
        Err(GatewayError::DeadlineExceeded)
    ));
    assert_eq!(layer.in_flight(), 1);
    gate.add_permits(1);
    let res = finish(leader).await;
    assert_eq!(
        (res.status(), dedup_header(&res)),
        (StatusCode::CREATED, Some("leader"))
    );
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test]
async fn a_panicking_upstream_fails_its_waiters_and_leaves_no_flight() {
    let (upstream, gate) = Upstream::answering(|_| panic!("inner service bug")).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let leader = start(&mut svc, token("c-1"));
    let follower = start(&mut svc, token("c-1"));
    gate.add_permits(1);
    assert!(matches!(leader.await.unwrap(), Err(GatewayError::Internal)));
    assert!(matches!(
        follower.await.unwrap(),
        Err(GatewayError::Internal)
    ));
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(layer.shared.metrics.in_flight.get(), 0);
}

#[tokio::test]
async fn replay_off_still_coalesces() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(false));
    let handles: Vec<_> = (0..5).map(|_| start(&mut svc, token("c-1"))).collect();
    gate.add_permits(1);
    for handle in handles {
        finish(handle).await;
    }
    assert_eq!(upstream.calls(), 1);
    gate.add_permits(1);
    let next = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&next), Some("leader"));
    assert_eq!(upstream.calls(), 2);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test]
async fn a_different_body_gets_the_first_session_flagged_as_a_mismatch() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (_layer, mut svc) = stack(&upstream, config(true));
    let ana = r#"{"clientId":"c-1","firstName":"ANA"}"#;
    let bob = r#"{"clientId":"c-1","firstName":"BOB"}"#;
    let leader = start(&mut svc, request(KYC, 0, "c-1", ana));
    let same = start(&mut svc, request(KYC, 0, "c-1", ana));
    let other = start(&mut svc, request(KYC, 0, "c-1", bob));
    gate.add_permits(1);
    let (leader, same, other) = (
        finish(leader).await,
        finish(same).await,
        finish(other).await,
    );
    assert!(!mismatch(&leader) && !mismatch(&same));
    assert!(mismatch(&other));
    assert_eq!(other.headers()[X_GATEWAY_DEDUP_MISMATCH], "true");
    assert!(
        text(other).await.contains("tok-1"),
        "the first request's session wins"
    );
    let replay_other = svc
        .clone()
        .oneshot(request(KYC, 0, "c-1", bob))
        .await
        .unwrap();
    assert_eq!(
        (dedup_header(&replay_other), mismatch(&replay_other)),
        (Some("replayed"), true)
    );
    let replay_same = svc
        .clone()
        .oneshot(request(KYC, 0, "c-1", ana))
        .await
        .unwrap();
    assert_eq!(
        (dedup_header(&replay_same), mismatch(&replay_same)),
        (Some("replayed"), false)
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn an_upstream_conflict_is_passed_through_and_counted() {
    let conflict = r#"{"message":"Client ID already exists"}"#;
    let upstream = Upstream::answering(move |_| Ok(json(409, conflict)));
    let (layer, svc) = stack(&upstream, config(true));
    for _ in 0..2 {
        let res = svc.clone().oneshot(token("c-1")).await.unwrap();
        assert_eq!(
            (res.status(), dedup_header(&res)),
            (StatusCode::CONFLICT, Some("leader"))
        );
        assert_eq!(text(res).await, conflict);
    }
    assert_eq!(upstream.calls(), 2, "a 409 is never stored");
    let conflicts = layer
        .shared
        .metrics
        .conflicts
        .with_label_values(&[TEAM, KYC.label]);
    assert_eq!(conflicts.get(), 2);
    assert_eq!(sessions(&layer), 0);
}

#[tokio::test]
async fn an_upstream_conflict_is_answered_with_a_live_stored_token() {
    // Another flight (or another gateway) stores the session while our call is upstream.
    let shared_slot: Arc<std::sync::OnceLock<Arc<Shared>>> = Arc::default();
    let slot = Arc::clone(&shared_slot);
    let upstream = Upstream::answering(move |_| {
        let shared = slot.get().unwrap();
        let body = Bytes::from_static(br#"{"authToken":"tok-elsewhere"}"#);
        let response = SharedResponse::new(StatusCode::CREATED, http::HeaderMap::new(), body);
        let key = DedupKey {
            account: 0,
            kind: RouteKind::KycToken,
            client_id: "c-1".into(),
        };
        let replay = Replay {
            response: Arc::new(response),
            fingerprint: fingerprint(br#"{"clientId":"c-1"}"#),
        };
        shared
            .replay
            .as_ref()
            .unwrap()
            .insert(key, replay, Duration::from_secs(600));
        Ok(json(409, r#"{"message":"Client ID already exists"}"#))
    });
    let (layer, svc) = stack(&upstream, config(true));
    shared_slot.set(Arc::clone(&layer.shared)).ok().unwrap();
    let res = svc.oneshot(token("c-1")).await.unwrap();
    assert_eq!(
        (res.status(), dedup_header(&res)),
        (StatusCode::CREATED, Some("replayed"))
    );
    assert!(!mismatch(&res));
    assert_eq!(text(res).await, r#"{"authToken":"tok-elsewhere"}"#);
    let conflicts = layer
        .shared
        .metrics
        .conflicts
        .with_label_values(&[TEAM, KYC.label]);
    assert_eq!(conflicts.get(), 1);
}

#[tokio::test]
async fn an_oversized_upstream_answer_is_a_shared_failure() {
    let big = "x".repeat(2048); // over the 1024-byte max_body of `stack`
    let (upstream, gate) = Upstream::answering(move |_| Ok(json(201, &big))).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let leader = start(&mut svc, token("c-1"));
    let follower = start(&mut svc, token("c-1"));
    gate.add_permits(1);
    assert!(matches!(
        leader.await.unwrap(),
        Err(GatewayError::UpstreamProtocol)
    ));
    assert!(matches!(
        follower.await.unwrap(),
        Err(GatewayError::UpstreamProtocol)
    ));
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test]
async fn other_requests_pass_straight_through() {
    let upstream = Upstream::answering(|_| Ok(json(200, "{}")));
    let (layer, svc) = stack(&upstream, config(true));
    let other = Route {
        kind: RouteKind::Other,
        label: "/api/v2/status",
    };
    let mut no_client_id = token("c-1");
    no_client_id.extensions_mut().remove::<ClientId>();
    let mut no_caller = token("c-1");
    no_caller.extensions_mut().remove::<Caller>();
    let requests = [
        request(other, 0, "c-1", "{}"),
        request(other, 0, "c-1", "{}"),
        no_client_id,
        no_caller,
    ];
    for req in requests {
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(dedup_header(&res), None);
    }
    assert_eq!(upstream.calls(), 4);
    assert_eq!(answered(&layer, "leader"), 0);
}
