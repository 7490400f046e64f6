//! The proxy listener against callers that misbehave on purpose, over real sockets: heads and
//! bodies sent too slowly (slowloris), more idle connections than `listen.max_connections`,
//! uploads refused from their head, oversized uploads, and a flood of unauthenticated uploads
//! that must not make the gateway hold their bodies.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::gateway::{metric, with_mock_upstream, with_mock_upstream_listen, TestGateway};
use support::wire::{connect, idle_connections, request, served_once};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const MIB: usize = 1024 * 1024;

/// Writes `bytes` one at a time, `every` apart, until the gateway stops taking them.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Everything the gateway sends until it closes (at most 10 s); `None` if it did not close.
async fn until_closed(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn cuts_off_a_head_sent_a_byte_at_a_time() {
    let (upstream, gw) = with_mock_upstream_listen("header_read_timeout = \"300ms\"\n").await;
    let (mut reader, writer) = TcpStream::connect(gw.addr()).await.unwrap().into_split();
    let head = request("GET", "/api/v2/status", &"x-pad: aaaa\r\n".repeat(50), "");
    trickle(writer, head.into_bytes(), Duration::from_millis(20));
    assert!(
        until_closed(&mut reader).await.is_some(),
        "a slow head was not cut off"
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn answers_408_to_a_body_sent_a_byte_at_a_time() {
    let (upstream, gw) = with_mock_upstream_listen("body_read_timeout = \"300ms\"\n").await;
    let (mut reader, mut writer) = TcpStream::connect(gw.addr()).await.unwrap().into_split();
    let body = "x".repeat(200);
    let req = request("POST", "/api/v2/status", "", &body);
    let (head, body) = req.split_at(req.len() - body.len());
    writer.write_all(head.as_bytes()).await.unwrap();
    trickle(writer, body.as_bytes().to_vec(), Duration::from_millis(20));
    let answer = until_closed(&mut reader)
        .await
        .expect("a slow body was not cut off");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("x-gateway-error: body_timeout"), "{answer}");
    assert_eq!(upstream.count(), 0);
}

/// One request on a new connection, answered within 10 s.
async fn a_new_caller_is_served(gw: &TestGateway) {
    served_once(gw).await;
}

#[tokio::test]
async fn serves_a_new_caller_through_a_flood_of_idle_keep_alive_connections() {
    let (_upstream, gw) = with_mock_upstream_listen("max_connections = 16\n").await;
    let _flood = idle_connections(&gw, 48).await;
    a_new_caller_is_served(&gw).await;
}

#[tokio::test]
async fn serves_a_new_caller_through_a_flood_of_connections_that_never_send() {
    let (_upstream, gw) = with_mock_upstream_listen("max_connections = 16\n").await;
    let mut flood = Vec::new();
    for _ in 0..48 {
        flood.push(TcpStream::connect(gw.addr()).await.unwrap());
    }
    a_new_caller_is_served(&gw).await;
}

#[tokio::test]
async fn serves_a_new_caller_through_a_flood_of_refused_keep_alive_connections() {
    let (_upstream, gw) = with_mock_upstream_listen("max_connections = 16\n").await;
    let mut flood = Vec::new();
    for _ in 0..48 {
        let mut conn = connect(&gw).await;
        let req = "GET /api/v2/data HTTP/1.1\r\nhost: x\r\n\r\n";
        conn.stream.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(conn.response(false).await.status, 401);
        flood.push(conn);
    }
    a_new_caller_is_served(&gw).await;
}

#[tokio::test]
async fn refuses_an_upload_from_its_head_before_any_of_its_body_arrives() {
    let (upstream, gw) = with_mock_upstream("").await;
    let unauthenticated =
        "POST /api/v2/status HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n".to_string();
    let unknown_route = request("POST", "/admin/x", "content-length: 1048576\r\n", "");
    let hypers = "POST /api/v2/status HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
                  10\r\n0123456789abcdef\r\n"
        .to_string();
    for (req, status) in [(unauthenticated, 401), (unknown_route, 404), (hypers, 401)] {
        let mut conn = connect(&gw).await;
        conn.stream.write_all(req.as_bytes()).await.unwrap();
        let res = conn.response(false).await;
        assert_eq!(res.status, status, "{req:?}");
        assert_eq!(res.header("connection"), Some("close"), "{req:?}");
    }
    assert_eq!(upstream.count(), 0);
    // Refused, logged and counted by front, like any refusal.
    let metrics = gw.metrics().await;
    let unknown = r#"idenfy_gateway_requests_total{route="unknown",status="4xx",team="unknown"}"#;
    assert_eq!(metric(&metrics, unknown), 2.0, "{metrics}");
}

/// Uploads `head` then `body` beside the read of the answer (as a client that writes first
/// and reads after sends it), and returns what the gateway answered before it closed. Panics
/// when the upload met a reset or a broken pipe.
async fn upload(gw: &TestGateway, head: String, body: Bytes) -> String {
    // A small send buffer, as a client has that writes its body in pieces: loopback's buffers
    // would otherwise take the whole body before the gateway has read the head.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    let (mut reader, mut writer) = socket.connect(gw.addr()).await.unwrap().into_split();
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        writer.shutdown().await
    });
    let answer = until_closed(&mut reader).await.expect("not closed");
    // All of the body was taken: no reset, no broken pipe.
    upload.await.unwrap().expect("the whole upload was taken");
    answer
}

