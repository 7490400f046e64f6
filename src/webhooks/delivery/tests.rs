//! The queue over a scripted transport and the real disk store, on paused time: retries, the
//! order per scanRef, giving up, dead letters and their re-send, the delivery's headers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};

use super::*;
use crate::secret::{Secret, SecretSource};
use crate::webhooks::disk::DiskStore;
use crate::webhooks::signature::verify;
use crate::webhooks::store::{Accepted, Meta, NewEvent};

/// Answers every delivery with `status` (0: a connection error) and records what it was sent.
#[derive(Default)]
struct Scripted {
    status: AtomicU16,
    sent: Mutex<Vec<(HeaderMap, Bytes)>>,
}

impl Scripted {
    fn answering(status: u16) -> Arc<Self> {
        let s = Arc::new(Scripted::default());
        s.status.store(status, Ordering::SeqCst);
        s
    }

    fn bodies(&self) -> Vec<Bytes> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

impl Transport for Scripted {
    fn post(
        &self,
        _url: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<StatusCode, String>> + Send>> {
        self.sent.lock().unwrap().push((headers, body));
        let status = self.status.load(Ordering::SeqCst);
        Box::pin(async move {
            match status {
                0 => Err("connection refused".into()),
                s => Ok(StatusCode::from_u16(s).unwrap()),
            }
        })
    }
}

const TEAM_KEY: &str = "team-key";

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn WebhookStore>,
    queue: Arc<Queue>,
    stop: watch::Sender<bool>,
}

fn setup(transport: Arc<Scripted>, max_age: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn WebhookStore> = Arc::new(DiskStore::open(dir.path()).unwrap());
    let teams = vec![Target {
        name: "payments".into(),
        webhook: Some((
            Uri::from_static("http://127.0.0.1:9/hook"),
            WebhookKey::new(SecretSource::Inline(Secret::new(TEAM_KEY))),
        )),
    }];
    let metrics = WebhookMetrics::new(&prometheus::Registry::new()).unwrap();
    let queue = Arc::new(Queue {
        store: Arc::clone(&store),
        teams,
        unknown: UnknownScanRef::Team(0),
        recent: Arc::default(),
        timing: Timing {
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            max_age,
            delivery_timeout: Duration::from_secs(10),
        },
        transport,
        metrics,
        clock: Clock::new(),
        wake: Arc::new(Notify::new()),
        schedule: Arc::default(),
        fleet: None,
    });
    let (stop, rx) = watch::channel(false);
    tokio::spawn(Arc::clone(&queue).run(rx));
    Setup {
        _dir: dir,
        store,
        queue,
        stop,
    }
}

impl Setup {
    fn receive(&self, id: &str, scan_ref: &str, body: &'static str) {
        let event = NewEvent {
            meta: Meta {
                id: id.into(),
                account: "main".into(),
                scan_ref: scan_ref.into(),
                event_type: "IDENTIFICATION_MANUAL_FINISHED".into(),
                content_type: Some("application/json".into()),
                received_ms: self.queue.clock.now_ms(),
            },
            body: Bytes::from_static(body.as_bytes()),
            dedup_key: *sha2_key(id),
        };
        // As the intake does: stored, then scheduled.
        let Accepted::Queued(seq) = self.store.accept(&event).unwrap() else {
            panic!("a duplicate");
        };
        lock(&self.queue.schedule).add(Pending {
            seq,
            scan_ref: scan_ref.into(),
            attempts: 0,
            next_at_ms: event.meta.received_ms,
            received_ms: event.meta.received_ms,
        });
        self.queue.wake.notify_one();
    }

    fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            store: Arc::clone(&self.store),
            schedule: Some(Arc::clone(&self.queue.schedule)),
            wake: Arc::clone(&self.queue.wake),
            clock: self.queue.clock,
        }
    }
}

fn sha2_key(id: &str) -> Box<[u8; 32]> {
    use sha2::Digest;
    Box::new(sha2::Sha256::digest(id.as_bytes()).into())
}

