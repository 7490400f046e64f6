//! Micro-benchmarks of the limits: the quota check on the fast path (a free cell, nobody waiting)
//! and the retry decision for an upstream answer.

use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::StatusCode;
use idenfy_gateway::config::Rate;
use idenfy_gateway::context::RouteKind;
use idenfy_gateway::ratelimit::quota::Admission;
use idenfy_gateway::ratelimit::Quota;
use idenfy_gateway::retry::policy::{error_identifier, Policy};

fn quota_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    // A rate no benchmark loop can exhaust: every check passes uncontended.
    let rate = Rate {
        count: NonZeroU32::MAX,
        per: Duration::from_secs(1),
    };
    let quota = Quota::new(rate, NonZeroU32::MAX);
    c.bench_function("quota_admit_uncontended_pass", |b| {
        b.iter(|| {
            let admitted = quota.admit(tokio::time::Instant::now(), Duration::from_secs(2));
            assert!(matches!(admitted, Ok(Admission::Now)));
        })
    });
}

fn retry_decision(c: &mut Criterion) {
    let policy = Policy {
        retry_token_after_send: false,
    };
    c.bench_function("retry_classify_503", |b| {
        b.iter(|| policy.classify_response(RouteKind::Other, StatusCode::SERVICE_UNAVAILABLE, None))
    });
    let body = br#"{"identifier":"TOO_MANY_REQUESTS","message":"Requests per hour limit has been reached."}"#;
    c.bench_function("retry_classify_400_with_identifier", |b| {
        b.iter(|| {
            let identifier = error_identifier(std::hint::black_box(body));
            policy.classify_response(
                RouteKind::KycToken,
                StatusCode::BAD_REQUEST,
                identifier.as_deref(),
            )
        })
    });
}

criterion_group!(benches, quota_check, retry_decision);
criterion_main!(benches);
