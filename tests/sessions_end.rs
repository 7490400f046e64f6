//! Replay ends when the session ends, end to end: the gateway in front of the simulator, whose
//! sessions are finished through its control API (`POST /__sim/sessions/{scanRef}/finish`), as in
//! the issue's demo. (The final-webhook signal is in `tests/webhooks.rs`.)

mod support;

use http::{Method, StatusCode};
use idenfy_gateway::simulator::{Simulator, SimulatorConfig};
use support::gateway::{config_text, metric, send, Answer, TestGateway, BEARER};

async fn setup(dedup: &str) -> (Simulator, TestGateway) {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let cfg = SimulatorConfig::default();
    let accounts = format!(
        "[[account]]\nname = \"main\"\napi_key = \"{}\"\napi_secret = \"{}\"\nrate = \"10000/s\"\nburst = 10000\n\
         [[team]]\nname = \"payments\"\ntoken = \"team-token\"\nrate = \"10000/s\"\nburst = 10000\n\
         [dedup]\n{dedup}\n",
        cfg.api_key, cfg.api_secret
    );
    let gw = TestGateway::start(&config_text(&sim.url(), &accounts)).await;
    (sim, gw)
}

async fn token(gw: &TestGateway, client_id: &str) -> Answer {
    let body = format!(r#"{{"clientId":"{client_id}"}}"#);
    let res = send(Method::POST, &gw.url("/api/v2/token"), &[BEARER], body).await;
    assert_eq!(res.status, StatusCode::CREATED, "{:?}", res.body);
    res
}

async fn finish(sim: &Simulator, scan_ref: &str, status: &str) {
    let url = format!("{}/__sim/sessions/{scan_ref}/finish", sim.url());
    let body = format!(r#"{{"status":"{status}"}}"#);
    let res = send(Method::POST, &url, &[], body).await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
}

fn scan_ref(res: &Answer) -> String {
    res.json()["scanRef"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_status_answer_showing_the_session_finished_ends_replay() {
    let (sim, gw) = setup("").await;
    let first = token(&gw, "u-finish").await;
    let scan = scan_ref(&first);
    finish(&sim, &scan, "APPROVED").await;
    let status = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[BEARER],
        format!(r#"{{"scanRef":"{scan}"}}"#),
    )
    .await;
    assert_eq!(status.json()["status"], "APPROVED");
    let again = token(&gw, "u-finish").await;
    assert_eq!(again.header("x-gateway-dedup"), "leader");
    assert_ne!(scan_ref(&again), scan, "a new session");
    assert_eq!(sim.counters().tokens_created_for("u-finish"), 2);
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_dedup_replay_ended_total{signal=\"answer\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_recheck_finds_the_session_finished_and_a_new_one_is_opened() {
    let (sim, gw) = setup("recheck_after = \"0s\"").await;
    let first = token(&gw, "u-recheck").await;
    let scan = scan_ref(&first);
    // Still active: the recheck confirms it and the session is replayed.
    let live = token(&gw, "u-recheck").await;
    assert_eq!(live.header("x-gateway-dedup"), "replayed");
    assert_eq!(live.body, first.body);
    finish(&sim, &scan, "DENIED").await;
    let again = token(&gw, "u-recheck").await;
    assert_eq!(again.header("x-gateway-dedup"), "leader");
    assert_ne!(scan_ref(&again), scan);
    let seen = sim.counters();
    assert_eq!(seen.tokens_created_for("u-recheck"), 2);
    assert_eq!(seen.requests.get("/api/v2/status"), Some(&2));
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_dedup_rechecks_total{result=\"live\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_dedup_rechecks_total{result=\"over\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_fresh_entry_is_still_replayed_without_asking_idenfy() {
    let (sim, gw) = setup("").await;
    let first = token(&gw, "u-fresh").await;
    finish(&sim, &scan_ref(&first), "APPROVED").await;
    // Within recheck_after (1m) and with no signal, the stored session is replayed.
    let again = token(&gw, "u-fresh").await;
    assert_eq!(again.header("x-gateway-dedup"), "replayed");
    assert_eq!(again.body, first.body);
    let seen = sim.counters();
    assert_eq!(seen.tokens_created_for("u-fresh"), 1);
    assert_eq!(seen.requests.get("/api/v2/status"), None);
}

#[tokio::test]
async fn a_failed_recheck_still_replays() {
    let (sim, gw) = setup("recheck_after = \"0s\"").await;
    let first = token(&gw, "u-down").await;
    let down = send(
        Method::POST,
        &format!("{}/__sim/down", sim.url()),
        &[],
        r#"{"status":503}"#,
    )
    .await;
    assert_eq!(down.status, StatusCode::OK);
    let again = token(&gw, "u-down").await;
    assert_eq!(again.header("x-gateway-dedup"), "replayed");
    assert_eq!(again.body, first.body);
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_dedup_rechecks_total{result=\"failed\"}"
        ),
        1.0
    );
}
