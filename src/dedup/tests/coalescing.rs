//! Concurrent token requests for one key: one upstream call, its answer shared, nobody cancelled.

use super::*;

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
    late.context_mut().deadline = Some(Deadline(Instant::now() + Duration::from_secs(5)));
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
    no_caller.context_mut().caller = None;
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
