//! Webhooks end to end: iDenfy (the simulator, or this test signing as iDenfy) posts to the
//! gateway's webhook listener; test receivers stand for the teams' endpoints. Over real sockets.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use idenfy_gateway::simulator::{Finish, Simulator, SimulatorConfig};
use idenfy_gateway::webhooks::{sign, X_GATEWAY_DELIVERY_ID};
use support::gateway::{config_text, metric, send, Answer, TestGateway};
use support::upstream::{refusing_upstream, MockUpstream, Recorded, Reply};

const ACCOUNT_KEY: &str = "account-hook-key";
const PAYMENTS_KEY: &str = "payments-hook-key";
const GROWTH_KEY: &str = "growth-hook-key";
const PAYMENTS: (&str, &str) = ("authorization", "Bearer team-token");
const GROWTH: (&str, &str) = ("authorization", "Bearer growth-token");

/// The config: one account with a webhook key, teams `payments` and `growth` delivering to
/// `payments_url` and `growth_url`, the store in `dir`; `webhooks` lines added to `[webhooks]`.
fn config(
    upstream: &str,
    payments_url: &str,
    growth_url: &str,
    dir: &str,
    webhooks: &str,
) -> String {
    let sim = SimulatorConfig::default();
    let extra = format!(
        r#"
[[account]]
name = "main"
api_key = "{key}"
api_secret = "{secret}"
webhook_key = "{ACCOUNT_KEY}"

[[team]]
name = "payments"
token = "team-token"
webhook_url = "{payments_url}/hooks"
webhook_key = "{PAYMENTS_KEY}"

[[team]]
name = "growth"
token = "growth-token"
webhook_url = "{growth_url}/hooks"
webhook_key = "{GROWTH_KEY}"

[retry]
base = "1ms"
cap = "5ms"

[webhooks]
dir = "{dir}"
retry_base = "10ms"
retry_cap = "50ms"
{webhooks}
"#,
        key = sim.api_key,
        secret = sim.api_secret,
    );
    config_text(upstream, &extra).replace("[listen]\n", "[listen]\nwebhook = \"127.0.0.1:0\"\n")
}

struct Setup {
    sim: Simulator,
    gw: TestGateway,
    payments: MockUpstream,
    growth: MockUpstream,
    _dir: tempfile::TempDir,
}

async fn setup(webhooks: &str) -> Setup {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let (payments, growth) = (MockUpstream::start().await, MockUpstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &sim.url(),
        &payments.url(),
        &growth.url(),
        dir.path().to_str().unwrap(),
        webhooks,
    );
    let gw = TestGateway::start(&text).await;
    Setup {
        sim,
        gw,
        payments,
        growth,
        _dir: dir,
    }
}

fn hook_url(gw: &TestGateway, account: &str) -> String {
    let addr = gw.running.webhook_addr.expect("webhook listener");
    format!("http://{addr}/webhooks/idenfy/{account}")
}

/// Posts `body` as iDenfy would, signed with `key` (no signature when `None`).
async fn post_hook(url: &str, key: Option<&str>, event: &str, body: &str) -> Answer {
    let signature = key.map(|k| sign(k.as_bytes(), body.as_bytes()));
    let mut headers = vec![
        ("content-type", "application/json"),
        ("idenfy-event-type", event),
    ];
    if let Some(sig) = &signature {
        headers.push(("idenfy-signature", sig.as_str()));
    }
    send(Method::POST, url, &headers, body.to_owned()).await
}

fn payload(scan_ref: &str, overall: &str, is_final: bool) -> String {
    // Spacing and key order as a sender might have them: delivered byte for byte.
    format!(
        "{{\"final\": {is_final},  \"status\":{{\"overall\":\"{overall}\"}},\n \"scanRef\":\"{scan_ref}\", \"clientId\":\"c\"}}"
    )
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 20 s"))
}

