//! Teams that share an account share the clientId space, but never each other's sessions.

use super::*;

fn beta(client_id: &str) -> Request<Bytes> {
    let body = format!(r#"{{"clientId":"{client_id}"}}"#);
    request_of(1, KYC, 0, client_id, &body)
}

fn in_use_error(result: Result<Response<Body>, GatewayError>) -> bool {
    matches!(result, Err(GatewayError::ClientIdInUse))
}

#[tokio::test]
async fn another_team_gets_409_during_and_after_the_flight_that_created_the_session() {
    let (upstream, gate) = Upstream::tokens(3600).held();
    let (layer, mut svc) = stack(&upstream, config(true));
    let alpha = start(&mut svc, token("victim-42"));
    assert_eq!(layer.in_flight(), 1);
    // While alpha's call is held upstream: answered at once, not made to wait.
    assert!(in_use_error(svc.clone().oneshot(beta("victim-42")).await));
    assert_eq!(layer.shared.metrics.waiting.get(), 0);
    gate.add_permits(1);
    let created = finish(alpha).await;
    assert_eq!(dedup_header(&created), Some("leader"));
    // After: the stored session is alpha's alone.
    assert!(in_use_error(svc.clone().oneshot(beta("victim-42")).await));
    let again = svc.clone().oneshot(token("victim-42")).await.unwrap();
    assert_eq!(dedup_header(&again), Some("replayed"));
    assert_eq!(text(again).await, text(created).await);
    assert_eq!(upstream.calls(), 1);
    assert_eq!(in_use(&layer, OTHER_TEAM), 2);
    assert_eq!(in_use(&layer, TEAM), 0);
    for outcome in ["leader", "coalesced", "replayed"] {
        assert_eq!(answered_for(&layer, OTHER_TEAM, outcome), 0, "{outcome}");
    }
}

#[tokio::test]
async fn a_team_is_free_to_use_a_client_id_no_team_holds() {
    let upstream = Upstream::tokens(3600);
    let (layer, svc) = stack(&upstream, config(true));
    let res = svc.clone().oneshot(beta("fresh-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("leader"));
    assert!(in_use_error(svc.clone().oneshot(token("fresh-1")).await));
    let replayed = svc.oneshot(beta("fresh-1")).await.unwrap();
    assert_eq!(dedup_header(&replayed), Some("replayed"));
    assert_eq!(upstream.calls(), 1);
    assert_eq!(in_use(&layer, TEAM), 1);
}

#[tokio::test]
async fn an_upstream_409_is_never_answered_with_another_teams_stored_token() {
    // Another team's flight stores its session while our call is upstream.
    let (upstream, shared_slot) = stores_then_conflicts(br#"{"authToken":"tok-beta"}"#, 0, 1);
    let (layer, svc) = stack(&upstream, config(true));
    shared_slot.set(Arc::clone(&layer.shared)).ok().unwrap();
    assert!(in_use_error(svc.oneshot(token("c-1")).await));
    assert_eq!(in_use(&layer, TEAM), 1);
    assert_eq!(answered(&layer, "replayed"), 0);
}
