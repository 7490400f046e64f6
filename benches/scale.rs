//! How per-request cost and memory grow with the gateway's state: live replay entries (up to
//! 100,000), keys in flight (up to 10,000) and teams (up to 1,000). `cargo bench --bench scale`.
//!
//! Before the criterion timings it prints the resident memory each state costs (VmRSS before
//! and after filling it, so per-entry figures include the map's and moka's own overhead). The
//! 10,000-connection figure is in `benches/proxy.rs` (`PROXY_BENCH_CONNS=10000`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, StatusCode};
use idenfy_gateway::dedup::{Flights, Replay, ReplayStore, SharedResponse};
use prometheus::IntGauge;

/// The 417-byte token answer the peer harness's mock sends.
const TOKEN_BODY: &str = r#"{"message":"Token created successfully","authToken":"Xq7mZ2pLk9RwT4vN8bYc3sHdFgJ6uE1a","scanRef":"6b1f3c2e-9d4a-11ee-8c90-0242ac120002","clientId":"user-0","firstName":null,"lastName":null,"successUrl":null,"errorUrl":null,"unverifiedUrl":null,"callbackUrl":null,"locale":"en","country":null,"expiryTime":3600,"sessionLength":600,"documents":[],"tokenType":"DOCUMENT","digitString":"87452193","showInstructions":true}"#;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

type Key = (usize, Arc<str>);

fn key(i: usize) -> Key {
    (0, Arc::from(format!("user-{i:08}")))
}

/// A replay store holding `n` live tokens, each its own copy of the body (as from upstream).
fn filled_store(n: usize) -> ReplayStore<Key> {
    let store = ReplayStore::new(200_000, 256 << 20, IntGauge::new("e", "e").unwrap());
    for i in 0..n {
        let body = Bytes::copy_from_slice(TOKEN_BODY.as_bytes());
        let response = SharedResponse::new(StatusCode::OK, HeaderMap::new(), body);
        let replay = Replay {
            response: Arc::new(response),
            fingerprint: i as u64,
            team: 0,
        };
        store.insert(key(i), replay, Duration::from_secs(3600));
    }
    let _ = store.len();
    store
}

fn replay(c: &mut Criterion) {
    let before = rss_kib();
    let big = filled_store(100_000);
    let after = rss_kib();
    println!(
        "replay store: 100,000 live entries of a 417-byte token answer: +{} KiB RSS ({} bytes/entry)",
        after - before,
        (after - before) * 1024 / 100_000
    );
    let mut g = c.benchmark_group("replay_hit");
    for n in [1_000usize, 10_000, 100_000] {
        let store = if n == 100_000 {
            None
        } else {
            Some(filled_store(n))
        };
        let store = store.as_ref().unwrap_or(&big);
        let mut i = 0usize;
        g.bench_function(format!("{n}_entries"), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(store.get(&key(i)).is_some())
            })
        });
    }
    g.finish();
}

fn flights(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("flight_join");
    for n in [10usize, 1_000, 10_000] {
        let flights: Flights<Key, u64> = Flights::new();
        let before = rss_kib();
        // Flights that never land: the upstream calls are all still in flight.
        let tickets: Vec<_> = (0..n)
            .map(|i| flights.join_or_lead(key(i), (), std::future::pending::<u64>))
            .collect();
        // Spawned tasks are allocated at spawn; polling them once is not needed for memory.
        let after = rss_kib();
        if n == 10_000 {
            println!(
                "flights: 10,000 keys in flight: +{} KiB RSS ({} bytes/key, leader task included)",
                after.saturating_sub(before),
                after.saturating_sub(before) * 1024 / 10_000
            );
        }
        let mut i = 0usize;
        g.bench_function(format!("{n}_in_flight"), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(flights.join_or_lead(key(i), (), std::future::pending::<u64>))
            })
        });
        drop(tickets);
    }
    g.finish();
}

// Flights first: memory freed by the replay store's drop would hide the flights' growth.
criterion_group!(benches, flights, replay);
criterion_main!(benches);
