//! The per-request pieces of the request path, each alone: caller lookup, route match, clientId
//! extraction, header rewrite, metrics recording, and the error → response mapping. (The dedup
//! decision, the limiter check and the retry decision are in `benches/dedup.rs` and
//! `benches/limits.rs`.) `cargo bench --bench request_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use idenfy_gateway::config::{Config, DEFAULT_PREFIXES};
use idenfy_gateway::context::RouteKind;
use idenfy_gateway::error::{GatewayError, Limit};
use idenfy_gateway::headers::strip_hop_by_hop;
use idenfy_gateway::identify::Callers;
use idenfy_gateway::metrics::{status_class, HandleTable, RequestMetrics};
use idenfy_gateway::route::Routes;
use idenfy_gateway::validate::inspect;
use prometheus::Registry;

/// A config with `teams` token teams and one tokenless team.
pub fn config(teams: usize) -> Config {
    let mut text = String::from(
        "[[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n[[team]]\nname = \"app\"\n",
    );
    for i in 0..teams {
        text.push_str(&format!(
            "[[team]]\nname = \"team-{i}\"\ntoken = \"token-{i:08}\"\n"
        ));
    }
    Config::parse(&text, &|_| None).unwrap()
}

fn identify(c: &mut Criterion) {
    let mut g = c.benchmark_group("identify");
    for teams in [1, 10, 100, 1000] {
        let callers = Callers::new(&config(teams));
        let bearer = format!("Bearer token-{:08}", teams - 1);
        g.bench_function(format!("bearer_{teams}_teams"), |b| {
            b.iter(|| black_box(callers.identify(Some(black_box(bearer.as_bytes()))).is_ok()))
        });
    }
    let callers = Callers::new(&config(1000));
    g.bench_function("sidecar_no_header", |b| {
        b.iter(|| black_box(callers.identify(black_box(None)).is_ok()))
    });
    g.bench_function("sidecar_old_idenfy_basic", |b| {
        let old = b"Basic b2xkLWtleTpvbGQtc2VjcmV0";
        b.iter(|| black_box(callers.identify(Some(black_box(&old[..]))).is_ok()))
    });
    g.finish();
}

fn route(c: &mut Criterion) {
    let prefixes: Vec<String> = DEFAULT_PREFIXES.iter().map(|s| s.to_string()).collect();
    let routes = Routes::new(&prefixes);
    let mut g = c.benchmark_group("route");
    for path in [
        "/api/v2/status",
        "/api/v2/token",
        "/aml/checks/123/",
        "/api/v2/%2e%2e/x",
    ] {
        g.bench_function(path, |b| {
            b.iter(|| black_box(routes.classify(&Method::POST, black_box(path)).is_ok()))
        });
    }
    g.finish();
}

fn client_id(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_id");
    let small = br#"{"clientId":"user-123456-0-42"}"#;
    let full = br#"{"clientId":"user-123456-0-42","firstName":"Ona","lastName":"Vaite","successUrl":"https://example.com/ok","errorUrl":"https://example.com/err","locale":"en","expiryTime":3600,"documents":["ID_CARD","PASSPORT"]}"#;
    g.bench_function("inspect_small_validated", |b| {
        b.iter(|| black_box(inspect(RouteKind::KycToken, black_box(small), true).is_ok()))
    });
    g.bench_function("inspect_full_validated", |b| {
        b.iter(|| black_box(inspect(RouteKind::KycToken, black_box(full), true).is_ok()))
    });
    g.bench_function("inspect_full_unvalidated", |b| {
        b.iter(|| black_box(inspect(RouteKind::KycToken, black_box(full), false).is_ok()))
    });
    g.finish();
}

fn client_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("gateway.internal"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic Ym9ndXM="),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("31"));
    h.insert(
        "x-request-id",
        HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
    );
    h
}

fn header_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_rewrite");
    let mut auth = HeaderValue::from_static("Basic YmVuY2gtYXBpLWtleTpiZW5jaC1hcGktc2VjcmV0");
    auth.set_sensitive(true);
    let rewrite = |mut h: HeaderMap| {
        strip_hop_by_hop(&mut h);
        h.remove(header::HOST);
        h.insert(header::AUTHORIZATION, auth.clone());
        h
    };
    g.bench_function("no_hop_by_hop", |b| {
        b.iter_batched(client_headers, rewrite, BatchSize::SmallInput)
    });
    g.bench_function("with_connection_header", |b| {
        b.iter_batched(
            || {
                let mut h = client_headers();
                h.insert(
                    header::CONNECTION,
                    HeaderValue::from_static("keep-alive, x-hop"),
                );
                h.insert("x-hop", HeaderValue::from_static("1"));
                h
            },
            rewrite,
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let registry = Registry::new();
    let m = RequestMetrics::new(&registry).unwrap();
    let table: HandleTable<prometheus::IntCounter> = HandleTable::new(2, 100);
    let mut g = c.benchmark_group("metrics");
    g.bench_function("with_label_values_per_request", |b| {
        b.iter(|| {
            m.requests
                .with_label_values(&["app", "/api/v2/status", status_class(StatusCode::OK)])
                .inc();
            m.duration
                .with_label_values(&["/api/v2/status"])
                .observe(0.0004);
        })
    });
    let histogram = m.duration.with_label_values(&["/api/v2/status"]);
    g.bench_function("cached_handles_per_request", |b| {
        b.iter(|| {
            let c = table.get(0, 6, || {
                m.requests
                    .with_label_values(&["app", "/api/v2/status", "2xx"])
            });
            c.expect("in the table").inc();
            histogram.observe(0.0004);
        })
    });
    g.finish();
}

fn error_response(c: &mut Criterion) {
    let mut g = c.benchmark_group("error_response");
    g.bench_function("unauthorized", |b| {
        b.iter(|| black_box(GatewayError::Unauthorized.into_response()))
    });
    g.bench_function("rate_limited", |b| {
        b.iter(|| {
            black_box(
                GatewayError::RateLimited {
                    limit: Limit::Team,
                    retry_after: std::time::Duration::from_millis(1500),
                }
                .into_response(),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    identify,
    route,
    client_id,
    header_rewrite,
    metrics,
    error_response
);
criterion_main!(benches);
