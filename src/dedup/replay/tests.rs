use bytes::Bytes;
use http::HeaderMap;
use serde_json::json;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn token_lifetime_prefers_response_then_request_then_default() {
    let default = secs(86_400);
    let cases = [
        (
            "response says 3600",
            json!({"expiryTime": 3600}),
            json!({"expiryTime": 60}),
            secs(3600),
        ),
        (
            "request only",
            json!({"authToken": "t"}),
            json!({"expiryTime": 7200}),
            secs(7200),
        ),
        (
            "neither: default",
            json!({}),
            json!({"clientId": "c"}),
            default,
        ),
        (
            "KYB lifetime",
            json!({"tokenString": "t"}),
            json!({"lifetime": 1_296_000}),
            secs(1_296_000),
        ),
        (
            "expiryTime before lifetime",
            json!({}),
            json!({"expiryTime": 90, "lifetime": 900}),
            secs(90),
        ),
        (
            "digits in a string",
            json!({"expiryTime": " 1800 "}),
            json!({}),
            secs(1800),
        ),
        (
            "clamped to 30 days",
            json!({"expiryTime": 1_000_000_000_000u64}),
            json!({}),
            MAX_LIFETIME,
        ),
        (
            "bogus response, good request",
            json!({"expiryTime": "soon"}),
            json!({"expiryTime": 120}),
            secs(120),
        ),
        ("bool", json!({"expiryTime": true}), json!({}), default),
        ("null", json!({"expiryTime": null}), json!({}), default),
        ("negative", json!({"expiryTime": -5}), json!({}), default),
        ("fraction", json!({"expiryTime": 3.5}), json!({}), default),
        (
            "object",
            json!({"expiryTime": {"s": 1}}),
            json!({"lifetime": [1]}),
            default,
        ),
        ("not an object", json!([3600]), json!("3600"), default),
    ];
    for (name, response, request, want) in cases {
        assert_eq!(token_lifetime(&response, &request, default), want, "{name}");
    }
}

#[test]
fn only_live_successful_token_responses_are_kept() {
    let policy = LifetimePolicy {
        default: HOUR,
        margin: secs(60),
    };
    let token = br#"{"authToken":"t","expiryTime":3600}"#;
    type Case = (
        &'static str,
        u16,
        &'static [u8],
        &'static [u8],
        Option<Duration>,
    );
    let cases: [Case; 12] = [
        ("201 with authToken", 201, token, b"{}", Some(secs(3540))),
        ("200 is success too", 200, token, b"{}", Some(secs(3540))),
        (
            "KYB tokenString and lifetime",
            201,
            br#"{"tokenString":"k"}"#,
            br#"{"lifetime":600}"#,
            Some(secs(540)),
        ),
        (
            "default when nobody says",
            201,
            br#"{"authToken":"t"}"#,
            b"not json",
            Some(secs(3540)),
        ),
        (
            "lifetime equal to margin",
            201,
            br#"{"authToken":"t","expiryTime":60}"#,
            b"{}",
            None,
        ),
        (
            "lifetime under margin",
            201,
            br#"{"authToken":"t","expiryTime":30}"#,
            b"{}",
            None,
        ),
        ("202 is not a token answer", 202, token, b"{}", None),
        ("409", 409, token, b"{}", None),
        ("500", 500, token, b"{}", None),
        (
            "no token",
            201,
            br#"{"scanRef":"s","expiryTime":3600}"#,
            b"{}",
            None,
        ),
        (
            "empty token",
            201,
            br#"{"authToken":"","expiryTime":3600}"#,
            b"{}",
            None,
        ),
        ("not json", 201, b"<html>", b"{}", None),
    ];
    for (name, status, response, request, want) in cases {
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(
            replay_ttl(status, response, request, &policy),
            want,
            "{name}"
        );
    }
}

fn replay(body: &'static str, fingerprint: u64) -> Replay {
    let response = SharedResponse::new(StatusCode::CREATED, HeaderMap::new(), Bytes::from(body));
    Replay {
        response: Arc::new(response),
        fingerprint,
        team: 0,
    }
}

fn store(max_entries: u64, max_bytes: u64) -> (ReplayStore<&'static str>, IntGauge) {
    let gauge = IntGauge::new("replay_entries", "test").unwrap();
    (
        ReplayStore::new(max_entries, max_bytes, gauge.clone()),
        gauge,
    )
}