#[tokio::test]
async fn answers_413_to_an_oversized_upload_and_reads_the_rest_every_time() {
    let (upstream, gw) = with_mock_upstream("[limits]\nmax_body = \"1MiB\"\n").await;
    let body = Bytes::from(vec![b'x'; 2 * MIB]);
    let length = format!("content-length: {}\r\n", 2 * MIB);
    for attempt in 0..20 {
        let head = request("POST", "/api/v2/status", &length, "");
        let answer = upload(&gw, head, body.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 413 "), "{attempt}: {answer:?}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn answers_413_to_an_oversized_chunked_upload_on_hypers_path_too() {
    let (upstream, gw) = with_mock_upstream("[limits]\nmax_body = \"1MiB\"\n").await;
    let mut body = format!("{:x}\r\n", 2 * MIB).into_bytes();
    body.extend(vec![b'x'; 2 * MIB]);
    body.extend(b"\r\n0\r\n\r\n");
    let body = Bytes::from(body);
    for attempt in 0..20 {
        let head = request(
            "POST",
            "/api/v2/status",
            "transfer-encoding: chunked\r\n",
            "",
        );
        let answer = upload(&gw, head, body.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 413 "), "{attempt}: {answer:?}");
    }
    assert_eq!(upstream.count(), 0);
}

/// The resident memory of this process (the gateway runs in it), in bytes.
fn resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn holds_no_body_of_a_flood_of_unauthenticated_uploads() {
    let (upstream, gw) = with_mock_upstream("").await;
    let body = Bytes::from(vec![b'x'; MIB]);
    let head = format!("POST /api/v2/status HTTP/1.1\r\nhost: x\r\ncontent-length: {MIB}\r\n\r\n");
    let before = resident();
    let (sent_tx, mut sent) = tokio::sync::mpsc::channel(200);
    let mut uploads = JoinSet::new();
    for _ in 0..200 {
        let (head, body, sent_tx) = (head.clone(), body.clone(), sent_tx.clone());
        let stream = TcpStream::connect(gw.addr()).await.unwrap();
        uploads.spawn(async move {
            let (mut reader, mut writer) = stream.into_split();
            // All of the body but its last byte: a gateway that reads bodies before it
            // identifies the caller is still holding this one.
            writer.write_all(head.as_bytes()).await.unwrap();
            writer.write_all(&body[..MIB - 1]).await.unwrap();
            sent_tx.send(()).await.unwrap();
            let answer = until_closed(&mut reader).await.unwrap_or_default();
            drop(writer);
            answer
        });
    }
    for _ in 0..200 {
        tokio::time::timeout(Duration::from_secs(30), sent.recv())
            .await
            .expect("every upload was taken in");
    }
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "resident memory grew by {} MiB",
        grown / MIB
    );
    while let Some(answer) = uploads.join_next().await {
        assert!(answer.unwrap().starts_with("HTTP/1.1 401 "));
    }
    assert_eq!(upstream.count(), 0);
}
