//! Replay ends with the session: the recheck before replaying an older entry, a proxied status
//! answer, and the handle a final webhook uses. Paused time: no test waits for real.

use std::sync::Mutex;

use super::*;
use crate::context::ContextExt;

const STATUS: Route = Route {
    kind: RouteKind::Other,
    label: "/api/v2/status",
};

/// A scripted iDenfy that tells calls apart by path: tokens `tok-N` with scanRef `scan-N`, and
/// status answers from `status` (a status word, or `None` for a 500). Each call's path is kept;
/// status calls wait for a permit of `gate` when one is set.
#[derive(Clone)]
struct Routed {
    paths: Arc<Mutex<Vec<String>>>,
    status: Arc<Mutex<Option<&'static str>>>,
    gate: Option<Arc<Semaphore>>,
}

impl Routed {
    fn new(status: Option<&'static str>) -> Self {
        Routed {
            paths: Arc::default(),
            status: Arc::new(Mutex::new(status)),
            gate: None,
        }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    fn count(&self, path: &str) -> usize {
        self.paths().iter().filter(|p| *p == path).count()
    }

    fn answer(&self, path: &str, tokens: usize) -> Result<Response<Body>, GatewayError> {
        if path == "/api/v2/token" {
            return Ok(json(
                201,
                &format!(
                    r#"{{"authToken":"tok-{tokens}","scanRef":"scan-{tokens}","expiryTime":3600}}"#
                ),
            ));
        }
        match *self.status.lock().unwrap() {
            Some(word) => Ok(json(
                200,
                &format!(r#"{{"status":"{word}","scanRef":"scan-1"}}"#),
            )),
            None => Ok(json(500, r#"{"identifier":"INTERNAL","message":"x"}"#)),
        }
    }
}

fn routed_stack(
    up: &Routed,
    recheck_after: Duration,
) -> (
    DedupLayer,
    impl Service<
            Request<Bytes>,
            Response = Response<Body>,
            Error = GatewayError,
            Future = ResponseFuture,
        > + Clone,
) {
    let cfg = config::Dedup {
        recheck_after,
        ..config(true)
    };
    let layer = DedupLayer::new(
        &cfg,
        1024,
        FLIGHT_DEADLINE,
        DedupMetrics::new(&Registry::new()).unwrap(),
    );
    let up = up.clone();
    let inner = tower::service_fn(move |req: Request<Bytes>| {
        let up = up.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let tokens = {
                let mut paths = up.paths.lock().unwrap();
                paths.push(path.clone());
                paths.iter().filter(|p| *p == "/api/v2/token").count()
            };
            if path == "/api/v2/status" {
                // The recheck goes upstream as the caller's status call.
                assert_eq!(req.route(), Some(STATUS));
                assert!(req.caller().is_some());
                if let Some(gate) = &up.gate {
                    gate.acquire().await.unwrap().forget();
                }
            }
            up.answer(&path, tokens)
        }) as ResponseFuture
    });
    let svc = layer.layer(inner);
    (layer, svc)
}

fn status_request(scan_ref: &str) -> Request<Bytes> {
    let mut req = request(
        STATUS,
        0,
        "unused",
        &format!(r#"{{"scanRef":"{scan_ref}"}}"#),
    );
    *req.uri_mut() = http::Uri::from_static("/api/v2/status");
    req.extensions_mut().remove::<ClientId>();
    req
}

fn rechecks(layer: &DedupLayer, result: &str) -> u64 {
    layer
        .shared
        .metrics
        .rechecks
        .with_label_values(&[result])
        .get()
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_fresh_entry_is_replayed_without_a_recheck() {
    let up = Routed::new(Some("APPROVED"));
    let (_layer, svc) = routed_stack(&up, MINUTE);
    svc.clone().oneshot(token("c-1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    assert_eq!(up.paths(), ["/api/v2/token"]);
}

#[tokio::test(start_paused = true)]
async fn an_older_entry_is_rechecked_and_replayed_while_active() {
    let up = Routed::new(Some("ACTIVE"));
    let (layer, svc) = routed_stack(&up, MINUTE);
    svc.clone().oneshot(token("c-1")).await.unwrap();
    tokio::time::advance(MINUTE).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    assert!(text(res).await.contains("tok-1"));
    assert_eq!(up.paths(), ["/api/v2/token", "/api/v2/status"]);
    // Confirmed live: the next minute replays without asking again.
    tokio::time::advance(Duration::from_secs(59)).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    assert_eq!(up.count("/api/v2/status"), 1);
    assert_eq!(rechecks(&layer, "live"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_recheck_that_finds_the_session_over_leads_a_new_session() {
    let up = Routed::new(Some("APPROVED"));
    let (layer, svc) = routed_stack(&up, MINUTE);
    svc.clone().oneshot(token("c-1")).await.unwrap();
    tokio::time::advance(MINUTE).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("leader"));
    assert!(text(res).await.contains("tok-2"));
    assert_eq!(
        up.paths(),
        ["/api/v2/token", "/api/v2/status", "/api/v2/token"]
    );
    assert_eq!(rechecks(&layer, "over"), 1);
    // The new session is the one replayed now.
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    assert!(text(res).await.contains("tok-2"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_recheck_still_replays() {
    let up = Routed::new(None);
    let (layer, svc) = routed_stack(&up, MINUTE);
    svc.clone().oneshot(token("c-1")).await.unwrap();
    tokio::time::advance(MINUTE).await;
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    assert_eq!(rechecks(&layer, "failed"), 1);
    assert_eq!(up.count("/api/v2/token"), 1);
}

#[tokio::test(start_paused = true)]
async fn zero_rechecks_before_every_replay() {
    let up = Routed::new(Some("ACTIVE"));
    let (_layer, svc) = routed_stack(&up, Duration::ZERO);
    svc.clone().oneshot(token("c-1")).await.unwrap();
    for _ in 0..3 {
        let res = svc.clone().oneshot(token("c-1")).await.unwrap();
        assert_eq!(dedup_header(&res), Some("replayed"));
    }
    assert_eq!(up.count("/api/v2/status"), 3);
}

#[tokio::test(start_paused = true)]
async fn one_recheck_per_key_at_a_time() {
    let mut up = Routed::new(Some("ACTIVE"));
    let gate = Arc::new(Semaphore::new(0));
    up.gate = Some(Arc::clone(&gate));
    let (layer, mut svc) = routed_stack(&up, MINUTE);
    svc.clone().oneshot(token("c-1")).await.unwrap();
    tokio::time::advance(MINUTE).await;
    let callers: Vec<_> = (0..5).map(|_| start(&mut svc, token("c-1"))).collect();
    while layer.shared.metrics.waiting.get() < 4 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(5);
    for caller in callers {
        assert_eq!(dedup_header(&finish(caller).await), Some("replayed"));
    }
    assert_eq!(up.count("/api/v2/status"), 1);
}

#[tokio::test]
async fn a_status_answer_other_than_active_ends_replay() {
    let up = Routed::new(Some("ACTIVE"));
    let (layer, svc) = routed_stack(&up, Duration::from_secs(3600));
    svc.clone().oneshot(token("c-1")).await.unwrap();
    // ACTIVE: the entry stays.
    let res = svc.clone().oneshot(status_request("scan-1")).await.unwrap();
    assert_eq!(text(res).await, r#"{"status":"ACTIVE","scanRef":"scan-1"}"#);
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
    // DENIED: relayed unchanged, and the next token request leads.
    *up.status.lock().unwrap() = Some("DENIED");
    let res = svc.clone().oneshot(status_request("scan-1")).await.unwrap();
    assert_eq!(text(res).await, r#"{"status":"DENIED","scanRef":"scan-1"}"#);
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("leader"));
    let ended = &layer.shared.metrics.replay_ended;
    assert_eq!(ended.with_label_values(&["answer"]).get(), 1);
}

#[tokio::test]
async fn the_handle_ends_replay_for_its_scan_ref_only() {
    let up = Routed::new(Some("ACTIVE"));
    let (layer, svc) = routed_stack(&up, Duration::from_secs(3600));
    svc.clone().oneshot(token("c-1")).await.unwrap();
    svc.clone().oneshot(token("c-2")).await.unwrap();
    let ends = layer.session_ends();
    assert!(!ends.end("scan-unknown", "webhook"));
    assert!(ends.end("scan-1", "webhook"));
    assert!(!ends.end("scan-1", "webhook"), "already ended");
    let res = svc.clone().oneshot(token("c-1")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("leader"));
    let res = svc.clone().oneshot(token("c-2")).await.unwrap();
    assert_eq!(dedup_header(&res), Some("replayed"));
}