async fn token(gw: &TestGateway, team: (&str, &str), client_id: &str) -> Answer {
    let body = format!(r#"{{"clientId":"{client_id}"}}"#);
    let res = send(Method::POST, &gw.url("/api/v2/token"), &[team], body).await;
    assert_eq!(res.status, StatusCode::CREATED, "{:?}", res.body);
    res
}

fn verifies(key: &str, r: &Recorded) -> bool {
    let header = r.headers["idenfy-signature"].to_str().unwrap();
    header == sign(key.as_bytes(), &r.body)
}

#[tokio::test]
async fn a_good_signature_is_accepted_and_bad_missing_or_unknown_account_ones_are_refused() {
    let s = setup("unknown = \"payments\"").await;
    let url = hook_url(&s.gw, "main");
    let body = payload("scan-x", "APPROVED", true);
    let bad = post_hook(&url, Some("not-the-key"), "IDENTIFICATION", &body).await;
    let missing = post_hook(&url, None, "IDENTIFICATION", &body).await;
    let unknown = post_hook(&hook_url(&s.gw, "nope"), Some(ACCOUNT_KEY), "X", &body).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.header("x-gateway-error"), "webhook_bad_signature");
    assert_eq!(bad.json()["identifier"], "UNAUTHORIZED");
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.header("x-gateway-error"), "webhook_unsigned");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // Nothing else is served there.
    let other = send(
        Method::GET,
        &url.replace("/webhooks/idenfy/main", "/metrics"),
        &[],
        "",
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let text = s.gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_webhooks_refused_total{reason=\"webhook_bad_signature\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_webhooks_refused_total{reason=\"webhook_unsigned\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_webhooks_refused_total{reason=\"webhook_unknown_account\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "idenfy_gateway_webhooks_received_total"), 0.0);
    // The good one is the only one delivered (unknown scanRefs go to payments here).
    let good = post_hook(&url, Some(ACCOUNT_KEY), "IDENTIFICATION", &body).await;
    assert_eq!(good.status, StatusCode::OK);
    within("delivery", s.payments.wait_for(1)).await;
    let got = s.payments.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body.as_bytes());
    assert_eq!(s.growth.count(), 0);
}

#[tokio::test]
async fn each_team_gets_its_own_sessions_webhooks_byte_for_byte_signed_with_its_own_key() {
    let s = setup("").await;
    let pay = token(&s.gw, PAYMENTS, "u-pay").await.json()["scanRef"]
        .as_str()
        .unwrap()
        .to_owned();
    let grow = token(&s.gw, GROWTH, "u-grow").await.json()["scanRef"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = hook_url(&s.gw, "main");
    let (pay_body, grow_body) = (
        payload(&pay, "APPROVED", true),
        payload(&grow, "DENIED", true),
    );
    let event = "IDENTIFICATION_MANUAL_FINISHED";
    assert_eq!(
        post_hook(&url, Some(ACCOUNT_KEY), event, &pay_body)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post_hook(&url, Some(ACCOUNT_KEY), event, &grow_body)
            .await
            .status,
        StatusCode::OK
    );
    within("payments delivery", s.payments.wait_for(1)).await;
    within("growth delivery", s.growth.wait_for(1)).await;
    for (receiver, body, key, other_key) in [
        (&s.payments, &pay_body, PAYMENTS_KEY, GROWTH_KEY),
        (&s.growth, &grow_body, GROWTH_KEY, PAYMENTS_KEY),
    ] {
        let got = receiver.received();
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(r.uri, "/hooks");
        assert_eq!(r.body, body.as_bytes(), "byte-identical");
        assert_eq!(r.headers["idenfy-event-type"], event);
        assert!(verifies(key, r), "signed with the team's key");
        assert!(!verifies(ACCOUNT_KEY, r) && !verifies(other_key, r));
        assert!(!r.headers[X_GATEWAY_DELIVERY_ID].is_empty());
    }
}

#[tokio::test]
async fn the_ack_is_fast_while_the_receiver_is_down_and_delivery_follows_its_return() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let (down, down_url) = refusing_upstream();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &sim.url(),
        &down_url,
        &down_url,
        dir.path().to_str().unwrap(),
        "unknown = \"payments\"",
    );
    let gw = TestGateway::start(&text).await;
    let url = hook_url(&gw, "main");
    let body = payload("scan-down", "APPROVED", true);
    let res = within(
        "the acknowledgement",
        post_hook(&url, Some(ACCOUNT_KEY), "IDENTIFICATION", &body),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    // Not delivered yet: the queue holds it and retries.
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, "idenfy_gateway_webhooks_delivered_total"),
        0.0
    );
    // The receiver comes back on the same address.
    let receiver = MockUpstream::start_on(down.listen(64).unwrap());
    within("delivery after the return", receiver.wait_for(1)).await;
    assert_eq!(receiver.received()[0].body, body.as_bytes());
    drop(sim);
}

#[tokio::test]
async fn a_duplicate_from_idenfy_is_delivered_once() {
    let s = setup("unknown = \"growth\"").await;
    let url = hook_url(&s.gw, "main");
    let body = payload("scan-dup", "APPROVED", true);
    for _ in 0..3 {
        let res = post_hook(&url, Some(ACCOUNT_KEY), "IDENTIFICATION", &body).await;
        assert_eq!(res.status, StatusCode::OK);
    }
    // A different event type for the same scanRef is another event.
    let res = post_hook(&url, Some(ACCOUNT_KEY), "IDENTIFICATION_EXPIRED", &body).await;
    assert_eq!(res.status, StatusCode::OK);
    within("deliveries", s.growth.wait_for(2)).await;
    let text = s.gw.metrics().await;
    assert_eq!(
        metric(&text, "idenfy_gateway_webhooks_duplicates_total"),
        2.0
    );
    assert_eq!(metric(&text, "idenfy_gateway_webhooks_received_total"), 4.0);
    // Settled: both deliveries done, nothing more queued.
    for _ in 0..200 {
        if metric(
            &s.gw.metrics().await,
            "idenfy_gateway_webhooks_delivered_total",
        ) >= 2.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.growth.count(), 2);
}

