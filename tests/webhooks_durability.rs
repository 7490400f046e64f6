//! A webhook acknowledged is never lost: the real binary is killed with SIGKILL right after its
//! 200, and the next process delivers it.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use idenfy_gateway::webhooks::sign;
use support::gateway::send;
use support::process::GatewayProcess;
use support::upstream::{refusing_upstream, MockUpstream};

const ACCOUNT_KEY: &str = "account-hook-key";

fn config(receiver: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
webhook = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:9"

[[account]]
name = "main"
api_key = "k"
api_secret = "s"
webhook_key = "{ACCOUNT_KEY}"

[[team]]
name = "payments"
token = "team-token"
webhook_url = "{receiver}/hooks"
webhook_key = "payments-hook-key"

[webhooks]
dir = "{dir}"
retry_base = "10ms"
retry_cap = "50ms"
unknown = "payments"
"#,
        dir = dir.display()
    )
}

#[tokio::test]
async fn a_webhook_acknowledged_before_a_sigkill_is_delivered_after_the_restart() {
    let (down, receiver_url) = refusing_upstream();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, config(&receiver_url, &dir.path().join("state"))).unwrap();

    let mut gw = GatewayProcess::start(&file, &[]);
    let hook = format!(
        "http://{}/webhooks/idenfy/main",
        gw.webhook.expect("webhook listener")
    );
    let body = r#"{"final":true,"status":{"overall":"APPROVED"},"scanRef":"scan-kill"}"#;
    let signature = sign(ACCOUNT_KEY.as_bytes(), body.as_bytes());
    let headers = [
        ("content-type", "application/json"),
        ("idenfy-event-type", "IDENTIFICATION_MANUAL_FINISHED"),
        ("idenfy-signature", signature.as_str()),
    ];
    let ack = send(Method::POST, &hook, &headers, body).await;
    assert_eq!(ack.status, StatusCode::OK);
    // SIGKILL: no shutdown, no flush.
    gw.child.kill().unwrap();
    let status = gw.child.wait().unwrap();
    assert!(!status.success());
    drop(gw);

    let receiver = MockUpstream::start_on(down.listen(64).unwrap());
    let _restarted = GatewayProcess::start(&file, &[]);
    tokio::time::timeout(Duration::from_secs(20), receiver.wait_for(1))
        .await
        .expect("delivered after the restart");
    let got = receiver.received();
    assert_eq!(got[0].body, body.as_bytes());
    assert_eq!(
        got[0].headers["idenfy-event-type"],
        "IDENTIFICATION_MANUAL_FINISHED"
    );
    assert_eq!(
        got[0].headers["idenfy-signature"].to_str().unwrap(),
        sign(b"payments-hook-key", body.as_bytes())
    );
}