/// Lets the queue's tasks (and the store's blocking calls) run until `done`, moving paused time
/// forward a second at a time; at most `limit` of simulated time.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < end,
            "not done within {limit:?}"
        );
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_delivery_carries_the_body_the_team_signature_and_a_stable_id() {
    let transport = Scripted::answering(503);
    let s = setup(Arc::clone(&transport), Duration::from_secs(3600));
    s.receive("d-1", "scan-1", r#"{"scanRef":"scan-1", "final":true}"#);
    until(Duration::from_secs(30), || transport.bodies().len() >= 2).await;
    transport.status.store(200, Ordering::SeqCst);
    until(Duration::from_secs(300), || {
        s.store.pending().unwrap().is_empty()
    })
    .await;
    let sent = transport.sent.lock().unwrap().clone();
    let ids: HashSet<_> = sent
        .iter()
        .map(|(h, _)| h[X_GATEWAY_DELIVERY_ID].clone())
        .collect();
    assert_eq!(ids.len(), 1, "one id for every attempt");
    let (headers, body) = sent.last().unwrap();
    assert_eq!(&body[..], br#"{"scanRef":"scan-1", "final":true}"#);
    assert_eq!(headers[IDENFY_EVENT_TYPE], "IDENTIFICATION_MANUAL_FINISHED");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(verify(
        TEAM_KEY.as_bytes(),
        body,
        headers[IDENFY_SIGNATURE].as_bytes()
    ));
    let _ = s.stop.send(true);
}

#[tokio::test(start_paused = true)]
async fn a_scan_refs_webhooks_go_in_order_behind_a_failing_first() {
    let transport = Scripted::answering(503);
    let s = setup(Arc::clone(&transport), Duration::from_secs(3600));
    s.receive("a", "scan-1", "1");
    s.receive("b", "scan-1", "2");
    s.receive("c", "scan-2", "x");
    until(Duration::from_secs(60), || transport.bodies().len() >= 4).await;
    // Only the heads of each scanRef were tried: "1" (again and again) and "x", never "2".
    assert!(!transport.bodies().iter().any(|b| &b[..] == b"2"));
    transport.status.store(200, Ordering::SeqCst);
    until(Duration::from_secs(300), || {
        s.store.pending().unwrap().is_empty()
    })
    .await;
    let delivered: Vec<Bytes> = transport.bodies();
    let first_two = delivered.iter().position(|b| &b[..] == b"2").unwrap();
    let last_one = delivered.iter().rposition(|b| &b[..] == b"1").unwrap();
    assert!(last_one < first_two, "2 only after 1 was delivered");
    let _ = s.stop.send(true);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_stays_down_sends_the_delivery_to_dead_letters_and_a_retry_resends_it() {
    let transport = Scripted::answering(0);
    let s = setup(Arc::clone(&transport), Duration::from_secs(600));
    s.receive("d-1", "scan-1", "{}");
    let dead = s.dead_letters();
    until(Duration::from_secs(700), || {
        !s.store.dead().unwrap().is_empty()
    })
    .await;
    let letters = dead.list().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].id.as_str(), letters[0].reason.as_str()),
        ("d-1", "expired")
    );
    assert_eq!(letters[0].team.as_deref(), Some("payments"));
    let attempts = transport.bodies().len();
    assert!(attempts > 3, "retried with backoff: {attempts} attempts");
    assert_eq!(letters[0].attempts as usize, attempts);
    assert!(s.store.pending().unwrap().is_empty());
    // The endpoint is back; an operator re-sends.
    transport.status.store(204, Ordering::SeqCst);
    assert!(!dead.retry("nope").await.unwrap());
    assert!(dead.retry("d-1").await.unwrap());
    until(Duration::from_secs(60), || {
        s.store.pending().unwrap().is_empty() && s.store.event(0).unwrap().is_none()
    })
    .await;
    assert!(dead.list().await.unwrap().is_empty());
    assert_eq!(transport.bodies().len(), attempts + 1);
    let _ = s.stop.send(true);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_of_the_request_itself_gives_up_at_once() {
    let transport = Scripted::answering(422);
    let s = setup(Arc::clone(&transport), Duration::from_secs(3600));
    s.receive("d-1", "scan-1", "{}");
    until(Duration::from_secs(10), || {
        !s.store.dead().unwrap().is_empty()
    })
    .await;
    assert_eq!(s.store.dead().unwrap()[0].reason, "refused_422");
    assert_eq!(transport.bodies().len(), 1);
    let _ = s.stop.send(true);
}

#[test]
fn backoff_is_full_jitter_between_base_and_cap() {
    let (base, cap) = (Duration::from_secs(1), Duration::from_secs(10));
    for attempt in 1..40 {
        let d = backoff(attempt, base, cap);
        assert!(d >= base && d <= cap, "{attempt}: {d:?}");
    }
    assert_eq!(backoff(1, base, cap), base);
    assert!((0..200).any(|_| backoff(10, base, cap) > Duration::from_secs(5)));
}