#[tokio::test]
async fn webhooks_of_one_scan_ref_arrive_in_order() {
    let s = setup("unknown = \"payments\"").await;
    // The receiver fails the first two attempts: the first event is retried, the others wait.
    s.payments.push(Reply::json(503, "{}"));
    s.payments.push(Reply::json(503, "{}"));
    let url = hook_url(&s.gw, "main");
    let bodies: Vec<String> = (1..=3)
        .map(|i| format!(r#"{{"final":false,"scanRef":"scan-order","n":{i}}}"#))
        .collect();
    for body in &bodies {
        let res = post_hook(
            &url,
            Some(ACCOUNT_KEY),
            "IDENTIFICATION_AUTO_FINISHED",
            body,
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
    }
    within("deliveries", s.payments.wait_for(5)).await;
    let seen: Vec<String> = s
        .payments
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    let expected = [&bodies[0], &bodies[0], &bodies[0], &bodies[1], &bodies[2]];
    assert_eq!(seen.iter().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn an_endpoint_that_stays_down_fills_dead_letters_and_the_admin_call_resends() {
    let s = setup("unknown = \"payments\"\nmax_age = \"1s\"").await;
    s.payments.set_default(Reply::json(503, "{}"));
    let url = hook_url(&s.gw, "main");
    let body = payload("scan-dead", "DENIED", true);
    assert_eq!(
        post_hook(&url, Some(ACCOUNT_KEY), "IDENTIFICATION", &body)
            .await
            .status,
        StatusCode::OK
    );
    let admin = format!("http://{}", s.gw.running.admin_addr);
    let dead = within("a dead letter", async {
        loop {
            let res = send(Method::GET, &format!("{admin}/webhooks/dead"), &[], "").await;
            let list = res.json()["dead"].as_array().cloned().unwrap_or_default();
            if !list.is_empty() {
                return list;
            }
            // Polled: the last failed attempt and its burial leave no other signal.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(dead[0]["reason"], "expired");
    assert_eq!(dead[0]["team"], "payments");
    assert!(
        dead[0].get("body").is_none(),
        "no body on the admin listener"
    );
    let id = dead[0]["id"].as_str().unwrap().to_owned();
    let tries = s.payments.count();
    s.payments.set_default(Reply::json(200, "{}"));
    let missing = send(
        Method::POST,
        &format!("{admin}/webhooks/dead/nope/retry"),
        &[],
        "",
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["identifier"], "NOT_FOUND");
    assert_eq!(missing.header("x-gateway-error"), "dead_letter_not_found");
    let retried = send(
        Method::POST,
        &format!("{admin}/webhooks/dead/{id}/retry"),
        &[],
        "",
    )
    .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    within("the re-send", s.payments.wait_for(tries + 1)).await;
    let last = s.payments.received().pop().unwrap();
    assert_eq!(last.body, body.as_bytes());
    assert_eq!(last.headers[X_GATEWAY_DELIVERY_ID].to_str().unwrap(), id);
    let res = send(Method::GET, &format!("{admin}/webhooks/dead"), &[], "").await;
    assert_eq!(res.json()["dead"], serde_json::json!([]));
}

#[tokio::test]
async fn the_simulators_final_webhook_ends_replay_and_reaches_the_team() {
    let s = setup("").await;
    let hook = hook_url(&s.gw, "main");
    s.sim.update_settings(|settings| {
        settings.webhook_url = Some(hook);
        settings.webhook_key = Some(ACCOUNT_KEY.into());
    });
    let first = token(&s.gw, GROWTH, "u-hook").await;
    let scan = first.json()["scanRef"].as_str().unwrap().to_owned();
    let report = s.sim.finish(&scan, Finish::new("APPROVED")).await.unwrap();
    assert!(
        report.webhook.unwrap().delivered,
        "the gateway acknowledged"
    );
    let again = token(&s.gw, GROWTH, "u-hook").await;
    assert_eq!(again.header("x-gateway-dedup"), "leader");
    assert_ne!(again.json()["scanRef"], first.json()["scanRef"]);
    within("the team's delivery", s.growth.wait_for(1)).await;
    let r = &s.growth.received()[0];
    assert!(verifies(GROWTH_KEY, r));
    let delivered: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(delivered["scanRef"], scan.as_str());
    assert_eq!(delivered["status"]["overall"], "APPROVED");
    assert_eq!(s.payments.count(), 0);
    let text = s.gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_dedup_replay_ended_total{signal=\"webhook\"}"
        ),
        1.0
    );
}
