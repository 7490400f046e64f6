//! TLS on the proxy listener, over real sockets: a handshake and a request with HTTP/1.1 (the
//! server's own loop) and with h2 (ALPN, hyper), each reaching the upstream with the account's
//! credentials; mutual TLS identifying a team on both. The loop's behaviour behind TLS is in
//! `tls_listener.rs`.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use support::gateway::{config_text, TestGateway, ACCOUNT_AND_TEAM, UPSTREAM_AUTH};
use support::tls::fixture;
use support::upstream::{MockUpstream, Reply};

/// A TLS connection to the gateway, trusting the fixture certificate, offering `alpn`.
async fn connect(
    gw: &TestGateway,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    connect_as(gw, alpn, false).await
}

/// [`connect`], presenting the fixture client certificate (`payments.internal`) when `client`.
async fn connect_as(
    gw: &TestGateway,
    alpn: &[u8],
    client: bool,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = support::tls::client_config(&[alpn], client);
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

fn status_request(uri: &str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("authorization", "Bearer team-token")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"scanRef":"s-1"}"#)))
        .unwrap()
}

#[tokio::test]
async fn serves_http1_and_h2_over_tls() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let text = config_text(&upstream.url(), ACCOUNT_AND_TEAM).replace(
        "[listen]\n",
        &format!(
            "[listen]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            fixture("localhost.pem"),
            fixture("localhost.key")
        ),
    );
    let gw = TestGateway::start(&text).await;

    // HTTP/1.1
    let tls = connect(&gw, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender
        .send_request(status_request("/api/v2/status"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), br#"{"status":"APPROVED"}"#);

    // h2
    let tls = connect(&gw, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = format!("https://localhost:{}/api/v2/status", gw.addr().port());
    let res = sender.send_request(status_request(&uri)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), http::Version::HTTP_2);

    let received = upstream.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.uri, "/api/v2/status");
        assert_eq!(r.headers["authorization"], UPSTREAM_AUTH);
    }

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = support::http::Client::default()
        .send(
            Request::post(format!("http://{}/api/v2/status", gw.addr()))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(plain.is_err(), "{plain:?}");
    gw.running.shutdown().await;
}

/// One POST /api/v2/status over HTTP/1.1 on `tls`, with `authorization` if given.
async fn status_over(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    authorization: Option<&str>,
) -> StatusCode {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::post("/api/v2/status").body(Full::new(Bytes::from_static(b"{}")));
    if let (Ok(req), Some(auth)) = (req.as_mut(), authorization) {
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    sender.send_request(req.unwrap()).await.unwrap().status()
}

#[tokio::test]
async fn mutual_tls_identifies_a_team_by_its_client_certificate() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let teams =
        "[[account]]\nname = \"main\"\napi_key = \"test-key\"\napi_secret = \"test-secret\"\n\
                 [[team]]\nname = \"payments\"\nclient_cert_san = \"payments.internal\"\n\
                 [[team]]\nname = \"kyc\"\ntoken = \"kyc-token\"\n";
    let text = config_text(&upstream.url(), teams).replace(
        "[listen]\n",
        &format!(
            "[listen]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_client_ca_file = \"{}\"\n",
            fixture("localhost.pem"),
            fixture("localhost.key"),
            fixture("client-ca.pem"),
        ),
    );
    let gw = TestGateway::start(&text).await;

    // The client certificate is the payments team's; a token still identifies its team; with
    // neither, nobody.
    let with_cert = connect_as(&gw, b"http/1.1", true).await;
    assert_eq!(status_over(with_cert, None).await, StatusCode::OK);
    let token_only = connect_as(&gw, b"http/1.1", false).await;
    assert_eq!(
        status_over(token_only, Some("Bearer kyc-token")).await,
        StatusCode::OK
    );
    let neither = connect_as(&gw, b"http/1.1", false).await;
    assert_eq!(status_over(neither, None).await, StatusCode::UNAUTHORIZED);
    // And over h2, hyper's path: the certificate identifies the team there too.
    let h2 = connect_as(&gw, b"h2", true).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = format!("https://localhost:{}/api/v2/status", gw.addr().port());
    let req = Request::post(uri).body(Full::new(Bytes::from_static(b"{}")));
    let res = sender.send_request(req.unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(upstream.received().len(), 3);

    let metrics = gw.metrics().await;
    let requests = |team: &str| {
        let label = format!("team=\"{team}\"");
        metrics
            .lines()
            .filter(|l| l.starts_with("idenfy_gateway_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(
        (requests("payments"), requests("kyc")),
        (2.0, 1.0),
        "{metrics}"
    );
    gw.running.shutdown().await;
}
