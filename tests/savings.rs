//! The savings benchmark's promise, checked in `cargo test` on a short calm day (the scenario
//! runner of `cargo bench --bench savings`, with fewer users and a shorter day): through the
//! gateway, what holds by construction holds, read from the simulator's counters and the app
//! clients' own records. No timing is asserted.

#[allow(dead_code)]
#[path = "../benches/savings/runner/mod.rs"]
mod runner;

use runner::app::{Plan, Traffic};
use runner::clock::secs;
use runner::scenario::{self, Path, Scenario};
use runner::tally::{percentile, Tally};
use std::time::Duration;

/// 16 users over 4 s (half of them in a 1 s burst), most double-clicking, half reloading.
fn short_day() -> Traffic {
    Traffic {
        users: 16,
        seed: 7,
        spread: secs(4),
        bursts: vec![(secs(1), secs(1), 0.5)],
        double_click: 0.7,
        reload: 0.5,
        reload_after: (secs(3), secs(6)),
    }
}

fn calm(conflict_on_active: bool) -> Scenario {
    scenario::all()
        .into_iter()
        .find(|s| s.faults.is_empty() && s.hourly_limit == 0)
        .filter(|s| s.conflict_on_active)
        .map(|s| Scenario {
            conflict_on_active,
            ..s
        })
        .expect("the benchmark has a calm day")
}

async fn run(s: &Scenario, path: Path) -> Tally {
    scenario::run(s, &short_day(), path)
        .await
        .expect("the run starts")
}

/// What must hold through the gateway, whatever the timing.
fn assert_gateway_invariants(t: &Tally) {
    assert_eq!(t.duplicates, 0, "a second session for a clientId: {t:?}");
    assert!(
        t.conflicts_on_created.is_empty(),
        "the app saw 409 for clientIds whose session the gateway created: {:?}",
        t.conflicts_on_created
    );
    assert!(
        t.upstream_calls < t.app_calls,
        "upstream {} >= app {}",
        t.upstream_calls,
        t.app_calls
    );
}

#[tokio::test]
async fn through_the_gateway_idenfys_409s_become_replays() {
    let day = calm(true);
    let direct = run(&day, Path::Direct).await;
    // The same users, direct: the double clicks and reloads meet iDenfy's 409.
    assert!(
        direct.seen_409 > 0,
        "the short day provokes 409s: {direct:?}"
    );
    assert_eq!(direct.upstream_calls, direct.app_calls);
    let gateway = run(&day, Path::Gateway).await;
    assert_gateway_invariants(&gateway);
    assert_eq!(gateway.seen_409, 0);
    assert_eq!(gateway.successes, gateway.visits, "every visit got a token");
}

#[tokio::test]
async fn through_the_gateway_no_second_session_is_billed() {
    let day = calm(false);
    let direct = run(&day, Path::Direct).await;
    // Direct, an iDenfy that bills instead of answering 409 bills the double clicks twice.
    assert!(
        direct.duplicates > 0,
        "the short day provokes duplicates: {direct:?}"
    );
    let gateway = run(&day, Path::Gateway).await;
    assert_gateway_invariants(&gateway);
    assert_eq!(gateway.sessions, short_day().users as u64);
}

#[test]
fn the_same_seed_draws_the_same_users() {
    let t = Traffic::day();
    let (a, b) = (Plan::draw(&t), Plan::draw(&t));
    assert_eq!(a.clicks, b.clicks);
    assert!(a.visits > t.users, "some users reload");
    assert!(a.clicks.len() > a.visits, "some users double-click");
    let ids: std::collections::BTreeSet<_> = a.clicks.iter().map(|c| &c.client_id).collect();
    assert_eq!(ids.len(), t.users);
}

#[test]
fn percentiles_are_nearest_rank() {
    let d: Vec<_> = [10, 20, 30, 40].map(Duration::from_millis).into();
    assert_eq!(percentile(&d, 50.0), Some(Duration::from_millis(20)));
    assert_eq!(percentile(&d, 99.0), Some(Duration::from_millis(40)));
    assert_eq!(percentile(&[], 50.0), None);
}
