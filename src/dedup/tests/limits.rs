//! A flight's limits are its own: the configured deadline, not its leader's; a team-limit refusal
//! for the leader alone; answers counted only under the header they carry.

use super::*;
use crate::error::Limit;

fn team_limited() -> GatewayError {
    GatewayError::RateLimited {
        limit: Limit::Team,
        retry_after: Duration::from_secs(1),
    }
}

/// Yields until `check` holds (no time passes).
async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never: {what}");
}

#[tokio::test(start_paused = true)]
async fn the_flight_runs_on_the_configured_deadline_not_on_its_leaders() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let started = Instant::now();
    let mut hasty = token("c-1");
    hasty.context_mut().deadline = Some(Deadline(started + Duration::from_millis(150)));
    let leader = start(&mut svc, hasty);
    let follower = start(&mut svc, token("c-1"));
    // Paused time jumps to the leader's own deadline: its 504, and nobody else's.
    assert!(matches!(
        leader.await.unwrap(),
        Err(GatewayError::DeadlineExceeded)
    ));
    assert_eq!(layer.in_flight(), 1);
    gate.add_permits(1);
    let res = finish(follower).await;
    assert_eq!(
        (res.status(), dedup_header(&res)),
        (StatusCode::CREATED, Some("coalesced"))
    );
    assert_eq!(upstream.calls(), 1);
    let flight_deadline = Some(Deadline(started + FLIGHT_DEADLINE));
    assert_eq!(upstream.deadlines(), vec![flight_deadline]);
    // The leader's 504 carried no x-gateway-dedup: not counted as a leader.
    assert_eq!(
        (answered(&layer, "leader"), answered(&layer, "coalesced")),
        (0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_flight_that_never_lands_is_cut_at_the_configured_deadline() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let first = start(&mut svc, token("c-1"));
    // Bounded, so that the old, unbounded flight fails this test instead of hanging it.
    let first = tokio::time::timeout(FLIGHT_DEADLINE * 2, first).await;
    let first = first.expect("the flight ends at its deadline").unwrap();
    assert!(matches!(first, Err(GatewayError::DeadlineExceeded)));
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(layer.shared.metrics.in_flight.get(), 0);
    // The key is free: the next request leads a new flight.
    let next = start(&mut svc, token("c-1"));
    assert_eq!(layer.in_flight(), 1);
    gate.add_permits(2);
    let res = finish(next).await;
    assert_eq!(dedup_header(&res), Some("leader"));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn a_team_limit_refusal_goes_to_the_leader_alone() {
    let (upstream, gate) = Upstream::answering(|n| match n {
        1 => Err(team_limited()),
        n => Ok(json(201, &format!(r#"{{"authToken":"tok-{n}"}}"#))),
    })
    .held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let leader = start(&mut svc, token("c-1"));
    let followers: Vec<_> = (0..3).map(|_| start(&mut svc, token("c-1"))).collect();
    gate.add_permits(1);
    let refused = leader.await.unwrap();
    assert!(matches!(
        refused,
        Err(GatewayError::RateLimited {
            limit: Limit::Team,
            ..
        })
    ));
    // The followers enter again: one leads a second call, the others wait for it.
    let waiting = &layer.shared.metrics.waiting;
    until("followers re-entered", || {
        upstream.calls() == 2 && waiting.get() == 2
    })
    .await;
    gate.add_permits(1);
    let mut outcomes = Vec::new();
    for follower in followers {
        let res = finish(follower).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        outcomes.push(dedup_header(&res).unwrap().to_owned());
        assert_eq!(text(res).await, r#"{"authToken":"tok-2"}"#);
    }
    outcomes.sort();
    assert_eq!(outcomes, ["coalesced", "coalesced", "leader"]);
    assert_eq!(upstream.calls(), 2);
    assert_eq!(
        (answered(&layer, "leader"), answered(&layer, "coalesced")),
        (1, 2)
    );
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test]
async fn shared_failures_are_not_counted_as_dedup_answers() {
    let (upstream, gate) = Upstream::answering(|_| Err(GatewayError::UpstreamConnect)).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let leader = start(&mut svc, token("c-1"));
    let follower = start(&mut svc, token("c-1"));
    gate.add_permits(1);
    for handle in [leader, follower] {
        assert!(matches!(
            handle.await.unwrap(),
            Err(GatewayError::UpstreamConnect)
        ));
    }
    for outcome in ["leader", "coalesced", "replayed"] {
        assert_eq!(answered(&layer, outcome), 0, "{outcome}");
    }
}
