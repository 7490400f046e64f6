//! Layer tests: the dedup service over a scripted inner service that counts its calls and can be
//! held open on a semaphore. No sleeps: paused time where time matters. The inner service stands
//! for everything after dedup (team limit, retries, upstream), so it may answer a team-limit 429.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use prometheus::Registry;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::ServiceExt;

use super::key::fingerprint;
use super::*;
use crate::body::ResponseFuture;
use crate::context::{Caller, ClientId, Deadline, Route, RouteKind};

const KYC: Route = Route {
    kind: RouteKind::KycToken,
    label: "/api/v2/token",
};
const KYB: Route = Route {
    kind: RouteKind::KybToken,
    label: "/kyb/tokens/",
};
const TEAM: &str = "payments";
/// The other team of the account, index 1.
const OTHER_TEAM: &str = "growth";
/// `upstream.deadline` of the layer under test: how long a flight may take.
const FLIGHT_DEADLINE: Duration = Duration::from_secs(30);

type Answer = Arc<dyn Fn(usize) -> Result<Response<Body>, GatewayError> + Send + Sync>;

/// A scripted iDenfy: counts calls and the deadline each call came with; when held, each call
/// waits for a permit of `gate`.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    deadlines: Arc<std::sync::Mutex<Vec<Option<Deadline>>>>,
    gate: Option<Arc<Semaphore>>,
    answer: Answer,
}

impl Upstream {
    fn answering(
        answer: impl Fn(usize) -> Result<Response<Body>, GatewayError> + Send + Sync + 'static,
    ) -> Self {
        Upstream {
            calls: Arc::new(AtomicUsize::new(0)),
            deadlines: Arc::default(),
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

    /// The request deadline of each call, in order.
    fn deadlines(&self) -> Vec<Option<Deadline>> {
        self.deadlines.lock().unwrap().clone()
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
        recheck_after: Duration::from_secs(60),
    }
}

fn stack(
    upstream: &Upstream,
    cfg: config::Dedup,
) -> (
    DedupLayer,
    impl Service<
            Request<Bytes>,
            Response = Response<Body>,
            Error = GatewayError,
            Future = ResponseFuture,
        > + Clone,
) {
    let metrics = DedupMetrics::new(&Registry::new()).unwrap();
    let layer = DedupLayer::new(&cfg, 1024, FLIGHT_DEADLINE, metrics);
    let up = upstream.clone();
    let inner = tower::service_fn(move |req: Request<Bytes>| {
        let up = up.clone();
        up.deadlines.lock().unwrap().push(req.deadline());
        Box::pin(async move {
            let n = up.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(gate) = &up.gate {
                gate.acquire().await.unwrap().forget();
            }
            (up.answer)(n)
        }) as ResponseFuture
    });
    let svc = layer.layer(inner);
    (layer, svc)
}

fn request(route: Route, account: usize, client_id: &str, body: &str) -> Request<Bytes> {
    request_of(0, route, account, client_id, body)
}

/// A request of team `team` (0: [`TEAM`], 1: [`OTHER_TEAM`]).
fn request_of(
    team: usize,
    route: Route,
    account: usize,
    client_id: &str,
    body: &str,
) -> Request<Bytes> {
    let mut req = Request::post(route.label)
        .body(Bytes::from(body.to_owned()))
        .unwrap();
    let context = req.context_mut();
    context.caller = Some(Caller {
        team,
        team_name: [TEAM, OTHER_TEAM][team].into(),
        account,
        account_name: format!("account-{account}").into(),
    });
    context.route = Some(route);
    req.extensions_mut().insert(ClientId(client_id.into()));
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
    S: Service<
        Request<Bytes>,
        Response = Response<Body>,
        Error = GatewayError,
        Future = ResponseFuture,
    >,
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
    answered_for(layer, TEAM, outcome)
}

fn answered_for(layer: &DedupLayer, team: &str, outcome: &str) -> u64 {
    let labels = [team, KYC.label, outcome];
    layer
        .shared
        .metrics
        .requests
        .with_label_values(&labels)
        .get()
}

fn in_use(layer: &DedupLayer, team: &str) -> u64 {
    let labels = [team, KYC.label];
    layer.shared.metrics.in_use.with_label_values(&labels).get()
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

/// The layer's shared state, for an upstream built before the layer: set once the stack is.
type SharedSlot = Arc<std::sync::OnceLock<Arc<Shared>>>;

/// An upstream that, as another flight (or another gateway) would while the call is upstream,
/// stores a live session for `c-1` on account 0 (`body`, created by `team` from a request body
/// with `fingerprint`), then answers 409 `Client ID already exists`. Set the slot to the layer's
/// shared state once the stack is built.
fn stores_then_conflicts(
    body: &'static [u8],
    fingerprint: u64,
    team: usize,
) -> (Upstream, SharedSlot) {
    let shared_slot: SharedSlot = Arc::default();
    let slot = Arc::clone(&shared_slot);
    let upstream = Upstream::answering(move |_| {
        let shared = slot.get().unwrap();
        let body = Bytes::from_static(body);
        let response = SharedResponse::new(StatusCode::CREATED, http::HeaderMap::new(), body);
        let key = DedupKey {
            account: 0,
            kind: RouteKind::KycToken,
            client_id: "c-1".into(),
        };
        let replay = Replay {
            response: Arc::new(response),
            fingerprint,
            team,
        };
        let store = shared.replay.as_ref().unwrap();
        store.insert(key, replay, Duration::from_secs(600));
        Ok(json(409, r#"{"message":"Client ID already exists"}"#))
    });
    (upstream, shared_slot)
}

mod coalescing;
mod ending;
mod limits;
mod replaying;
mod teams;
