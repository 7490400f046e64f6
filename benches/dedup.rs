//! The dedup decision per token request: a replay hit, and a miss that leads an uncontended flight
//! (replay look-up, flight map insert, detached upstream task, buffering, store, fan-out).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use idenfy_gateway::body::{Body, ResponseFuture};
use idenfy_gateway::config;
use idenfy_gateway::context::{Caller, ClientId, ContextExt, Route, RouteKind};
use idenfy_gateway::dedup::{DedupLayer, DedupMetrics};
use idenfy_gateway::error::GatewayError;
use tower::{Layer, Service};

const KYC: Route = Route {
    kind: RouteKind::KycToken,
    label: "/api/v2/token",
};

fn request(client_id: &str) -> Request<Bytes> {
    let mut req = Request::post(KYC.label)
        .body(Bytes::from(format!(r#"{{"clientId":"{client_id}"}}"#)))
        .unwrap();
    req.context_mut().caller = Some(Caller {
        team: 0,
        team_name: "payments".into(),
        account: 0,
        account_name: "main".into(),
    });
    req.context_mut().route = Some(KYC);
    req.extensions_mut().insert(ClientId(client_id.into()));
    req
}

fn service() -> impl Service<
    Request<Bytes>,
    Response = Response<Body>,
    Error = GatewayError,
    Future = impl std::future::Future<Output = Result<Response<Body>, GatewayError>>,
> {
    let cfg = config::Dedup {
        replay: true,
        default_lifetime: Duration::from_secs(3600),
        safety_margin: Duration::from_secs(60),
        max_entries: 10_000,
        max_bytes: 16 << 20,
        recheck_after: Duration::from_secs(60),
    };
    let metrics = DedupMetrics::new(&prometheus::Registry::new()).unwrap();
    let upstream = tower::service_fn(|_req: Request<Bytes>| -> ResponseFuture {
        let body = r#"{"authToken":"abcdefghijklmnopqrstuvwxyz0123456789","expiryTime":3600}"#;
        Box::pin(std::future::ready(Ok(Response::builder()
            .status(201)
            .body(Body::full(body))
            .unwrap())))
    });
    DedupLayer::new(&cfg, 16 << 20, Duration::from_secs(30), metrics).layer(upstream)
}

fn dedup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut svc = service();
    let _enter = runtime.enter();
    runtime.block_on(svc.call(request("replayed"))).unwrap();
    c.bench_function("dedup/replay_hit", |b| {
        b.iter_batched(
            || request("replayed"),
            |req| black_box(runtime.block_on(svc.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let next = AtomicU64::new(0);
    c.bench_function("dedup/miss_then_lead", |b| {
        b.iter_batched(
            || request(&format!("client-{}", next.fetch_add(1, Ordering::Relaxed))),
            |req| black_box(runtime.block_on(svc.call(req)).unwrap()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, dedup);
criterion_main!(benches);