#[tokio::test(start_paused = true)]
async fn replays_until_the_ttl_ends_by_tokio_time() {
    let (store, gauge) = store(100, 1 << 20);
    store.insert("k", replay("a", 7), secs(100));
    tokio::time::advance(secs(99)).await;
    let hit = store.get(&"k").expect("live entry");
    assert_eq!(
        (hit.response.body().as_ref(), hit.fingerprint),
        (&b"a"[..], 7)
    );
    tokio::time::advance(secs(1)).await;
    assert!(store.get(&"k").is_none());
    assert!(store.is_empty());
    assert_eq!(gauge.get(), 0);
}

#[tokio::test]
async fn replacing_an_entry_keeps_one() {
    let (store, gauge) = store(100, 1 << 20);
    store.insert("k", replay("a", 1), HOUR);
    store.insert("k", replay("b", 2), HOUR);
    assert_eq!(store.get(&"k").unwrap().fingerprint, 2);
    assert_eq!(store.len(), 1);
    assert_eq!(gauge.get(), 1);
}

#[tokio::test]
async fn is_bounded_in_entries() {
    let (store, gauge) = store(2, 1 << 20);
    for key in ["a", "b", "c", "d"] {
        store.insert(key, replay("x", 0), HOUR);
    }
    assert_eq!(store.len(), 2);
    assert_eq!(gauge.get(), 2);
    assert!(store.get(&"d").is_some(), "the newest entry is kept");
}

#[tokio::test]
async fn is_bounded_in_bytes() {
    // 100 slots of 40 bytes: a 1000-byte response weighs 25 slots or more.
    let (store, _) = store(100, 4_000);
    let big: &'static str = Box::leak("x".repeat(1000).into_boxed_str());
    for key in ["a", "b", "c", "d", "e", "f"] {
        store.insert(key, replay(big, 0), HOUR);
    }
    assert!(store.len() <= 3, "{} entries kept", store.len());
    assert!(store.get(&"f").is_some(), "the newest entry is kept");
}

#[tokio::test(start_paused = true)]
async fn the_scan_ref_index_follows_replacements_expiry_and_ends() {
    let (store, gauge) = store(100, 1 << 20);
    assert!(
        !store.holds_sessions(),
        "nothing stored: status answers are not read"
    );
    store.insert("k", replay(r#"{"authToken":"a","scanRef":"s1"}"#, 1), HOUR);
    assert!(store.holds_sessions());
    store.insert("k", replay(r#"{"authToken":"b","scanRef":"s2"}"#, 2), HOUR);
    assert_eq!(store.indexed(), 1, "the replaced session's scanRef is gone");
    assert!(!store.end("s1"), "s1 is no longer stored");
    assert_eq!(store.get(&"k").unwrap().fingerprint, 2);
    // The same session stored again (as a 409 path may) keeps its mapping.
    store.insert("k", replay(r#"{"authToken":"b","scanRef":"s2"}"#, 2), HOUR);
    assert_eq!(store.indexed(), 1);
    assert!(store.end("s2"));
    assert!(store.get(&"k").is_none());
    assert_eq!((store.indexed(), gauge.get()), (0, 0));
    assert!(!store.holds_sessions());
    // An entry that expires takes its mapping with it.
    store.insert(
        "j",
        replay(r#"{"authToken":"c","scanRef":"s3"}"#, 3),
        secs(10),
    );
    tokio::time::advance(secs(10)).await;
    assert!(store.get(&"j").is_none());
    assert_eq!(store.indexed(), 0);
    assert!(!store.end("s3"));
}

#[tokio::test(start_paused = true)]
async fn a_confirmed_session_is_fresh_again() {
    let (store, _) = store(100, 1 << 20);
    store.insert("k", replay(r#"{"authToken":"a","scanRef":"s1"}"#, 1), HOUR);
    tokio::time::advance(secs(90)).await;
    let (_, fresh) = store.lookup(&"k").unwrap();
    assert_eq!(fresh.confirmed_at.elapsed(), secs(90));
    store.confirm(&"k", "other-scan");
    assert_eq!(
        store.lookup(&"k").unwrap().1.confirmed_at.elapsed(),
        secs(90)
    );
    store.confirm(&"k", "s1");
    assert_eq!(
        store.lookup(&"k").unwrap().1.confirmed_at.elapsed(),
        secs(0)
    );
}
