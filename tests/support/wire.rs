//! A raw HTTP/1.1 client connection for byte-exact tests: writes any bytes, reads responses off
//! the socket (`content-length` or chunked bodies), and tells whether the gateway closed it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for a response or for the connection to close.
const WAIT: Duration = Duration::from_secs(10);

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

/// One client connection.
pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    pub async fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).await.expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        Wire {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("writes");
    }

    /// Reads more; `false` at EOF or on a reset.
    async fn fill(&mut self) -> bool {
        let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await;
        matches!(read.expect("the gateway answers in time"), Ok(n) if n > 0)
    }

    /// The next response, `None` when the connection ends before one.
    pub async fn response(&mut self) -> Option<Raw> {
        let (status, headers, len) = loop {
            let mut lines = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut lines);
            if let httparse::Status::Complete(len) = res.parse(&self.buf).expect("a valid head") {
                let headers = res
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                break (res.code.expect("a status"), headers, len);
            }
            if !self.fill().await {
                return None;
            }
        };
        self.buf.advance(len);
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
        };
        if status != 204 && status != 304 {
            raw.body = self.body(&raw).await?;
        }
        Some(raw)
    }

    async fn body(&mut self, raw: &Raw) -> Option<Vec<u8>> {
        if raw.header("transfer-encoding") == Some("chunked") {
            return self.chunked().await;
        }
        let n: usize = raw.header("content-length")?.parse().expect("a length");
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.split_to(n).to_vec())
    }

    async fn chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            while !self.buf.windows(2).any(|w| w == b"\r\n") {
                if !self.fill().await {
                    return None;
                }
            }
            let at = self.buf.windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&self.buf[..at]).ok()?;
            let size = usize::from_str_radix(size, 16).ok()?;
            while self.buf.len() < at + 2 + size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            self.buf.advance(at + 2);
            body.extend_from_slice(&self.buf.split_to(size));
            self.buf.advance(2);
            if size == 0 {
                return Some(body);
            }
        }
    }

    /// Whether the gateway closed the connection (EOF or a reset) with nothing more to read.
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await;
        let read = read.expect("the gateway closes in time");
        self.buf.is_empty() && rest.is_empty() && (read.is_ok() || is_reset(&read))
    }
}

fn is_reset(read: &std::io::Result<usize>) -> bool {
    matches!(read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}
