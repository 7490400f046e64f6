//! A raw HTTP/1.1 connection to the gateway, for tests of the listener byte for byte: requests
//! written as text, responses read as they come off the socket.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::gateway::TestGateway;

/// A request with the team's token; `extra` header lines end with `\r\n`.
pub fn request(method: &str, target: &str, extra: &str, body: &str) -> String {
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    format!(
        "{method} {target} HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer team-token\r\n\
         {extra}{length}\r\n{body}"
    )
}

/// A response as read off the socket.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads responses off one connection (plain TCP unless said: TLS in `tests/tls_listener.rs`);
/// `head_only` for the answer to a HEAD request.
pub struct Reader<T = TcpStream> {
    pub stream: T,
    pub buf: BytesMut,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Reader<T> {
    pub fn new(stream: T) -> Self {
        Reader {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn fill(&mut self) {
        let read =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                .await;
        assert!(
            matches!(read, Ok(Ok(n)) if n > 0),
            "connection closed or silent"
        );
    }

    pub async fn response(&mut self, head_only: bool) -> Raw {
        let (status, headers, len) = loop {
            let mut lines = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut lines);
            if let httparse::Status::Complete(len) = res.parse(&self.buf).unwrap() {
                let headers = res
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8(h.value.to_vec()).unwrap();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                break (res.code.unwrap(), headers, len);
            }
            self.fill().await;
        };
        self.buf.advance(len);
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
        };
        let no_body = head_only || status == 204 || status == 304;
        if no_body {
            return raw;
        }
        if raw.header("transfer-encoding") == Some("chunked") {
            raw.body = self.chunked().await;
        } else {
            let n: usize = raw.header("content-length").unwrap().parse().unwrap();
            while self.buf.len() < n {
                self.fill().await;
            }
            raw.body = self.buf.split_to(n).to_vec();
        }
        raw
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            while !self.buf.windows(2).any(|w| w == b"\r\n") {
                self.fill().await;
            }
            let at = self.buf.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..at]).unwrap(), 16);
            let size = size.unwrap();
            while self.buf.len() < at + 2 + size + 2 {
                self.fill().await;
            }
            self.buf.advance(at + 2);
            body.extend_from_slice(&self.buf.split_to(size));
            self.buf.advance(2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Whether the gateway closed the connection (EOF, or a reset) with nothing more to read.
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest)).await;
        self.buf.is_empty() && rest.is_empty() && read.is_ok()
    }
}

pub async fn connect(gw: &TestGateway) -> Reader {
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    Reader::new(stream)
}

/// A new connection on which one `GET /api/v2/status` was answered 200, then left idle.
pub async fn served_once(gw: &TestGateway) -> Reader {
    let mut conn = connect(gw).await;
    let req = request("GET", "/api/v2/status", "", "");
    conn.stream.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(conn.response(false).await.status, 200);
    conn
}

/// `n` connections, each answered once and then left idle, oldest first.
pub async fn idle_connections(gw: &TestGateway, n: usize) -> Vec<Reader> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(served_once(gw).await);
    }
    conns
}
