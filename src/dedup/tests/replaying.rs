//! Later token requests for a key: the stored live token, the 409 rules, mismatched bodies.

use super::*;

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
    let stored = br#"{"authToken":"tok-elsewhere"}"#;
    let our_body = fingerprint(br#"{"clientId":"c-1"}"#);
    let (upstream, shared_slot) = stores_then_conflicts(stored, our_body, 0);
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
