//! A raw upstream on `127.0.0.1:0` for what a well-behaved server never does (closing a
//! keep-alive connection, half an answer, a body without a length): each accepted connection is
//! handed to a script, with its index.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The running upstream.
pub struct RawUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

/// One request as the raw upstream read it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The request line, e.g. `POST /api/v2/token HTTP/1.1`.
    pub line: String,
    /// Header lines in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One accepted connection; dropping it closes it.
pub struct RawConn {
    stream: BufReader<TcpStream>,
}

impl RawUpstream {
    /// Runs `script(index, connection)` for each connection accepted, the first being 0.
    pub async fn start<F, Fut>(script: F) -> RawUpstream
    where
        F: Fn(usize, RawConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = count.fetch_add(1, Ordering::SeqCst);
                let stream = BufReader::new(stream);
                tokio::spawn(script(index, RawConn { stream }));
            }
        });
        RawUpstream { addr, connections }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl RawConn {
    /// Reads one request, head and `content-length` body: its request line, `None` at EOF.
    pub async fn request(&mut self) -> Option<String> {
        self.request_with_body().await.map(|(line, _)| line)
    }

    /// Reads one request: its request line and its `content-length` body, `None` at EOF.
    pub async fn request_with_body(&mut self) -> Option<(String, Vec<u8>)> {
        self.read_request().await.map(|r| (r.line, r.body))
    }

    /// Reads one request whole (request line, header lines, `content-length` body), `None` at
    /// EOF or when the connection breaks before the request is complete.
    pub async fn read_request(&mut self) -> Option<RawRequest> {
        let mut first = String::new();
        if self.stream.read_line(&mut first).await.ok()? == 0 {
            return None;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let request = RawRequest {
            line: first.trim_end().to_owned(),
            headers,
            body: Vec::new(),
        };
        let length = request
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(RawRequest { body, ..request })
    }

    /// Waits up to `wait` for the gateway to close the connection: `true` when it did (EOF or
    /// an error), `false` when it is still open then (or sent something).
    pub async fn closed_within(&mut self, wait: std::time::Duration) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(wait, self.stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Answers `200` with `body` and a `content-length`, keeping the connection open.
    pub async fn ok(&mut self, body: &str) {
        self.ok_bytes(body.as_bytes()).await;
    }

    /// [`RawConn::ok`] for a body of any bytes.
    pub async fn ok_bytes(&mut self, body: &[u8]) {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        self.write(&[head.as_bytes(), body].concat()).await;
    }

    /// Answers each request with `200 ok` until the gateway closes the connection.
    pub async fn serve(mut self) {
        while self.request().await.is_some() {
            self.ok("ok").await;
        }
    }
}
