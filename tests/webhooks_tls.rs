//! TLS on the webhook listener (`listen.webhook_tls_cert_file`, `listen.webhook_tls_key_file`),
//! over real sockets: a signed webhook posted over TLS is accepted and delivered to its team
//! byte for byte; plain HTTP gets no answer; with `listen.webhook_tls_client_ca_file` a client
//! without a certificate is refused at the handshake and one with a certificate is served.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use idenfy_gateway::webhooks::sign;
use support::gateway::{config_text, TestGateway};
use support::tls::{client_config, connect, fixture};
use support::upstream::MockUpstream;

const ACCOUNT_KEY: &str = "account-hook-key";
const BODY: &str =
    r#"{"final": true, "status":{"overall":"APPROVED"}, "scanRef":"scan-t", "clientId":"c"}"#;

/// A gateway whose webhook listener speaks TLS (mutual when `mutual`), delivering unknown
/// scanRefs to the team behind `team`.
async fn gateway(team: &MockUpstream, dir: &std::path::Path, mutual: bool) -> TestGateway {
    // The pair copied into `dir`, where a test may replace it.
    let (cert, key) = (dir.join("hooks.pem"), dir.join("hooks.key"));
    std::fs::copy(fixture("localhost.pem"), &cert).unwrap();
    std::fs::copy(fixture("localhost.key"), &key).unwrap();
    let mut listen = format!(
        "webhook = \"127.0.0.1:0\"\nwebhook_tls_cert_file = \"{}\"\nwebhook_tls_key_file = \"{}\"\n",
        cert.display(),
        key.display(),
    );
    if mutual {
        listen += &format!(
            "webhook_tls_client_ca_file = \"{}\"\n",
            fixture("client-ca.pem")
        );
    }
    let extra = format!(
        r#"
[[account]]
name = "main"
api_key = "k"
api_secret = "s"
webhook_key = "{ACCOUNT_KEY}"

[[team]]
name = "payments"
token = "team-token"
webhook_url = "{}/hooks"
webhook_key = "team-hook-key"

[webhooks]
dir = "{}"
unknown = "payments"
"#,
        team.url(),
        dir.display()
    );
    let text = config_text("http://127.0.0.1:9", &extra)
        .replace("[listen]\n", &format!("[listen]\n{listen}"));
    TestGateway::start(&text).await
}

/// Posts the signed webhook over a TLS connection made with `config`.
async fn post_over_tls(
    gw: &TestGateway,
    config: rustls::ClientConfig,
) -> hyper::Result<StatusCode> {
    let addr = gw.running.webhook_addr.expect("webhook listener");
    let tls = connect(addr, config, Some(b"http/1.1")).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::post("/webhooks/idenfy/main")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("idenfy-event-type", "IDENTIFICATION")
        .header(
            "idenfy-signature",
            sign(ACCOUNT_KEY.as_bytes(), BODY.as_bytes()),
        )
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    Ok(sender.send_request(req).await?.status())
}

async fn delivered(team: &MockUpstream) {
    tokio::time::timeout(std::time::Duration::from_secs(20), team.wait_for(1))
        .await
        .expect("delivered within 20 s");
    let got = team.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, BODY.as_bytes());
}

#[tokio::test]
async fn a_signed_webhook_over_tls_is_accepted_and_delivered() {
    let team = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&team, dir.path(), false).await;
    let status = post_over_tls(&gw, client_config(&[b"http/1.1"], false)).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    delivered(&team).await;

    // Plain HTTP on the TLS port gets no HTTP answer.
    let addr = gw.running.webhook_addr.unwrap();
    let plain = support::http::Client::default()
        .send(
            Request::post(format!("http://{addr}/webhooks/idenfy/main"))
                .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                .unwrap(),
        )
        .await;
    assert!(plain.is_err(), "{plain:?}");
    gw.running.shutdown().await;
}

#[tokio::test]
async fn with_a_client_ca_the_webhook_listener_requires_a_client_certificate() {
    let team = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&team, dir.path(), true).await;
    // TLS 1.3: the client's handshake ends before the server has checked its (missing)
    // certificate; the refusal comes as an alert on the first exchange.
    let without = post_over_tls(&gw, client_config(&[b"http/1.1"], false)).await;
    assert!(without.is_err(), "{without:?}");
    assert_eq!(team.count(), 0);
    let with = post_over_tls(&gw, client_config(&[b"http/1.1"], true)).await;
    assert_eq!(with.unwrap(), StatusCode::OK);
    delivered(&team).await;
    gw.running.shutdown().await;
}

#[tokio::test]
async fn the_webhook_listener_reads_its_certificate_again_when_the_files_change() {
    let team = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&team, dir.path(), false).await;
    let addr = gw.running.webhook_addr.unwrap();
    let config = std::sync::Arc::new(client_config(&[b"http/1.1"], false));
    let handshake = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
    };
    assert!(handshake().await.is_ok());
    // Another pair (the client fixture's, for payments.internal) renamed over the files: once
    // re-read, the listener presents it, and a client that expects localhost refuses it.
    for (from, to) in [("client.pem", "hooks.pem"), ("client.key", "hooks.key")] {
        let tmp = dir.path().join("next");
        std::fs::copy(fixture(from), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join(to)).unwrap();
    }
    for _ in 0..500 {
        if handshake().await.is_err() {
            gw.running.shutdown().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the webhook listener still presents the old certificate after 10 s");
}
